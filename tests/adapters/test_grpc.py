"""The Open Inference Protocol over gRPC: `modelfn serve --grpc-port` and the container's MODELFN_GRPC_PORT as real
processes, called with `tritonclient.grpc` at its defaults (raw contents), with typed contents and malformed bytes
over a plain grpc channel, and in-process (GrpcThread) where a test needs settings of its own or the service's
observers. Answers are compared with onnxruntime's own on the published files."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import free_port, serve_process, wait_http
from modelfn_tools.publish import publish
from modelfn_tools.serve import build_registry, serve
from onnx import TensorProto, helper, save_model
from protocols.string_models import CITIES, TEXTS, StringModels, as_text, city_rows, publish_string_models
from tritonclient.utils import InferenceServerException

from modelfn.adapters.grpc import oip_pb2 as pb
from modelfn.adapters.grpc import tfs_pb2 as tfs
from modelfn.adapters.grpc.server import GrpcThread
from modelfn.http import create_app
from modelfn.service.dispatch import Service
from modelfn.service.request import Request, Response

ROOT = Path(__file__).resolve().parents[2]
RPC = "/inference.GRPCInferenceService/"
TF_PREDICT = "/tensorflow.serving.PredictionService/Predict"
X = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
N = np.array([1, -7, 2**40], dtype=np.int64)
S = np.array([-128, 0, 127], dtype=np.int8)
B = np.array([True, False, True])
MIX: dict[str, np.ndarray] = {"x": X, "n": N, "s": S, "b": B}
H = np.array([[0.5, -1.25], [3.0, 65504.0 / 4], [1e-3, 7.0]], dtype=np.float16)


def build_mix(path: Path) -> Path:
    """Four datatypes through one model: y = 2x (FP32), m = n + 1 (INT64), t = s (INT8), nb = not b (BOOL)."""
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("Add", ["n", "one"], ["m"]),
            helper.make_node("Identity", ["s"], ["t"]),
            helper.make_node("Not", ["b"], ["nb"]),
        ],
        "mix",
        [
            tensor("x", TensorProto.FLOAT, [None, 4]),
            tensor("n", TensorProto.INT64, [None]),
            tensor("s", TensorProto.INT8, [None]),
            tensor("b", TensorProto.BOOL, [None]),
        ],
        [
            tensor("y", TensorProto.FLOAT, [None, 4]),
            tensor("m", TensorProto.INT64, [None]),
            tensor("t", TensorProto.INT8, [None]),
            tensor("nb", TensorProto.BOOL, [None]),
        ],
        [
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
        ],
    )
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def build_half(path: Path, graph: str = "half") -> Path:
    """FP16, which has no typed contents field: raw contents only. g = h + h."""
    made = helper.make_graph(
        [helper.make_node("Add", ["h", "h"], ["g"])],
        graph,
        [helper.make_tensor_value_info("h", TensorProto.FLOAT16, [None, 2])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT16, [None, 2])],
    )
    save_model(helper.make_model(made, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@dataclass
class Models:
    store: str
    bucket: str
    sessions: dict[str, ort.InferenceSession]
    strings: StringModels

    def answer(self, model: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[model]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))


@pytest.fixture(scope="module")
def models(aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> Models:
    """mix v1 (stable) and a v2 whose artifact is then overwritten (sha256 mismatch: never served), half, echo and
    cities."""
    bucket = f"grpc-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/models"
    work = tmp_path_factory.mktemp("grpc-models")
    mix = build_mix(work / "mix.onnx")
    publish(mix, store, "mix", labels=["stable"], progress=False)
    half = build_half(work / "half.onnx")
    publish(half, store, "half", labels=["stable"], progress=False)
    other = build_half(work / "other.onnx", graph="other")  # bytes of its own: nothing cached stands in for them
    publish(other, store, "mix", progress=False)
    boto3.client("s3").put_object(Bucket=bucket, Key="models/mix/2/model.onnx", Body=b"not the published bytes")
    strings = publish_string_models(store, work)
    cpu = ["CPUExecutionProvider"]
    sessions = {
        "mix": ort.InferenceSession(str(mix), providers=cpu),
        "half": ort.InferenceSession(str(half), providers=cpu),
    }
    return Models(store, bucket, sessions, strings)


@dataclass
class Served:
    base: str
    grpc: str


@pytest.fixture(scope="module")
def served(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`modelfn serve --grpc-port` as a real process (its HTTP API answering means gRPC listens too)."""
    port = free_port()
    with serve_process(["--store", models.store, "--grpc-port", str(port)], tmp_path_factory.mktemp("serve")) as base:
        yield Served(base, f"127.0.0.1:{port}")


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(served.grpc)
    yield c
    c.close()


@contextmanager
def in_process(store: str, **settings: Any) -> Iterator[tuple[str, Service]]:
    """The gRPC server of a service built here (settings of the test's own), on 127.0.0.1:<free port>."""
    app = create_app(build_registry(store, None, **settings))
    server = GrpcThread(app.service, "127.0.0.1", 0)
    port = server.start()
    try:
        yield f"127.0.0.1:{port}", app.service
    finally:
        server.stop(0)


def inputs(**arrays: np.ndarray) -> list[grpcclient.InferInput]:
    datatypes = {
        np.float32: "FP32",
        np.int64: "INT64",
        np.float16: "FP16",
        np.int8: "INT8",
        np.bool_: "BOOL",
        np.object_: "BYTES",
    }
    made = []
    for name, arr in arrays.items():
        inp = grpcclient.InferInput(name, list(arr.shape), datatypes[arr.dtype.type])
        inp.set_data_from_numpy(arr)
        made.append(inp)
    return made


def raw_call(
    url: str, method: str, request: bytes, metadata: tuple[tuple[str, str], ...] = (), method_path: str = ""
) -> bytes:
    """One call on a plain channel, bytes in and out: what no generated client would send."""
    with grpc.insecure_channel(url) as channel:
        answer: bytes = channel.unary_unary(method_path or RPC + method)(request, metadata=metadata, timeout=30)
        return answer


def status_of(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


# ---- health and metadata ------------------------------------------------------------------------------------------


def test_live_ready_and_model_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mix")
    assert client.is_model_ready("mix", "1")
    assert client.is_model_ready("echo")
    assert not client.is_model_ready("missing")  # unknown: not ready, as Triton answers
    assert not client.is_model_ready("mix", "2")  # its artifact fails its sha256 check: never served


def test_server_and_model_metadata_match_http(client: grpcclient.InferenceServerClient, served: Served) -> None:
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "modelfn"
    assert server["version"] == httpx.get(f"{served.base}/v2").json()["version"]
    meta = client.get_model_metadata("mix", as_json=True)
    http = httpx.get(f"{served.base}/v2/models/mix").json()
    assert meta["name"] == "mix"
    assert meta["platform"] == http["platform"] == "onnxruntime_onnx"
    assert meta["versions"] == ["1", "2"]
    for side in ("inputs", "outputs"):  # the JSON form of int64 shapes is strings
        assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in meta[side]] == http[side]
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}


# ---- inference ----------------------------------------------------------------------------------------------------


def assert_same(result: grpcclient.InferResult, expected: dict[str, np.ndarray]) -> None:
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got is not None, name
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        np.testing.assert_array_equal(got, want)  # bit-exact: raw contents both ways


def test_infer_fp32_int64_int8_bool_equal_onnxruntime(client: grpcclient.InferenceServerClient, models: Models) -> None:
    result = client.infer("mix", inputs(**MIX), request_id="req-7")
    assert_same(result, models.answer("mix", MIX))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("mix", "1", "req-7")
    assert [o.datatype for o in response.outputs] == ["FP32", "INT64", "INT8", "BOOL"]


def test_infer_fp16_equal_onnxruntime(client: grpcclient.InferenceServerClient, models: Models) -> None:
    result = client.infer("half", inputs(h=H))
    assert_same(result, models.answer("half", {"h": H}))
    assert result.get_response().outputs[0].datatype == "FP16"


def test_infer_requested_outputs_and_version(client: grpcclient.InferenceServerClient) -> None:
    outputs = [grpcclient.InferRequestedOutput("m")]
    result = client.infer("mix", inputs(**MIX), outputs=outputs, model_version="1")
    assert [o.name for o in result.get_response().outputs] == ["m"]
    np.testing.assert_array_equal(result.as_numpy("m"), N + 1)


def test_infer_bytes_equal_onnxruntime(client: grpcclient.InferenceServerClient, models: Models) -> None:
    echoed = client.infer("echo", inputs(text=np.array([t.encode() for t in TEXTS], dtype=np.object_)))
    same = echoed.as_numpy("same")
    assert same is not None
    assert as_text(same) == TEXTS
    cities = np.array([[c.encode()] for c in CITIES], dtype=np.object_)
    result = client.infer("cities", inputs(city=cities))
    expected = models.strings.run("cities", {"city": city_rows(CITIES)})
    label, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    assert label is not None and probabilities is not None
    assert as_text(label) == expected["label"].tolist()
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)


def typed_request(model: str = "mix", **replaced: dict[str, Any]) -> pb.ModelInferRequest:
    """mix's inputs in typed contents (tritonclient always sends raw ones); `replaced` swaps an input's contents."""
    contents = {
        "x": ("FP32", {"fp32_contents": X.ravel().tolist()}),
        "n": ("INT64", {"int64_contents": N.tolist()}),
        "s": ("INT8", {"int_contents": S.tolist()}),
        "b": ("BOOL", {"bool_contents": B.tolist()}),
    }
    request = pb.ModelInferRequest(model_name=model, id="typed")
    for name, (datatype, values) in contents.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(MIX[name].shape))
        tensor.contents.CopyFrom(pb.InferTensorContents(**replaced.get(name, values)))
    return request


def raw_outputs(answer: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """An answer's raw output contents as arrays (numbers only)."""
    dtypes = {"FP32": np.float32, "INT64": np.int64, "INT8": np.int8, "BOOL": np.bool_}
    return {
        out.name: np.frombuffer(blob, dtype=dtypes[out.datatype]).reshape(list(out.shape))
        for out, blob in zip(answer.outputs, answer.raw_output_contents, strict=True)
    }


def test_typed_contents_equal_onnxruntime(served: Served, models: Models) -> None:
    answer = pb.ModelInferResponse.FromString(raw_call(served.grpc, "ModelInfer", typed_request().SerializeToString()))
    assert answer.id == "typed"
    got = raw_outputs(answer)
    for name, want in models.answer("mix", MIX).items():
        np.testing.assert_array_equal(got[name], want)
    echo = pb.ModelInferRequest(model_name="echo")
    echo.inputs.add(name="text", datatype="BYTES", shape=[len(TEXTS)]).contents.bytes_contents.extend(
        [t.encode() for t in TEXTS]
    )
    answer = pb.ModelInferResponse.FromString(raw_call(served.grpc, "ModelInfer", echo.SerializeToString()))
    (out,) = answer.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("same", "BYTES", [len(TEXTS)])
    blob, decoded, pos = answer.raw_output_contents[0], [], 0
    while pos < len(blob):
        size = int.from_bytes(blob[pos : pos + 4], "little")
        decoded.append(blob[pos + 4 : pos + 4 + size].decode())
        pos += 4 + size
    assert decoded == TEXTS


def test_answer_names_the_version_that_served_it(served: Served) -> None:
    """The `modelfn-version` header of every inference answer, as trailing metadata."""
    with grpc.insecure_channel(served.grpc) as channel:
        _, call = channel.unary_unary(RPC + "ModelInfer").with_call(typed_request().SerializeToString(), timeout=30)
    assert dict(call.trailing_metadata() or ())["modelfn-version"] == "1"


def test_typed_contents_are_checked_like_json(served: Served) -> None:
    """INT8 values travel as int32: one out of range is refused naming the input, never wrapped; FP16 has no typed
    field; values in another datatype's field, or typed contents beside raw ones, are refused."""
    mixed = typed_request()
    mixed.raw_input_contents.extend([b""] * 4)
    fp16 = pb.ModelInferRequest(model_name="half")
    fp16.inputs.add(name="h", datatype="FP16", shape=[1, 2]).contents.fp32_contents.extend([1.0, 2.0])
    for bad, words in (
        (typed_request(s={"int_contents": [1, 300, 2]}), "300"),
        (typed_request(x={"fp64_contents": X.ravel().tolist()}), "fp32_contents"),
        (typed_request(n={"int64_contents": [1, 2]}), "'n'"),
        (fp16, "raw_input_contents"),
        (mixed, "raw_input_contents"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            raw_call(served.grpc, "ModelInfer", bad.SerializeToString())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert words in info.value.details(), info.value.details()


# ---- TF Serving's Predict ----------------------------------------------------------------------------------------


def tf_tensor(arr: np.ndarray, dtype: str, **typed: Any) -> tfs.TensorProto:
    """A TensorProto as TF Serving's clients build it: `tensor_content` unless a typed field is given."""
    proto = tfs.TensorProto(dtype=tfs.DataType.Value(dtype), **typed)
    proto.tensor_shape.dim.extend(tfs.TensorShapeProto.Dim(size=d) for d in arr.shape)
    if not typed:
        proto.tensor_content = arr.tobytes()
    return proto


def tf_array(proto: tfs.TensorProto) -> np.ndarray:
    dtypes = {
        "DT_FLOAT": np.float32,
        "DT_INT64": np.int64,
        "DT_INT8": np.int8,
        "DT_BOOL": np.bool_,
        "DT_HALF": np.float16,
    }
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == tfs.DT_STRING:
        return np.array([s.decode() for s in proto.string_val], dtype=np.object_).reshape(shape)
    return np.frombuffer(proto.tensor_content, dtype=dtypes[tfs.DataType.Name(proto.dtype)]).reshape(shape)


def predict(url: str, request: tfs.PredictRequest) -> tfs.PredictResponse:
    answer = raw_call(url, "", request.SerializeToString(), method_path=TF_PREDICT)
    response: tfs.PredictResponse = tfs.PredictResponse.FromString(answer)
    return response


def mix_predict(**replaced: tfs.TensorProto) -> tfs.PredictRequest:
    request = tfs.PredictRequest()
    request.model_spec.name = "mix"
    request.model_spec.version_label = "stable"
    inputs = {
        "x": tf_tensor(X, "DT_FLOAT"),  # tensor_content
        "n": tf_tensor(N, "DT_INT64", int64_val=N.tolist()),
        "s": tf_tensor(S, "DT_INT8", int_val=S.tolist()),
        "b": tf_tensor(B, "DT_BOOL", bool_val=B.tolist()),
    }
    for name, tensor in {**inputs, **replaced}.items():
        request.inputs[name].CopyFrom(tensor)
    return request


def test_tf_serving_predict_equals_onnxruntime(served: Served, models: Models) -> None:
    answer = predict(served.grpc, mix_predict())
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("mix", 1)
    assert answer.model_spec.signature_name == "serving_default"
    for name, want in models.answer("mix", MIX).items():
        got = tf_array(answer.outputs[name])
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    half = tfs.PredictRequest()
    half.model_spec.name = "half"
    half.model_spec.version.value = 1
    half.inputs["h"].CopyFrom(tf_tensor(H, "DT_HALF", half_val=H.view(np.uint16).ravel().tolist()))
    np.testing.assert_array_equal(
        tf_array(predict(served.grpc, half).outputs["g"]), models.answer("half", {"h": H})["g"]
    )
    cities = tfs.PredictRequest()
    cities.model_spec.name = "cities"
    rows = np.array([[c] for c in CITIES], dtype=np.object_)
    cities.inputs["city"].CopyFrom(tf_tensor(rows, "DT_STRING", string_val=[c.encode() for c in CITIES]))
    cities.output_filter.append("label")
    answer = predict(served.grpc, cities)
    assert list(answer.outputs) == ["label"]
    expected = models.strings.run("cities", {"city": city_rows(CITIES)})
    assert tf_array(answer.outputs["label"]).tolist() == expected["label"].tolist()


def test_tf_serving_predict_errors(served: Served) -> None:
    wrong_signature = mix_predict()
    wrong_signature.model_spec.signature_name = "classify"
    missing = mix_predict()
    missing.model_spec.name = "missing"
    broken = mix_predict()
    broken.model_spec.version.value = 2
    cases = [
        (mix_predict(s=tf_tensor(S, "DT_INT8", int_val=[1, 300, 2])), grpc.StatusCode.INVALID_ARGUMENT, "300"),
        (
            mix_predict(x=tf_tensor(X, "DT_DOUBLE", double_val=X.ravel().tolist())),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FP32",
        ),
        (wrong_signature, grpc.StatusCode.INVALID_ARGUMENT, "classify"),
        (missing, grpc.StatusCode.NOT_FOUND, "missing"),
        (broken, grpc.StatusCode.UNAVAILABLE, "sha256"),
    ]
    for request, code, words in cases:
        with pytest.raises(grpc.RpcError) as info:
            predict(served.grpc, request)
        assert info.value.code() == code, info.value.details()
        assert words in info.value.details(), info.value.details()


# ---- errors -------------------------------------------------------------------------------------------------------


def test_errors_map_to_grpc_status_codes(client: grpcclient.InferenceServerClient) -> None:
    cases = [
        (("missing", inputs(x=X)), {}, "StatusCode.NOT_FOUND", "missing"),
        (("mix", inputs(**MIX)), {"model_version": "2"}, "StatusCode.UNAVAILABLE", "sha256"),
        (("mix", inputs(**{**MIX, "x": X.astype(np.float16)})), {}, "StatusCode.INVALID_ARGUMENT", "FP32"),
        (("mix", inputs(x=X, n=N, s=S)), {}, "StatusCode.INVALID_ARGUMENT", "missing input(s): ['b BOOL"),
        (("mix/versions/1", inputs(x=X)), {}, "StatusCode.INVALID_ARGUMENT", "invalid model name"),
        (("mix", inputs(**MIX)), {"model_version": "1/infer"}, "StatusCode.INVALID_ARGUMENT", "label"),
    ]
    for args, kwargs, code, words in cases:
        with pytest.raises(InferenceServerException) as info:
            client.infer(*args, **kwargs)
        assert status_of(info) == code, (args[0], info.value.message())
        assert words in (info.value.message() or ""), info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("missing")
    assert status_of(info) == "StatusCode.NOT_FOUND"


def test_too_many_elements_is_resource_exhausted(models: Models) -> None:
    with in_process(models.store, max_elements=8) as (url, _):
        c = grpcclient.InferenceServerClient(url)
        with pytest.raises(InferenceServerException) as info:
            c.infer("mix", inputs(**MIX))
        assert status_of(info) == "StatusCode.RESOURCE_EXHAUSTED"
        assert "MODELFN_MAX_ELEMENTS" in (info.value.message() or "")
        c.close()


# ---- auth, observers ----------------------------------------------------------------------------------------------


def test_api_keys_and_rate_limit_from_metadata(models: Models) -> None:
    with in_process(models.store, api_keys="k-one,k-two", rate_limit=1.0) as (url, _):
        c = grpcclient.InferenceServerClient(url)
        assert c.is_server_live()  # public, as /v2/health/live
        with pytest.raises(InferenceServerException) as info:
            c.get_model_metadata("mix")
        assert status_of(info) == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as info:
            c.infer("mix", inputs(**MIX), headers={"authorization": "Bearer wrong"})
        assert status_of(info) == "StatusCode.UNAUTHENTICATED"
        result = c.infer("mix", inputs(**MIX), headers={"authorization": "Bearer k-one"})
        np.testing.assert_array_equal(result.as_numpy("m"), N + 1)
        assert c.get_model_metadata("mix", headers={"x-api-key": "k-two"}).name == "mix"
        # the burst (twice the rate) is spent: the next call is refused with the time to wait
        refused = []
        for _ in range(4):
            try:
                c.get_model_metadata("mix", headers={"x-api-key": "k-two"})
            except InferenceServerException as e:
                refused.append(str(e.status()))
        assert "StatusCode.RESOURCE_EXHAUSTED" in refused
        c.close()
        with pytest.raises(grpc.RpcError) as raw:
            raw_call(url, "ModelMetadata", pb.ModelMetadataRequest(name="mix").SerializeToString())
        trailing = dict(raw.value.trailing_metadata() or ())
        assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert trailing.get("www-authenticate", "").startswith("Bearer")


def test_observers_see_grpc_inference(models: Models) -> None:
    seen: list[tuple[Request, Response]] = []
    with in_process(models.store) as (url, service):
        service.observers.append(lambda request, response, seconds: seen.append((request, response)))
        c = grpcclient.InferenceServerClient(url)
        c.infer("mix", inputs(**MIX), headers={"x-user-id": "u-1"})
        c.close()
    (request, response) = next((q, r) for q, r in seen if r.route == "/v2/models/{name}/infer")
    assert request.headers["x-user-id"] == "u-1"
    assert response.status == 200 and (response.model, response.version) == ("mix", 1)
    assert response.record is not None
    np.testing.assert_array_equal(response.record.inputs["x"], X)
    np.testing.assert_array_equal(response.record.outputs["y"], X * 2)


# ---- robustness ---------------------------------------------------------------------------------------------------


def test_malformed_message_is_invalid_argument_and_server_keeps_answering(
    served: Served, client: grpcclient.InferenceServerClient
) -> None:
    for method in ("ModelInfer", "ModelMetadata", "ServerLive"):
        with pytest.raises(grpc.RpcError) as info:
            raw_call(served.grpc, method, b"\xff\xff\xff\xff\x0f")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        raw_call(served.grpc, "NoSuchMethod", b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert client.is_server_live()
    assert client.infer("mix", inputs(**MIX)).as_numpy("t") is not None


def http2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name: str, value: str) -> bytes:
    """A header as an HPACK literal without indexing, plain (not Huffman) strings, each under 127 bytes."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def test_client_gone_mid_stream_does_not_hurt_the_server(
    served: Served, client: grpcclient.InferenceServerClient
) -> None:
    host, port = served.grpc.split(":")
    headers = b"".join(
        hpack_literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", RPC + "ModelInfer"),
            (":authority", served.grpc),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + http2_frame(0x4, 0, 0, b""))
            s.sendall(http2_frame(0x1, 0x4, 1, headers))  # HEADERS, END_HEADERS
            # a message announced as 1 MB, of which 1 KB arrives before the connection goes away
            s.sendall(http2_frame(0x0, 0, 1, b"\x00" + (1 << 20).to_bytes(4, "big") + b"\x01" * 1024))
    with socket.create_connection((host, int(port)), timeout=10) as s:  # not HTTP/2 at all
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(256))
    # a call the client cancels while it is in flight
    big = np.random.default_rng(0).normal(size=(200_000, 4)).astype(np.float32)
    n, h, s8 = np.ones(200_000, np.int64), np.ones((200_000, 2), np.float16), np.ones(200_000, np.int8)
    pending = []
    for _ in range(3):
        pending.append(client.async_infer("mix", inputs(x=big, n=n, h=h, s=s8), callback=lambda *a: None))
    time.sleep(0.05)
    for call in pending:
        call.cancel()
    assert client.is_server_live()
    result = client.infer("mix", inputs(**MIX))
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


# ---- processes ----------------------------------------------------------------------------------------------------


def test_grpc_port_in_use_is_an_error(models: Models) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        app = create_app(build_registry(models.store, None))
        server = GrpcThread(app.service, "127.0.0.1", held.getsockname()[1])
        with pytest.raises(RuntimeError, match="cannot listen for gRPC"):
            server.start()
        server.stop(0)


def test_serve_grpc_needs_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(None, None, "127.0.0.1", 0, workers=2, grpc_port=free_port()) == 2
    assert "--workers 1" in capsys.readouterr().err


def test_container_serves_grpc_and_stops_on_sigterm(models: Models, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    env = dict(
        os.environ,
        MODELFN_STORE=models.store,
        MODELFN_MODELS="mix",
        MODELFN_HOST="127.0.0.1",
        MODELFN_PORT=str(port),
        MODELFN_GRPC_PORT=str(grpc_port),
        MODELFN_CACHE_DIR=str(tmp_path / "cache"),
    )
    with (tmp_path / "container.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "modelfn.container"], env=env, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/live", timeout=60, proc=proc)
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert c.is_model_ready("mix")
        result = c.infer("mix", inputs(**MIX))
        np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, (tmp_path / "container.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_readme_triton_grpc_snippet_runs_against_make_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Triton gRPC snippet, as written there but for the host, port and model name, against
    `modelfn dev` (what `make demo` runs), whose answer is onnxruntime's on the example iris model."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- snippet: triton-grpc -->\n```python\n(.*?)```", readme, re.DOTALL)
    assert found is not None
    port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "modelfn_tools.cli", "dev", "--port", str(port), "--grpc-port", str(grpc_port)]
    with (tmp_path / "dev.log").open("w") as log:
        proc = subprocess.Popen([*argv, "--workdir", str(tmp_path)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/models/iris/ready", timeout=180, proc=proc)
        code = found.group(1).replace("localhost:8001", f"127.0.0.1:{grpc_port}").replace("my_model", "iris")
        namespace: dict[str, Any] = {"__name__": "snippet_triton_grpc"}
        exec(compile(code, "README.md snippet triton-grpc", "exec"), namespace)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    session = ort.InferenceSession(str(tmp_path / "examples" / "iris.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probabilities"], {"float_input": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)})
    np.testing.assert_allclose(namespace["result"].as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    assert capsys.readouterr().out.strip().startswith("[[")
