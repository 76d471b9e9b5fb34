"""The Open Inference Protocol as NVIDIA's own client speaks it: `tritonclient.http` with its defaults (binary
tensors), with JSON tensors, and its error handling, against `modelfn serve` as a real process. Every result is
compared with onnxruntime's answer for the same input on the same published artifact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import modelfn

MLP_OUTPUTS = ["logits", "probabilities"]
IRIS_OUTPUTS = ["label", "probabilities"]
RANKER_OUTPUTS = ["score", "embedding"]


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=server.removeprefix("http://"), concurrency=4)
    yield c
    c.close()


def make_inputs(feed: dict[str, np.ndarray], binary: bool, datatypes: dict[str, str] | None = None) -> list[Any]:
    """One InferInput per tensor; the datatype follows the array unless overridden (to send a wrong one)."""
    inputs = []
    for name, arr in feed.items():
        dt = (datatypes or {}).get(name) or {np.float32: "FP32", np.int64: "INT64", np.float64: "FP64"}[arr.dtype.type]
        inp = httpclient.InferInput(name, list(arr.shape), dt)
        if binary:
            inp.set_data_from_numpy(arr)  # the client's default: binary tensor data
        else:
            inp.set_data_from_numpy(arr, binary_data=False)
        inputs.append(inp)
    return inputs


def make_outputs(names: list[str], binary: bool) -> list[Any]:
    """Binary is the client's default for requested outputs too; JSON must be asked for."""
    if binary:
        return [httpclient.InferRequestedOutput(n) for n in names]
    return [httpclient.InferRequestedOutput(n, binary_data=False) for n in names]


def served_outputs(result: Any) -> list[str]:
    return [o["name"] for o in result.get_response()["outputs"]]


def infer_error(client: httpclient.InferenceServerClient, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        client.infer(*args, **kwargs)
    return info.value


# ---- health and metadata ------------------------------------------------------------------------------------


def test_server_live_and_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_server_metadata(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "modelfn"
    assert meta["version"] == modelfn.__version__
    assert "binary_tensor_data" in meta["extensions"]


def test_model_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("mlp") is True
    assert client.is_model_ready("mlp", "1") is True
    assert client.is_model_ready("mlp", "2") is True
    assert client.is_model_ready("iris") is True
    assert client.is_model_ready("ranker", "1") is True
    assert client.is_model_ready("mlp", "9") is False
    assert client.is_model_ready("no-such-model") is False


def test_model_metadata_mlp(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("mlp")
    assert meta["name"] == "mlp"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 256]}]
    assert meta["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ]
    assert client.get_model_metadata("mlp", "1")["inputs"] == meta["inputs"]


def test_model_metadata_iris_and_ranker(client: httpclient.InferenceServerClient) -> None:
    iris = client.get_model_metadata("iris")
    assert iris["name"] == "iris"
    assert iris["versions"] == ["1"]
    assert iris["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]
    assert iris["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    ranker = client.get_model_metadata("ranker", "1")
    assert ranker["inputs"] == [
        {"name": "dense", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "item_ids", "datatype": "INT64", "shape": [-1, 3]},
    ]
    assert ranker["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 8]},
    ]


def test_model_metadata_unknown(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown_model:
        client.get_model_metadata("no-such-model")
    assert unknown_model.value.status() == "404"
    assert "no-such-model" in unknown_model.value.message()
    with pytest.raises(InferenceServerException) as unknown_version:
        client.get_model_metadata("mlp", "9")
    assert unknown_version.value.status() == "404"
    assert "9" in unknown_version.value.message()


# ---- inference: binary (the client's default) and JSON tensors -------------------------------------------------

# (model, version asked for, version that must answer)
FP32_CASES = [("mlp", "", 2), ("mlp", "1", 1), ("mlp", "2", 2), ("iris", "", 1), ("iris", "1", 1)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize(("model", "version", "served"), FP32_CASES)
def test_infer_single_input(
    client: httpclient.InferenceServerClient,
    reference: Any,
    model: str,
    version: str,
    served: int,
    batch: int,
    binary: bool,
) -> None:
    name, x, outputs = (
        ("input", reference.mlp_rows(batch, seed=batch), MLP_OUTPUTS)
        if model == "mlp"
        else ("float_input", reference.iris_rows(batch, seed=batch), IRIS_OUTPUTS)
    )
    result = client.infer(
        model,
        make_inputs({name: x}, binary),
        model_version=version,
        outputs=make_outputs(outputs, binary),
        request_id=f"req-{model}-{batch}",
    )
    response = result.get_response()
    assert response["model_name"] == model
    assert response["model_version"] == str(served)
    assert response["id"] == f"req-{model}-{batch}"
    assert served_outputs(result) == outputs
    for out in response["outputs"]:
        # JSON outputs carry `data`; binary ones only their size in parameters.
        assert ("data" in out) is not binary
        assert ("binary_data_size" in out.get("parameters", {})) is binary
    expected = reference.run(model, served, {name: x})
    for out in outputs:
        reference.assert_same(result.as_numpy(out), expected[out], same_dtype=True)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("batch", [1, 5])
def test_infer_ranker_fp32_and_int64_inputs(
    client: httpclient.InferenceServerClient, reference: Any, batch: int, binary: bool
) -> None:
    feed = reference.ranker_feed(batch, seed=10 + batch)
    result = client.infer("ranker", make_inputs(feed, binary), outputs=make_outputs(RANKER_OUTPUTS, binary))
    assert result.get_response()["model_version"] == "1"
    expected = reference.run("ranker", 1, feed)
    for out in RANKER_OUTPUTS:
        reference.assert_same(result.as_numpy(out), expected[out], same_dtype=True)


@pytest.mark.parametrize("binary_inputs", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(
    ("model", "version", "outputs"),
    [("mlp", "2", MLP_OUTPUTS), ("iris", "1", IRIS_OUTPUTS), ("ranker", "1", RANKER_OUTPUTS)],
)
def test_infer_without_requested_outputs_returns_all_as_binary(
    client: httpclient.InferenceServerClient,
    reference: Any,
    model: str,
    version: str,
    outputs: list[str],
    binary_inputs: bool,
) -> None:
    feed = {
        "mlp": {"input": reference.mlp_rows(3, seed=3)},
        "iris": {"float_input": reference.iris_rows(3, seed=3)},
        "ranker": reference.ranker_feed(3, seed=3),
    }[model]
    result = client.infer(model, make_inputs(feed, binary_inputs))  # no outputs: tritonclient asks for all, binary
    assert served_outputs(result) == outputs
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    expected = reference.run(model, int(version), feed)
    for out in outputs:
        reference.assert_same(result.as_numpy(out), expected[out], same_dtype=True)


def test_infer_one_requested_output_and_mixed_encodings(
    client: httpclient.InferenceServerClient, reference: Any
) -> None:
    x = reference.iris_rows(4, seed=4)
    expected = reference.run("iris", 1, {"float_input": x})

    only = client.infer("iris", make_inputs({"float_input": x}, True), outputs=make_outputs(["probabilities"], True))
    assert served_outputs(only) == ["probabilities"]
    assert only.as_numpy("label") is None
    reference.assert_same(only.as_numpy("probabilities"), expected["probabilities"], same_dtype=True)

    mixed = client.infer(
        "iris",
        make_inputs({"float_input": x}, False),
        outputs=[
            httpclient.InferRequestedOutput("label", binary_data=False),
            httpclient.InferRequestedOutput("probabilities", binary_data=True),
        ],
    )
    label, probs = mixed.get_response()["outputs"]
    assert label["data"] == expected["label"].tolist()
    assert probs["parameters"]["binary_data_size"] == expected["probabilities"].nbytes
    reference.assert_same(mixed.as_numpy("label"), expected["label"], same_dtype=True)
    reference.assert_same(mixed.as_numpy("probabilities"), expected["probabilities"], same_dtype=True)


def test_default_label_serves_the_int8_version(client: httpclient.InferenceServerClient, reference: Any) -> None:
    """The stable label points at v2 (int8): its answers are the int8 model's, measurably not the fp32 one's."""
    x = reference.mlp_rows(8, seed=8)
    result = client.infer("mlp", make_inputs({"input": x}, True), outputs=make_outputs(MLP_OUTPUTS, True))
    logits = result.as_numpy("logits")
    reference.assert_same(logits, reference.run("mlp", 2, {"input": x})["logits"], same_dtype=True)
    fp32 = reference.run("mlp", 1, {"input": x})["logits"]
    assert np.abs(logits - fp32).max() > 1e-3  # the check above could not have passed with the fp32 model


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_infer_with_request_compression(
    client: httpclient.InferenceServerClient, reference: Any, algorithm: str
) -> None:
    feed = reference.ranker_feed(4, seed=21)
    result = client.infer(
        "ranker",
        make_inputs(feed, True),
        outputs=make_outputs(RANKER_OUTPUTS, True),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    expected = reference.run("ranker", 1, feed)
    for out in RANKER_OUTPUTS:
        reference.assert_same(result.as_numpy(out), expected[out], same_dtype=True)


def test_async_infer_concurrent_requests(client: httpclient.InferenceServerClient, reference: Any) -> None:
    batches = [reference.mlp_rows(i + 1, seed=100 + i) for i in range(6)]
    pending = [
        client.async_infer(
            "mlp", make_inputs({"input": x}, True), model_version="1", outputs=make_outputs(MLP_OUTPUTS, True)
        )
        for x in batches
    ]
    for x, handle in zip(batches, pending, strict=True):
        got = handle.get_result().as_numpy("probabilities")
        reference.assert_same(got, reference.run("mlp", 1, {"input": x})["probabilities"], same_dtype=True)


# ---- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_wrong_datatype_is_400_naming_the_expected_one(client: httpclient.InferenceServerClient, binary: bool) -> None:
    x64 = np.zeros((1, 256), dtype=np.float64)
    err = infer_error(client, "mlp", make_inputs({"input": x64}, binary))
    assert err.status() == "400"
    assert "FP64" in err.message()
    assert "FP32" in err.message()

    feed = {"dense": np.zeros((1, 4), np.float32), "item_ids": np.zeros((1, 3), np.int32)}
    inputs = [httpclient.InferInput("dense", [1, 4], "FP32"), httpclient.InferInput("item_ids", [1, 3], "INT32")]
    for inp, arr in zip(inputs, feed.values(), strict=True):
        inp.set_data_from_numpy(arr, binary_data=binary)
    err = infer_error(client, "ranker", inputs)
    assert err.status() == "400"
    assert "item_ids" in err.message()
    assert "INT64" in err.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_wrong_shape_is_400_naming_the_expected_one(client: httpclient.InferenceServerClient, binary: bool) -> None:
    err = infer_error(client, "mlp", make_inputs({"input": np.zeros((2, 255), np.float32)}, binary))
    assert err.status() == "400"
    assert "'input'" in err.message()
    assert "[2, 255]" in err.message()
    assert "[-1, 256]" in err.message()

    err = infer_error(client, "iris", make_inputs({"float_input": np.zeros((4,), np.float32)}, binary))
    assert err.status() == "400"
    assert "[-1, 4]" in err.message()


def test_ranker_batch_mismatch_and_missing_input_are_400(client: httpclient.InferenceServerClient) -> None:
    feed: dict[str, np.ndarray] = {"dense": np.zeros((2, 4), np.float32), "item_ids": np.zeros((3, 3), np.int64)}
    err = infer_error(client, "ranker", make_inputs(feed, True))
    assert err.status() == "400"
    assert "batch" in err.message()

    err = infer_error(client, "ranker", make_inputs({"dense": feed["dense"]}, True))
    assert err.status() == "400"
    assert "item_ids" in err.message()
    assert "INT64" in err.message()


def test_unknown_input_and_output_names_are_400(client: httpclient.InferenceServerClient) -> None:
    err = infer_error(client, "mlp", make_inputs({"pixels": np.zeros((1, 256), np.float32)}, True))
    assert err.status() == "400"
    assert "pixels" in err.message()
    assert "input FP32[-1, 256]" in err.message()

    err = infer_error(
        client,
        "mlp",
        make_inputs({"input": np.zeros((1, 256), np.float32)}, True),
        outputs=make_outputs(["nope"], True),
    )
    assert err.status() == "400"
    assert "nope" in err.message()
    assert "logits" in err.message()


def test_unknown_model_and_version_are_404(client: httpclient.InferenceServerClient) -> None:
    inputs = make_inputs({"input": np.zeros((1, 256), np.float32)}, True)
    err = infer_error(client, "no-such-model", inputs)
    assert err.status() == "404"
    assert "no-such-model" in err.message()
    err = infer_error(client, "mlp", inputs, model_version="9")
    assert err.status() == "404"
    assert "version 9" in err.message()
