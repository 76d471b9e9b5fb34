"""Request-size limits inside the codecs. MODELFN_MAX_ELEMENTS: a request whose tensors declare (v2: `shape`) or
hold (TF Serving, /predict: nested lists) more elements in all than the limit is a 413 naming the count and the
limit, found before numpy allocates anything (tracemalloc sees no tensor-sized peak). JSON depth: a body nested
deeper than orjson reads (1024) is a clear 400 on every path (v2, TF, /predict, SQS, JSON Lines scoring), and
what orjson does accept can never take a later walk into Python's recursion limit: MODELFN_MAX_JSON_DEPTH bounds
every walk over a request's values, and values shown back in errors are shown shallowly."""

from __future__ import annotations

import functools
import json
import logging
import math
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError, PayloadTooLarge
from modelfn.function import ModelFunction
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import read_signature
from modelfn.protocols import plain, tfserving, v2
from modelfn.protocols.sizes import SizeLimits
from modelfn.scoring import score_object
from modelfn.service.request import Request, Response
from modelfn.settings import MAX_ELEMENTS, MAX_JSON_DEPTH, Settings, SettingsError
from modelfn.store import open_store

ONNX = {"FP32": TensorProto.FLOAT, "BYTES": TensorProto.STRING}
HUGE = [2**31, 2**31]
"""4.6e18 elements: a product that wraps int32 and whose tensor no machine holds."""
PEAK = 2 * 1024 * 1024
"""What decoding a refused request may allocate at most (the tensors it refuses would take 64 MiB and more)."""
DEEP = 100_000
"""Levels of nesting past orjson's 1024."""
NESTED = 1000
"""Levels orjson accepts but Python's recursion limit (1000) would not survive, were they walked recursively."""


@functools.cache
def identity(datatype: str, names: tuple[str, ...] = ("x",)) -> LoadedModel:
    """Identity on each of `names` ([-1] of `datatype`), loaded in onnxruntime like any served model."""
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in names]
    graph = helper.make_graph(
        nodes,
        "identity",
        [helper.make_tensor_value_info(n, ONNX[datatype], [None]) for n in names],
        [helper.make_tensor_value_info(f"{n}_out", ONNX[datatype], [None]) for n in names],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs, outputs = read_signature(session)
    return LoadedModel(f"identity-{datatype.lower()}-{len(names)}", 1, session, inputs, outputs)


def nested(levels: int, leaf: Any = 1.0) -> Any:
    """`leaf` inside `levels` lists, built without recursion."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def nested_text(levels: int, leaf: bytes = b"1.0") -> bytes:
    """The JSON text of `nested(levels, leaf)`: orjson writes no more than 255 levels."""
    return b"[" * levels + leaf + b"]" * levels


def deep_object(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def deep_json(levels: int, kind: str) -> bytes:
    """A JSON text nested `levels` deep: arrays `[[[...]]]` or objects `{"a": {"a": ...}}` (never closed past
    orjson's limit: it refuses the document before reaching the end)."""
    return b"[" * levels if kind == "array" else b'{"a":' * levels


def peak_of(decode: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """What `decode` raised (None if nothing) and the peak of what it allocated meanwhile, in bytes."""
    tracemalloc.start()
    try:
        decode()
    except ModelfnError as e:
        return e, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


def v2_json(shape: list[int], data: Any, name: str = "x", datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def v2_binary(inputs: list[tuple[list[int], bytes]], datatype: str = "FP32") -> tuple[bytes, int]:
    """A binary v2 request for `x` (and `y`, ...): the JSON header and the tensors' bytes after it."""
    names = ["x", "y"]
    head = jsonio.dumps(
        {
            "inputs": [
                {"name": names[i], "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(b)}}
                for i, (shape, b) in enumerate(inputs)
            ]
        }
    )
    return head + b"".join(b for _, b in inputs), len(head)


def assert_too_large(error: BaseException | None, count: int, limit: int = MAX_ELEMENTS) -> None:
    assert isinstance(error, PayloadTooLarge), error
    assert error.status == 413
    assert error.message == (
        f"the request's tensors hold {count} elements in all, over the limit of {limit} (MODELFN_MAX_ELEMENTS)"
    )


# ---- MODELFN_MAX_ELEMENTS --------------------------------------------------------------------------------------


def test_the_defaults_are_the_settings_defaults() -> None:
    assert SizeLimits() == SizeLimits.from_settings(Settings())
    assert (
        (SizeLimits().max_elements, SizeLimits().max_json_depth) == (16_777_216, 64) == (MAX_ELEMENTS, MAX_JSON_DEPTH)
    )


@pytest.mark.parametrize("shape", [HUGE, [2**32, 2**32, 2], [MAX_ELEMENTS + 1], [4097, 4096]])
def test_v2_json_declared_shape_over_the_limit_is_413_before_any_allocation(shape: list[int]) -> None:
    model = identity("FP32")
    body = jsonio.dumps({"inputs": [v2_json(shape, [1.0, 2.0])]})
    error, peak = peak_of(lambda: v2.decode_request(body, None, model))
    assert_too_large(error, math.prod(shape))
    assert peak < PEAK


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("shape", [HUGE, [MAX_ELEMENTS + 1]])
def test_v2_binary_declared_shape_over_the_limit_is_413_before_any_allocation(datatype: str, shape: list[int]) -> None:
    body, head = v2_binary([(shape, b"\0" * 16)], datatype)
    error, peak = peak_of(lambda: v2.decode_request(body, head, identity(datatype)))
    assert_too_large(error, math.prod(shape))
    assert peak < PEAK


def test_v2_data_that_matches_a_shape_over_the_limit_is_never_converted() -> None:
    """4097 rows of 4096 (one shared list: the parsed request is small) would be 128 MiB as float64."""
    row = [0.5] * 4096
    req = {"inputs": [v2_json([4097, 4096], [row] * 4097)]}
    error, peak = peak_of(lambda: v2.decode_parsed(req, memoryview(b""), identity("FP32")))
    assert_too_large(error, 4097 * 4096)
    assert peak < PEAK


def test_v2_counts_every_input_together() -> None:
    model, limits = identity("FP32", ("x", "y")), SizeLimits(max_elements=1000)
    at_limit = {"inputs": [v2_json([600], [1.0] * 600), v2_json([400], [2.0] * 400, "y")]}
    decoded = v2.decode_parsed(at_limit, memoryview(b""), model, limits).inputs
    assert (decoded["x"].size, decoded["y"].size) == (600, 400)
    over = {"inputs": [v2_json([600], [1.0] * 600), v2_json([401], [2.0] * 401, "y")]}
    with pytest.raises(PayloadTooLarge) as e:
        v2.decode_parsed(over, memoryview(b""), model, limits)
    assert_too_large(e.value, 1001, 1000)
    body, head = v2_binary([([600], b"\0" * 2400), ([401], b"\0" * 1604)])
    with pytest.raises(PayloadTooLarge) as e:
        v2.decode_request(body, head, model, limits)
    assert_too_large(e.value, 1001, 1000)


def test_v2_binary_bytes_reads_no_more_elements_than_its_shape_declares() -> None:
    """A million empty strings (4 bytes each) under a declared shape of 2: refused after the third, not once a
    million-item list has been built."""
    body, head = v2_binary([([2], b"\0\0\0\0" * 1_000_000)], "BYTES")
    error, peak = peak_of(lambda: v2.decode_request(body, head, identity("BYTES")))
    assert isinstance(error, InvalidInput) and error.status == 400
    assert error.message == "input 'x': the binary data holds more than the 2 elements its shape declares"
    assert peak < PEAK
    exact, head = v2_binary([([2], b"\2\0\0\0hi\0\0\0\0")], "BYTES")
    assert v2.decode_request(exact, head, identity("BYTES")).inputs["x"].tolist() == ["hi", ""]


TF_AND_PLAIN: dict[str, Callable[[Any, SizeLimits], Any]] = {
    "tf-instances": lambda data, limits: tfserving.decode_parsed({"instances": data}, identity("FP32"), limits),
    "tf-inputs": lambda data, limits: tfserving.decode_parsed({"inputs": data}, identity("FP32"), limits),
    "tf-inputs-named": lambda data, limits: tfserving.decode_parsed({"inputs": {"x": data}}, identity("FP32"), limits),
    "tf-named-instances": lambda data, limits: tfserving.decode_parsed(
        {"instances": [{"x": v} for v in data]}, identity("FP32"), limits
    ),
    "predict": lambda data, limits: plain.decode_parsed({"features": data}, identity("FP32"), None, limits),
}


@pytest.mark.parametrize("decode", TF_AND_PLAIN.values(), ids=TF_AND_PLAIN.keys())
def test_tf_and_predict_count_the_nested_lists_before_numpy_sees_them(decode: Callable[[Any, SizeLimits], Any]) -> None:
    limits = SizeLimits(max_elements=1000)
    decode([1.0] * 1000, limits)  # at the limit: served
    with pytest.raises(PayloadTooLarge) as e:
        decode([1.0] * 1001, limits)
    assert_too_large(e.value, 1001, 1000)


@pytest.mark.parametrize("decode", TF_AND_PLAIN.values(), ids=TF_AND_PLAIN.keys())
def test_tf_and_predict_over_the_default_limit_allocate_nothing(decode: Callable[[Any, SizeLimits], Any]) -> None:
    """4097 × 4096 elements as one shared row: a small parsed request whose array would take 128 MiB."""
    row = [0.5] * 4096
    error, peak = peak_of(lambda: decode([row] * 4097, SizeLimits()))
    assert_too_large(error, 4097 * 4096)
    assert peak < PEAK


def test_tf_counts_every_input_together() -> None:
    model, limits = identity("FP32", ("x", "y")), SizeLimits(max_elements=10)
    assert tfserving.decode_parsed({"inputs": {"x": [1.0] * 5, "y": [2.0] * 5}}, model, limits).inputs["y"].size == 5
    for req in ({"inputs": {"x": [1.0] * 5, "y": [2.0] * 6}}, {"instances": [{"x": 1.0, "y": 2.0}] * 6}):
        with pytest.raises(PayloadTooLarge) as e:
            tfserving.decode_parsed(req, model, limits)
        assert_too_large(e.value, 11 if "inputs" in req else 12, 10)


def test_a_preprocess_hooks_tensors_are_counted_too() -> None:
    limits = SizeLimits(max_elements=100)
    big = {"x": np.zeros(101, dtype=np.float32)}
    with pytest.raises(PayloadTooLarge) as e:
        plain.decode_parsed({"features": "anything"}, identity("FP32"), lambda features, m: big, limits)
    assert_too_large(e.value, 101, 100)
    lists: dict[str, Any] = {"x": [1.0] * 101}  # plain lists, which validate_inputs takes as JSON
    with pytest.raises(PayloadTooLarge):
        plain.decode_parsed({"features": "anything"}, identity("FP32"), lambda features, m: lists, limits)


@dataclass
class LambdaContext:
    """What the Lambda runtime hands a handler, as far as Powertools reads it."""

    function_name: str = "modelfn-mlp"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-mlp"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"


@pytest.fixture
def mlp(
    s3_store: str, fresh_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., ModelFunction]:
    """The example mlp (`input` FP32 [-1, 256]) as a Lambda function, settings from the environment as deployed."""
    for name, value in {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)

    def make(**env: str) -> ModelFunction:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        results = fresh_bucket.replace("/models", "/results")
        return ModelFunction(Settings(store=s3_store, model="mlp", results=results, cache_dir=tmp_path / "cache"))

    return make


def post(fn: ModelFunction, path: str, body: bytes) -> Response:
    answer: Response = fn.service.handle(Request("POST", path, "", {"content-type": "application/json"}, body))
    return answer


ROWS = {
    "/v2/models/mlp/infer": lambda n: {"inputs": [v2_json([n, 256], [0.1] * (n * 256), "input")]},
    "/v1/models/mlp:predict": lambda n: {"instances": [[0.1] * 256] * n},
    "/predict": lambda n: {"features": [[0.1] * 256] * n},
}


def test_modelfn_max_elements_is_read_from_the_environment_by_every_route(mlp: Callable[..., ModelFunction]) -> None:
    fn = mlp(MODELFN_MAX_ELEMENTS="512")
    for path, rows in ROWS.items():
        assert post(fn, path, jsonio.dumps(rows(2))).status == 200, path
        answer = post(fn, path, jsonio.dumps(rows(3)))
        assert answer.status == 413, (path, answer.body)
        assert json.loads(answer.body) == {
            "error": "the request's tensors hold 768 elements in all, over the limit of 512 (MODELFN_MAX_ELEMENTS)"
        }


# ---- JSON depth ------------------------------------------------------------------------------------------------


def test_orjson_reads_1024_levels_and_refuses_the_next() -> None:
    value, levels = jsonio.loads(b"[" * 1024 + b"]" * 1024), 0
    while value:  # no == here: comparing 1024 levels exceeds Python's recursion limit
        value, levels = value[0], levels + 1
    assert (value, levels) == ([], 1023)
    for kind in ("array", "object"):
        with pytest.raises(InvalidInput) as e:
            jsonio.loads(deep_json(DEEP, kind), "inference request")
        assert e.value.status == 400
        assert e.value.message.startswith("inference request is nested more than 1024 levels deep, which is not read")


@pytest.mark.parametrize("kind", ["array", "object"])
def test_a_body_nested_past_what_json_reads_is_a_400_on_every_route(
    mlp: Callable[..., ModelFunction], kind: str
) -> None:
    fn = mlp()
    bodies = {
        "/v2/models/mlp/infer": b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ',
        "/v1/models/mlp:predict": b'{"instances": ',
        "/predict": b'{"features": ',
    }
    for path, start in bodies.items():
        for body in (deep_json(DEEP, kind), start + deep_json(DEEP, kind)):
            answer = post(fn, path, body)
            assert answer.status == 400, (path, answer.body[:200])
            assert "is nested more than 1024 levels deep" in json.loads(answer.body)["error"]


WALKED: dict[str, tuple[Callable[[Any], Any], str]] = {
    "v2 data": (
        lambda d: v2.decode_parsed({"inputs": [v2_json([1], d)]}, memoryview(b""), identity("FP32")),
        "input 'x'",
    ),
    "v2 strings": (
        lambda d: v2.decode_parsed({"inputs": [v2_json([1], d, datatype="BYTES")]}, memoryview(b""), identity("BYTES")),
        "input 'x'",
    ),
    "tf instances": (lambda d: tfserving.decode_parsed({"instances": d}, identity("FP32")), "input 'x'"),
    "tf b64 strings": (lambda d: tfserving.decode_parsed({"instances": [d]}, identity("BYTES")), "input 'x'"),
    "tf b64 strings past the first": (
        lambda d: tfserving.decode_parsed({"instances": [{"b64": "aGk="}, d]}, identity("BYTES")),
        "input 'x'",
    ),
    "tf inputs": (lambda d: tfserving.decode_parsed({"inputs": {"x": d}}, identity("FP32")), "input 'x'"),
    "predict": (lambda d: plain.decode_parsed({"features": d}, identity("FP32")), "features"),
    "predict strings": (lambda d: plain.decode_parsed({"features": d}, identity("BYTES")), "features"),
}


@pytest.mark.parametrize(("decode", "where"), WALKED.values(), ids=WALKED.keys())
def test_tensor_data_nested_past_the_depth_limit_is_a_400(decode: Callable[[Any], Any], where: str) -> None:
    with pytest.raises(InvalidInput) as e:
        decode(nested(NESTED, {"b64": "aGk="}))
    assert e.value.message == f"{where}: values nest more than 64 levels deep (MODELFN_MAX_JSON_DEPTH)"


def test_the_depth_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = SizeLimits(max_json_depth=3)
    model = identity("FP32")
    assert v2.decode_parsed({"inputs": [v2_json([1], nested(3))]}, memoryview(b""), model, limits).inputs["x"] == 1
    with pytest.raises(InvalidInput, match=r"values nest more than 3 levels deep \(MODELFN_MAX_JSON_DEPTH\)"):
        v2.decode_parsed({"inputs": [v2_json([1], nested(4))]}, memoryview(b""), model, limits)
    strings = {"instances": [[[{"b64": "aGk="}]], [[[{"b64": "aGk="}]]]]}  # deeper past the first instance
    with pytest.raises(InvalidInput, match="values nest more than 3 levels deep"):
        tfserving.decode_parsed(strings, identity("BYTES"), limits)
    monkeypatch.setenv("MODELFN_MAX_JSON_DEPTH", "8")
    assert SizeLimits.from_settings(Settings()).max_json_depth == 8
    with pytest.raises(SettingsError, match="max_json_depth=513: expected an integer at least 1 and at most 512"):
        Settings(max_json_depth=513)  # a recursive walk stays far from Python's recursion limit


def _v2_with(**fields: Any) -> Any:
    doc = {"inputs": [v2_json([1], [1.0])], **fields}
    return lambda: v2.decode_parsed(doc, memoryview(b""), identity("FP32"))


SHOWN = {
    "v2 shape": (
        lambda: v2.decode_parsed({"inputs": [v2_json(nested(NESTED, 1), [1.0])]}, memoryview(b""), identity("FP32")),
        "input 'x': 'shape' must be a list of non-negative integers, got [[[[...]]]]",
    ),
    "v2 datatype": (
        lambda: v2.decode_parsed(
            {"inputs": [{"name": "x", "datatype": nested(NESTED, "FP32"), "shape": [1], "data": [1.0]}]},
            memoryview(b""),
            identity("FP32"),
        ),
        "input 'x': unknown datatype [[[[...]]]]; expected FP32",
    ),
    "v2 id": (_v2_with(id=nested(NESTED, "a")), "'id' must be a string, got list"),
    "v2 id object": (_v2_with(id={"a": 1}), "'id' must be a string, got dict"),
    "tf id": (
        lambda: tfserving.decode_parsed({"instances": [1.0], "id": nested(NESTED)}, identity("FP32")),
        "'id' must be a string, got list",
    ),
    "tf signature": (
        lambda: tfserving.decode_parsed({"instances": [1.0], "signature_name": nested(NESTED)}, identity("FP32")),
        "signature_name [[[[...]]]] not found; this model has 'serving_default'",
    ),
    "v2 string that is a deep object": (
        lambda: v2.decode_parsed(
            {"inputs": [v2_json([1], [deep_object(NESTED)], datatype="BYTES")]}, memoryview(b""), identity("BYTES")
        ),
        "input 'x': expected BYTES values (strings), got {'a': {'a': {'a': {...}}}} at [0]",
    ),
    "tf string that is a deep object": (
        lambda: tfserving.decode_parsed({"inputs": [deep_object(NESTED)]}, identity("BYTES")),
        "input 'x': expected BYTES values (strings), got {'a': {'a': {'a': {...}}}} at [0]",
    ),
}


@pytest.mark.parametrize(("decode", "message"), SHOWN.values(), ids=SHOWN.keys())
def test_values_shown_back_in_errors_are_shown_shallowly(decode: Callable[[], Any], message: str) -> None:
    """Where a value is named in an error, a value nested 1000 deep (which orjson accepts) is a 400, never a
    RecursionError (repr) or an encoder error (echoing an id), both 500s."""
    with pytest.raises(InvalidInput) as e:
        decode()
    assert e.value.message == message


def test_numbers_and_strings_are_ids() -> None:
    for rid, said in (("a-1", "a-1"), (7, "7"), (None, None)):
        assert _v2_with(id=rid)().id == said
    with pytest.raises(InvalidInput, match="'id' must be a string, got bool"):
        _v2_with(id=True)()
    assert tfserving.decode_parsed({"instances": [1.0], "id": "m-1"}, identity("FP32")).inputs["x"].tolist() == [1.0]


def sqs_record(body: bytes) -> dict[str, Any]:
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body.decode(),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1523232000000"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:modelfn-mlp-requests",
        "awsRegion": "us-east-1",
    }


@pytest.fixture
def failures(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], dict[str, dict[str, Any]]]]:
    """The SQS handler's failure lines by messageId: their `status` and `reason` fields."""
    caplog.set_level(logging.WARNING, logger="modelfn")
    yield lambda: {vars(r)["messageId"]: vars(r) for r in caplog.records if "messageId" in vars(r)}


def test_sqs_messages_nested_too_deeply_fail_alone_with_a_400(
    mlp: Callable[..., ModelFunction], failures: Callable[[], dict[str, dict[str, Any]]]
) -> None:
    fn = mlp()
    row = jsonio.dumps([0.1] * 256)
    good = sqs_record(b'{"instances": [' + row + b'], "id": "fine"}')
    v2_head = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": '
    bad = {
        "is nested more than 1024 levels deep": sqs_record(deep_json(DEEP, "object")),
        "input 'input': values nest more than 64 levels deep": sqs_record(
            b'{"instances": ' + nested_text(NESTED, row) + b"}"
        ),
        "'id' must be a string, got list": sqs_record(
            b'{"instances": [' + row + b'], "id": ' + nested_text(NESTED) + b"}"
        ),
        "input 'input': values nest more than 64": sqs_record(v2_head + nested_text(NESTED) + b"}]}"),
    }
    answer = fn.sqs_handler({"Records": [good, *bad.values()]}, LambdaContext())
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == sorted(
        r["messageId"] for r in bad.values()
    )
    logged = failures()
    for said, record in bad.items():
        assert logged[record["messageId"]]["status"] == 400
        assert said in logged[record["messageId"]]["reason"]


def test_json_lines_nested_too_deeply_are_row_errors(tmp_path: Path) -> None:
    lines = [b'{"x": 1.5}', deep_json(DEEP, "array"), b'{"x": ' + nested_text(NESTED) + b"}", b'{"x": 2.5}']
    store = open_store(str(tmp_path))
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    stats = score_object(identity("FP32"), store, "in.jsonl", store, "out.jsonl")
    assert (stats.rows, stats.scored) == (4, 2)
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["x_out"] for r in scored] == [1.5, 2.5]
    errors_file = (tmp_path / "out.jsonl.errors.jsonl").read_text()
    errors = {e["row"]: e["error"] for e in map(json.loads, errors_file.splitlines())}
    assert sorted(errors) == [2, 3]
    assert "is nested more than 1024 levels deep" in errors[2]
    assert "maximum number of dimension of 64" in errors[3]  # numpy's own bound, read as a row error


def test_the_boolean_search_is_skipped_only_for_a_body_without_a_boolean_token() -> None:
    """`coerce` looks for JSON booleans among numbers unless the raw body cannot hold one; the refusal itself is
    tested through every decoder in test_values.py (those bodies hold `true`)."""
    assert SizeLimits().for_body(b'{"features": [1.0, 2.5]}').may_hold_booleans is False
    assert SizeLimits().for_body(b'{"features": [1.0, true]}').may_hold_booleans is True
    assert SizeLimits().for_body(b'{"instances": [[false, 2]]}').may_hold_booleans is True
    assert SizeLimits().for_body(b"[1]").for_body(b"[true]").may_hold_booleans is True  # decided by the body alone
