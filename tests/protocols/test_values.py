"""A value that does not fit its tensor's datatype (out of range, a boolean for a number, a number for a boolean, a
fraction for an integer, a float that overflows to infinity) is refused with a 400 that names the value and its
position, through every JSON decoder: v2, TF Serving `instances` and `inputs`, and /predict. Nothing is wrapped
(UINT8 300 is not 44), rounded or turned into infinity; values that do fit arrive exactly."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import read_signature
from modelfn.protocols import plain, tfserving, v2
from modelfn.protocols.sizes import SizeLimits

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
}


@functools.cache
def typed_model(datatype: str) -> LoadedModel:
    """Identity on one input `x` [-1] of `datatype`, loaded in onnxruntime like any served model."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("x", ONNX_TYPES[datatype], [None])],
        [helper.make_tensor_value_info("y", ONNX_TYPES[datatype], [None])],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs, outputs = read_signature(session)
    return LoadedModel(f"typed-{datatype.lower()}", 1, session, inputs, outputs)


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def via_v2(model: LoadedModel, values: list[Any]) -> np.ndarray:
    tensor = {"name": "x", "datatype": model.inputs[0].datatype, "shape": [len(values)], "data": values}
    return v2.decode_request(_body({"inputs": [tensor]}), None, model).inputs["x"]


def via_tf_instances(model: LoadedModel, values: list[Any]) -> np.ndarray:
    return tfserving.decode_request(_body({"instances": values}), model).inputs["x"]


def via_tf_named_instances(model: LoadedModel, values: list[Any]) -> np.ndarray:
    return tfserving.decode_request(_body({"instances": [{"x": v} for v in values]}), model).inputs["x"]


def via_tf_inputs(model: LoadedModel, values: list[Any]) -> np.ndarray:
    return tfserving.decode_request(_body({"inputs": {"x": values}}), model).inputs["x"]


def via_predict(model: LoadedModel, values: list[Any]) -> np.ndarray:
    return plain.decode_request(_body({"features": values}), model)["x"]


DECODERS: dict[str, tuple[Callable[[LoadedModel, list[Any]], np.ndarray], str]] = {
    "v2": (via_v2, "input 'x'"),
    "tf-instances": (via_tf_instances, "input 'x'"),
    "tf-named-instances": (via_tf_named_instances, "input 'x'"),
    "tf-inputs": (via_tf_inputs, "input 'x'"),
    "predict": (via_predict, "features"),
}

# (datatype, the value that does not fit, how the message shows it, why)
REFUSED = [
    ("UINT8", 256, "256", "out of range 0..255"),
    ("UINT8", 300, "300", "out of range 0..255"),
    ("UINT8", -1, "-1", "out of range 0..255"),
    ("INT8", 128, "128", "out of range -128..127"),
    ("INT32", 2**31, "2147483648", "out of range -2147483648..2147483647"),
    ("INT32", -(2**31) - 1, "-2147483649", "out of range -2147483648..2147483647"),
    ("INT64", 2**63, "9223372036854775808", "out of range -9223372036854775808..9223372036854775807"),
    ("INT64", 1e19, "1e+19", "out of range -9223372036854775808..9223372036854775807"),
    ("UINT64", -1, "-1", "out of range 0..18446744073709551615"),
    ("FP16", 70000, "70000", "overflows FP16, whose largest is 65504"),
    ("FP16", 65520.0, "65520.0", "overflows FP16, whose largest is 65504"),  # rounds up past 65504: infinity
    ("FP32", 1e39, "1e+39", "overflows FP32, whose largest is 3.40282e+38"),
    ("FP32", -1e39, "-1e+39", "overflows FP32, whose largest is 3.40282e+38"),
    ("FP32", True, "true", "a boolean"),
    ("FP64", False, "false", "a boolean"),
    ("INT64", True, "true", "a boolean"),
    ("UINT8", False, "false", "a boolean"),
    ("BOOL", 1, "1", "BOOL takes true or false"),
    ("BOOL", 0.0, "0.0", "BOOL takes true or false"),
    ("INT64", 1.5, "1.5", "not a whole number"),
    ("INT32", -2.25, "-2.25", "not a whole number"),
]

# (datatype, a value that fits, what the tensor holds)
ACCEPTED = [
    ("UINT8", 255, 255),
    ("UINT8", 0, 0),
    ("INT8", -128, -128),
    ("INT32", 2**31 - 1, 2**31 - 1),
    ("INT64", 2**63 - 1, 2**63 - 1),
    ("INT64", -(2**63), -(2**63)),
    ("INT64", 2.0, 2),
    ("UINT64", 2**64 - 1, 2**64 - 1),
    ("FP16", 65504, 65504.0),
    ("FP32", 3.4028234663852886e38, 3.4028234663852886e38),
    ("FP32", 7, 7.0),
    ("FP64", 1e300, 1e300),
    ("BOOL", True, True),
]


def _filler(datatype: str) -> Any:
    return False if datatype == "BOOL" else 2


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("datatype", "value", "shown", "why"), REFUSED)
def test_value_that_does_not_fit_is_refused_by_name(
    decoder: str, datatype: str, value: Any, shown: str, why: str
) -> None:
    decode, label = DECODERS[decoder]
    filler = _filler(datatype)
    with pytest.raises(InvalidInput) as e:
        decode(typed_model(datatype), [filler, filler, value, filler])
    assert e.value.status == 400
    assert e.value.message == f"{label}: expected {datatype} values, got {shown} at [2] ({why})"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("datatype", "value", "held"), ACCEPTED)
def test_value_that_fits_arrives_exactly(decoder: str, datatype: str, value: Any, held: Any) -> None:
    model = typed_model(datatype)
    filler = _filler(datatype)
    arr = DECODERS[decoder][0](model, [filler, value])
    assert arr.dtype == model.inputs[0].dtype
    assert arr.tolist() == [filler, held]
    assert model.predict({"x": arr})["y"].tolist() == [filler, held]


def test_json_integers_past_2_53_among_floats_are_not_rounded() -> None:
    """numpy reads [2**53 + 1, 1.0] as float64 (rounding to 2**53); the integers are taken exactly instead."""
    arr = via_v2(typed_model("INT64"), [2**53 + 1, 1.0, -(2**62) - 1])
    assert arr.tolist() == [2**53 + 1, 1, -(2**62) - 1]


@pytest.mark.parametrize("datatype", [["FP32"], {"t": "FP32"}, None, 32])
def test_v2_datatype_that_is_not_a_name(datatype: Any) -> None:
    body = _body({"inputs": [{"name": "x", "datatype": datatype, "shape": [1], "data": [1.0]}]})
    with pytest.raises(InvalidInput) as e:
        v2.decode_request(body, None, typed_model("FP32"))
    assert e.value.message == f"input 'x': unknown datatype {datatype!r}; expected FP32"


UNBOUNDED = SizeLimits(max_elements=2**100)
"""Past MODELFN_MAX_ELEMENTS these shapes are a 413 (test_limits.py); without that bound, still counted exactly."""


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        ([2**40, 2**40], "needs 1208925819614629174706176 elements, got 4"),
        ([2**32, 2**32, 2], "needs 36893488147419103232 elements, got 4"),  # 2**65: wraps to 0 in int64
    ],
)
def test_v2_shape_whose_product_passes_int64(shape: list[int], said: str) -> None:
    model = typed_model("FP32")
    body = _body({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": [1.0, 2.0, 3.0, 4.0]}]})
    with pytest.raises(InvalidInput) as e:
        v2.decode_request(body, None, model, UNBOUNDED)
    assert e.value.message == f"input 'x': shape {shape} {said}"


@pytest.mark.parametrize("shape", [[2**40, 2**40], [2**32, 2**32, 2], [0, 2**62]])
def test_v2_binary_shape_whose_product_passes_int64(shape: list[int]) -> None:
    data = b"" if 0 in shape else np.ones(4, dtype=np.float32).tobytes()
    head = _body(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(data)}}]}
    )
    with pytest.raises(InvalidInput) as e:
        v2.decode_request(head + data, len(head), typed_model("FP32"), UNBOUNDED)
    assert e.value.status == 400
    assert e.value.message.startswith(f"input 'x' (binary data): shape {shape} ")


def test_v2_json_shape_numpy_cannot_lay_out() -> None:
    body = _body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 2**62], "data": []}]})
    with pytest.raises(InvalidInput, match=r"^input 'x': shape \[0, 4611686018427387904\] cannot be laid out"):
        v2.decode_request(body, None, typed_model("FP32"))


def test_v2_binary_tensors_are_taken_bit_exact() -> None:
    """Binary tensors hold their dtype's own values: infinity and NaN are values of FP32, and arrive as sent."""
    x = np.array([np.inf, -np.inf, np.nan, np.finfo(np.float32).max, 0.5], dtype=np.float32)
    head = _body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [5], "parameters": {"binary_data_size": 20}}]})
    arr = v2.decode_request(head + x.tobytes(), len(head), typed_model("FP32")).inputs["x"]
    assert arr.tobytes() == x.tobytes()
    assert typed_model("FP32").predict({"x": arr})["y"].tobytes() == x.tobytes()


def test_bool_for_the_whole_list_and_nested_positions() -> None:
    model = typed_model("UINT8")
    with pytest.raises(InvalidInput, match=r"^input 'x': expected UINT8 values, got true at \[0\] \(a boolean\)$"):
        via_v2(model, [True, False])
    with pytest.raises(InvalidInput, match=r"^input 'x': expected BOOL values, got 1 at \[1\]"):
        via_tf_inputs(typed_model("BOOL"), [True, 1, False])


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (np.array([1, 300], dtype=np.int64), "input 'x': expected UINT8 values, got 300 at [1] (out of range 0..255)"),
        (np.array([1.0, 2.5]), "input 'x': expected UINT8 values, got 2.5 at [1] (not a whole number)"),
        (np.array([True, False]), "input 'x': expected UINT8 values, got true at [0] (a boolean)"),
        ([7, 256], "input 'x': expected UINT8 values, got 256 at [1] (out of range 0..255)"),
    ],
)
def test_preprocess_hook_arrays_are_checked_too(returned: Any, message: str) -> None:
    """A hook's arrays reach the model through validate_inputs, whose cast refuses what the JSON decoders refuse."""
    model = typed_model("UINT8")
    inputs = plain.decode_request(_body({"features": "anything"}), model, lambda features, m: {"x": returned})
    with pytest.raises(InvalidInput) as e:
        model.predict(inputs)
    assert e.value.status == 400
    assert e.value.message == message


def test_preprocess_hook_float64_past_fp32_is_refused() -> None:
    model = typed_model("FP32")
    with pytest.raises(InvalidInput, match=r"^input 'x': expected FP32 values, got 1e\+300 at \[1\] \(overflows FP32"):
        model.predict({"x": np.array([1.0, 1e300])})
    # infinity is a float value of its own, not an overflow: it stays what it was
    assert model.predict({"x": np.array([1.0, np.inf])})["y"].tolist() == [1.0, np.inf]
