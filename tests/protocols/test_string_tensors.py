"""String (BYTES) tensors through the codecs and the model, without a transport: v2 JSON (UTF-8 strings), v2 binary
(4-byte little-endian length, then the bytes), TF Serving REST (strings and {"b64": ...}) and /predict. Inputs reach
onnxruntime as `str` (bytes would arrive as the text "b'paris'"), answers equal onnxruntime's own, string outputs
leave as strings, and what cannot be text is refused with a 400 naming the input."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from protocols.string_models import CITIES, TEXTS, build_cities, build_echo, city_rows

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import read_signature
from modelfn.protocols import plain, tfserving, v2


def _load(path: Path, name: str) -> LoadedModel:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = read_signature(session)
    return LoadedModel(name, 1, session, inputs, outputs)


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return _load(build_echo(tmp_path_factory.mktemp("echo") / "echo.onnx"), "echo")


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return _load(build_cities(tmp_path_factory.mktemp("cities") / "cities.onnx"), "cities")


def ort_answer(model: LoadedModel, feed: dict[str, Any]) -> dict[str, np.ndarray]:
    names = model.output_names
    arrays = {k: np.asarray(v, dtype=np.object_) for k, v in feed.items()}
    return dict(zip(names, model.session.run(names, arrays), strict=True))


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def v2_json(name: str, data: Any, shape: list[int]) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": "BYTES", "shape": shape, "data": data}]}).encode()


def v2_binary(name: str, blob: bytes, shape: list[int], outputs: list[str] | None = None) -> tuple[bytes, int]:
    doc: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": len(blob)}}]
    }
    if outputs:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    head = json.dumps(doc).encode()
    return head + blob, len(head)


def test_cities_model_tells_mangled_strings_apart(cities: LoadedModel) -> None:
    """The check the tests below rely on: onnxruntime scores str() of bytes as an unknown category."""
    right = ort_answer(cities, {"city": city_rows(CITIES)})
    mangled = ort_answer(cities, {"city": [[c.encode()] for c in CITIES]})
    assert right["label"].tolist() == ["eu", "eu", "asia", "none", "eu", "asia"]
    assert mangled["label"].tolist() != right["label"].tolist()


def test_v2_json_strings_in_and_out(echo: LoadedModel) -> None:
    req = v2.decode_request(v2_json("text", TEXTS, [len(TEXTS)]), None, echo)
    assert [type(x) for x in req.inputs["text"].tolist()] == [str] * len(TEXTS)
    results = echo.predict(req.inputs)
    body, json_len = v2.encode_response(echo, results, set(), None)
    assert json_len is None
    (out,) = json.loads(body)["outputs"]
    assert out == {"name": "same", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}


def test_v2_json_categorical_model_equals_onnxruntime(cities: LoadedModel) -> None:
    req = v2.decode_request(v2_json("city", CITIES, [len(CITIES), 1]), None, cities)
    body, _ = v2.encode_response(cities, cities.predict(req.inputs), set(), "r1")
    outs = {o["name"]: o for o in json.loads(body)["outputs"]}
    expected = ort_answer(cities, {"city": city_rows(CITIES)})
    assert outs["label"]["datatype"] == "BYTES"
    assert outs["label"]["data"] == expected["label"].tolist()
    np.testing.assert_allclose(np.reshape(outs["probabilities"]["data"], (len(CITIES), 3)), expected["probabilities"])


def test_v2_binary_strings_in_and_out(echo: LoadedModel) -> None:
    blob = length_prefixed([t.encode() for t in TEXTS])
    body, head_len = v2_binary("text", blob, [len(TEXTS)], outputs=["same"])
    req = v2.decode_request(body, head_len, echo)
    assert req.inputs["text"].tolist() == TEXTS
    content, json_len = v2.encode_response(echo, echo.predict(req.inputs), req.binary_outputs, None)
    assert json_len is not None
    (out,) = json.loads(content[:json_len])["outputs"]
    assert out["parameters"]["binary_data_size"] == len(blob)
    assert content[json_len:] == blob  # UTF-8 bytes, each after its 4-byte little-endian length


def test_v2_binary_categorical_model_equals_onnxruntime(cities: LoadedModel) -> None:
    body, head_len = v2_binary("city", length_prefixed([c.encode() for c in CITIES]), [len(CITIES), 1])
    req = v2.decode_request(body, head_len, cities)
    assert (
        cities.predict(req.inputs)["label"].tolist()
        == ort_answer(cities, {"city": city_rows(CITIES)})["label"].tolist()
    )


@pytest.mark.parametrize("bad", [b"\xff", b"caf\xe9", b"\xed\xa0\x80"])  # invalid byte, Latin-1, a UTF-16 surrogate
def test_v2_binary_bytes_that_are_not_utf8_are_refused(echo: LoadedModel, bad: bytes) -> None:
    body, head_len = v2_binary("text", length_prefixed([b"ok", bad]), [2])
    with pytest.raises(InvalidInput) as e:
        v2.decode_request(body, head_len, echo)
    assert e.value.status == 400
    assert e.value.message.startswith("input 'text' element 1: bytes are not UTF-8 text")


def test_tf_rows_and_columns_plain_and_b64(cities: LoadedModel, echo: LoadedModel) -> None:
    b64 = [{"b64": base64.b64encode(c.encode()).decode()} for c in CITIES]
    expected = ort_answer(cities, {"city": city_rows(CITIES)})
    for instances in (
        city_rows(CITIES),
        [[b] for b in b64],
        [[b64[i]] if i % 2 else [c] for i, c in enumerate(CITIES)],
    ):
        req = tfserving.decode_request(json.dumps({"instances": instances}).encode(), cities)
        answer = json.loads(jsonio.dumps(tfserving.encode_response(cities.predict(req.inputs), req.row_format)))
        assert [p["label"] for p in answer["predictions"]] == expected["label"].tolist()
        np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], expected["probabilities"])
    req = tfserving.decode_request(
        json.dumps({"inputs": {"text": [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]}}).encode(), echo
    )
    answer = json.loads(jsonio.dumps(tfserving.encode_response(echo.predict(req.inputs), req.row_format)))
    assert answer == {"outputs": TEXTS}
    req = tfserving.decode_request(json.dumps({"instances": TEXTS}).encode(), echo)
    assert json.loads(jsonio.dumps(tfserving.encode_response(echo.predict(req.inputs), True))) == {"predictions": TEXTS}


def test_tf_b64_that_is_not_utf8_is_refused(echo: LoadedModel) -> None:
    body = json.dumps({"instances": ["ok", {"b64": base64.b64encode(b"\xffabc").decode()}]}).encode()
    with pytest.raises(InvalidInput, match=r"^input 'text' element \[1\]: bytes are not UTF-8 text"):
        tfserving.decode_request(body, echo)
    with pytest.raises(InvalidInput, match=r"^input 'text': invalid base64 value"):
        tfserving.decode_request(json.dumps({"instances": [{"b64": "not base64!"}]}).encode(), echo)


def test_predict_strings_in_and_out(echo: LoadedModel, cities: LoadedModel) -> None:
    inputs = plain.decode_request(json.dumps({"features": TEXTS}).encode(), echo)
    answer = json.loads(jsonio.dumps(plain.encode_response(echo.predict(inputs), echo)))
    assert answer == {"predictions": [{"same": t} for t in TEXTS]}
    one = plain.decode_request(json.dumps({"features": ["東京"]}).encode(), cities)  # one row, no batch dimension
    expected = ort_answer(cities, {"city": [["東京"]]})
    answer = json.loads(jsonio.dumps(plain.encode_response(cities.predict(one), cities)))
    assert answer["predictions"][0]["label"] == expected["label"][0] == "asia"


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        (
            [["paris"], ["lyon", "osaka"]],
            [2, 1],
            "input 'city': expected BYTES values (strings), got a list (the data is ragged) at [0]",
        ),
        ([["paris"], [3]], [2, 1], "input 'city': expected BYTES values (strings), got 3 at [1, 0]"),
        ([["paris"], [None]], [2, 1], "input 'city': expected BYTES values (strings), got None at [1, 0]"),
        (
            [["paris"], [{"b64": "cGFyaXM="}]],
            [2, 1],
            "input 'city': expected BYTES values (strings), got {'b64': 'cGFyaXM='} at [1, 0]",
        ),
    ],
)
def test_v2_json_data_that_is_not_strings_is_refused(
    cities: LoadedModel, data: Any, shape: list[int], message: str
) -> None:
    with pytest.raises(InvalidInput) as e:
        v2.decode_request(v2_json("city", data, shape), None, cities)
    assert e.value.status == 400
    assert e.value.message == message


def test_tf_ragged_strings_are_refused(cities: LoadedModel) -> None:
    with pytest.raises(
        InvalidInput, match=r"^input 'city': expected BYTES values \(strings\), got a list \(the data is ragged\)"
    ):
        tfserving.decode_request(json.dumps({"instances": [["paris"], ["lyon", "osaka"]]}).encode(), cities)


def test_hook_strings_become_text_and_surrogates_are_refused(echo: LoadedModel) -> None:
    """A preprocess hook may hand bytes or numpy strings; both reach onnxruntime as str. A str that UTF-8 cannot
    hold (a lone surrogate) is a 400, not an encoder error."""
    for arr in (
        np.array([t.encode() for t in TEXTS], dtype=np.object_),
        np.array(TEXTS),
        np.array([t.encode() for t in TEXTS]),
    ):
        assert echo.predict({"text": arr})["same"].tolist() == TEXTS
    with pytest.raises(InvalidInput) as e:
        echo.predict({"text": np.array(["ok", "\udcff"], dtype=np.object_)})
    assert e.value.status == 400
    assert "string input(s) ['text']" in e.value.message
