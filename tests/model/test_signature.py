"""Request validation against a model's signature: lossless coercion only, and errors that say what was expected."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from modelfn.errors import InvalidInput
from modelfn.model.signature import TensorSpec, cast, coerce, shape_matches, spec_from_onnx, validate_inputs

FP32 = TensorSpec(name="x", datatype="FP32", shape=[-1, 4])
INT64 = TensorSpec(name="ids", datatype="INT64", shape=[-1, 3])
BYTES = TensorSpec(name="text", datatype="BYTES", shape=[-1])
RANKER = [
    TensorSpec(name="dense", datatype="FP32", shape=[-1, 4]),
    TensorSpec(name="item_ids", datatype="INT64", shape=[-1, 3]),
]


# --- coerce ------------------------------------------------------------------------------------------------------


def test_json_ints_accepted_for_fp32() -> None:
    arr = coerce(FP32, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert arr.dtype == np.float32
    assert arr.shape == (2, 4)
    assert arr.tolist() == [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    assert coerce(FP32, [[0.5, 1, 2.25, 3]]).dtype == np.float32


def test_fractional_floats_refused_for_int64() -> None:
    with pytest.raises(InvalidInput) as e:
        coerce(INT64, [[1.5, 2, 3]])
    assert e.value.status == 400
    assert "input 'ids'" in e.value.message
    assert "expected INT64" in e.value.message


def test_integral_floats_and_ints_accepted_for_int64() -> None:
    arr = coerce(INT64, [[1.0, 2.0, 3.0]])
    assert arr.dtype == np.int64
    assert arr.tolist() == [[1, 2, 3]]
    assert coerce(INT64, [[7, 8, 9]]).dtype == np.int64


@pytest.mark.parametrize("data", [["a", "b", "c", "d"], [[1, "x", 2, 3]]])
def test_strings_refused_for_numbers(data: Any) -> None:
    with pytest.raises(InvalidInput, match="expected FP32 values, got strings"):
        coerce(FP32, data)


def test_ragged_data_refused() -> None:
    with pytest.raises(InvalidInput, match="not a rectangular array"):
        coerce(FP32, [[1, 2, 3, 4], [1, 2]])


def test_flat_data_with_shape() -> None:
    arr = coerce(FP32, list(range(8)), shape=[2, 4])
    assert arr.shape == (2, 4)
    assert arr[1].tolist() == [4.0, 5.0, 6.0, 7.0]
    with pytest.raises(InvalidInput) as e:
        coerce(FP32, list(range(8)), shape=[2, 3])
    assert "shape [2, 3] needs 6 elements, got 8" in e.value.message
    assert coerce(FP32, 3, shape=[]).shape == ()


def test_where_labels_the_message() -> None:
    with pytest.raises(InvalidInput, match=r"^instances\[2\]: expected INT64"):
        coerce(INT64, [0.5], where="instances[2]")


def test_bytes_become_str_for_onnxruntime() -> None:
    """onnxruntime feeds str() of anything but str to a string tensor: bytes would arrive as "b'raw'"."""
    arr = coerce(BYTES, ["hello", "héllo", "héllo".encode(), b"raw", ""])
    assert arr.dtype == np.object_
    assert arr.tolist() == ["hello", "héllo", "héllo", "raw", ""]
    assert all(type(x) is str for x in arr.tolist())
    nested = coerce(TensorSpec(name="t", datatype="BYTES", shape=[-1, 2]), [["a", "b"], ["c", "d"]])
    assert nested.shape == (2, 2)
    assert nested[1, 0] == "c"
    with pytest.raises(InvalidInput, match=r"input 'text': expected BYTES values \(strings\), got 3 at \[1\]"):
        coerce(BYTES, ["ok", 3])


def test_bool_and_empty() -> None:
    spec = TensorSpec(name="b", datatype="BOOL", shape=[-1])
    assert coerce(spec, [True, False]).tolist() == [True, False]
    with pytest.raises(InvalidInput, match="expected BOOL"):
        coerce(spec, [1.5])
    empty = coerce(FP32, [], shape=[0, 4])
    assert empty.shape == (0, 4)
    assert empty.dtype == np.float32


def test_positions_are_those_of_the_data_as_sent() -> None:
    with pytest.raises(
        InvalidInput, match=r"^instances: expected INT64 values, got 2.5 at \[1, 2\] \(not a whole number\)$"
    ):
        coerce(INT64, [[1, 2, 3], [4, 5, 2.5]], where="instances")
    # one row of a batch file, as the scorer hands it over
    with pytest.raises(InvalidInput, match=r"^row 7: expected FP32 values, got true at \[3\] \(a boolean\)$"):
        coerce(FP32, [1.0, 2.0, 0.5, True], where="row 7")
    with pytest.raises(InvalidInput, match=r"^input 'x': expected FP32 values, got 1e\+39 \(overflows FP32"):
        coerce(FP32, 1e39, shape=[])


def test_zeros_and_ones_are_numbers_unless_json_said_true_or_false() -> None:
    """numpy reads true/false as 1/0: the values that read so are the ones whose JSON types are looked at."""
    assert coerce(FP32, [0, 1, 0.0, 1.0, 0.5]).tolist() == [0.0, 1.0, 0.0, 1.0, 0.5]
    assert coerce(INT64, [[0, 1, 1], [1, 0, 0]]).tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(InvalidInput, match=r"^input 'x': expected FP32 values, got false at \[4\] \(a boolean\)$"):
        coerce(FP32, [0.0, 1.0, 1, 0, False, True])
    with pytest.raises(InvalidInput, match=r"^input 'ids': expected INT64 values, got true at \[1, 1\] \(a boolean\)$"):
        coerce(INT64, [[0, 1, 1], [1, True, 0]])


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        (
            "INT64",
            [2**70],
            "got 1180591620717411303424 at [0] (out of range -9223372036854775808..9223372036854775807)",
        ),
        ("FP32", [1, 2**2000], "overflows FP32)"),
        ("FP64", [1, None], "got None at [1] (a NoneType)"),
        ("INT32", [1, {"a": 1}], "got {'a': 1} at [1] (a dict)"),
        ("BOOL", [True, None], "got None at [1] (BOOL takes true or false)"),
    ],
)
def test_python_objects_are_judged_exactly(datatype: str, data: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        coerce(TensorSpec(name="x", datatype=datatype, shape=[-1]), data)
    assert e.value.message.startswith(f"input 'x': expected {datatype} values, got ")
    assert e.value.message.endswith(message)


@pytest.mark.parametrize(
    ("datatype", "arr", "message"),
    [
        ("UINT8", np.array([1, 256]), "got 256 at [1] (out of range 0..255)"),
        ("INT8", np.array([[1, 2], [-129, 0]], dtype=np.int16), "got -129 at [1, 0] (out of range -128..127)"),
        ("INT64", np.array([1, 2**63], dtype=np.uint64), "got 9223372036854775808 at [1] (out of range"),
        ("INT64", np.array([np.nan]), "got nan at [0] (not a whole number)"),
        ("INT32", np.array([3e9]), "got 3000000000.0 at [0] (out of range -2147483648..2147483647)"),
        ("FP32", np.array([0.5, -1e300]), "got -1e+300 at [1] (overflows FP32, whose largest is 3.40282e+38)"),
        ("FP16", np.array([1, 70000], dtype=np.int32), "got 70000 at [1] (overflows FP16, whose largest is 65504)"),
        ("FP16", np.array([1e5], dtype=np.float32), "got 100000.0 at [0] (overflows FP16, whose largest is 65504)"),
        ("FP32", np.array([True]), "got true at [0] (a boolean)"),
        ("BOOL", np.array([0, 1]), "got 0 at [0] (BOOL takes true or false)"),
        ("BOOL", np.array([True, None], dtype=np.object_), "got None at [1] (BOOL takes true or false)"),
        ("UINT8", np.array([5, 300], dtype=np.float16), "got 300.0 at [1] (out of range 0..255)"),
        ("FP32", np.r_[np.zeros(5000), 1e39], "got 1e+39 at [5000] (overflows FP32"),  # past the one-dot-product size
        ("FP16", np.r_[np.zeros(5000, dtype=np.float32), -7e4], "got -70000.0 at [5000] (overflows FP16"),
    ],
)
def test_cast_refuses_what_does_not_fit_and_warns_nothing(datatype: str, arr: np.ndarray, message: str) -> None:
    """Arrays already in numpy (a hook's, a parsed file's): the same rules, no numpy overflow warnings on the way."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInput) as e:
            cast(TensorSpec(name="x", datatype=datatype, shape=[-1]), arr)
    assert e.value.message.startswith(f"input 'x': expected {datatype} values, ")
    assert message in e.value.message


def test_cast_keeps_what_fits() -> None:
    spec = TensorSpec(name="x", datatype="FP32", shape=[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cast(spec, np.array([np.inf, -np.inf, np.nan, 3.4028234663852886e38, 1e-60]))
    assert out.dtype == np.float32
    assert out[:2].tolist() == [np.inf, -np.inf] and np.isnan(out[2]) and out[3] == np.finfo(np.float32).max
    assert cast(TensorSpec(name="x", datatype="UINT8", shape=[-1]), np.array([0, 255])).tolist() == [0, 255]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # int64's bounds overflow float16: compared as Python floats, no warning
        halves = cast(INT64, np.array([[5, -65504, 0]], dtype=np.float16))
    assert halves.tolist() == [[5, -65504, 0]]
    same = np.array([1.0], dtype=np.float32)
    assert cast(spec, same) is same  # the right dtype already: taken as it is


def test_bytes_arrays_from_numpy_become_str() -> None:
    assert cast(BYTES, np.array(["Zürich", ""])).tolist() == ["Zürich", ""]
    assert cast(BYTES, np.array(["東京".encode(), b"x"])).tolist() == ["東京", "x"]
    with pytest.raises(InvalidInput, match=r"^input 'text' element \[1\]: bytes are not UTF-8 text"):
        cast(BYTES, np.array([b"ok", b"\xe9"], dtype=np.object_))
    with pytest.raises(InvalidInput, match=r"^input 'text': expected BYTES values \(strings\), got float64 numbers"):
        cast(BYTES, np.array([1.5]))


# --- validate_inputs ---------------------------------------------------------------------------------------------


def _ranker_feed(n_dense: int = 2, n_ids: int = 2) -> dict[str, np.ndarray]:
    return {"dense": np.zeros((n_dense, 4), dtype=np.float32), "item_ids": np.zeros((n_ids, 3), dtype=np.int64)}


def test_valid_inputs_pass_and_are_cast() -> None:
    feed = {"dense": np.ones((2, 4), dtype=np.float64), "item_ids": np.array([[1.0, 2.0, 3.0]] * 2)}
    checked = validate_inputs(RANKER, feed)
    assert set(checked) == {"dense", "item_ids"}
    assert checked["dense"].dtype == np.float32
    assert checked["item_ids"].dtype == np.int64
    assert checked["item_ids"].tolist() == [[1, 2, 3], [1, 2, 3]]


def test_missing_input_is_named() -> None:
    with pytest.raises(InvalidInput) as e:
        validate_inputs(RANKER, {"dense": np.zeros((1, 4), dtype=np.float32)})
    assert "missing input(s)" in e.value.message
    assert "item_ids INT64[-1, 3]" in e.value.message
    assert "dense" not in e.value.message


def test_unknown_input_is_named_with_expectation() -> None:
    feed = {**_ranker_feed(), "extra": np.zeros(1)}
    with pytest.raises(InvalidInput) as e:
        validate_inputs(RANKER, feed)
    assert "unknown input(s) ['extra']" in e.value.message
    assert "dense FP32[-1, 4]" in e.value.message
    assert "item_ids INT64[-1, 3]" in e.value.message


@pytest.mark.parametrize(
    ("shape", "said"),
    [((4,), "has shape [4]"), ((2, 5), "has shape [2, 5]"), ((1, 2, 4), "has shape [1, 2, 4]"), ((), "has shape []")],
)
def test_wrong_rank_or_size_says_what_was_expected(shape: tuple[int, ...], said: str) -> None:
    feed = _ranker_feed()
    feed["dense"] = np.zeros(shape, dtype=np.float32)
    with pytest.raises(InvalidInput) as e:
        validate_inputs(RANKER, feed)
    assert "input 'dense'" in e.value.message
    assert said in e.value.message
    assert "expected [-1, 4]" in e.value.message


def test_batch_size_disagreement() -> None:
    with pytest.raises(InvalidInput) as e:
        validate_inputs(RANKER, _ranker_feed(n_dense=2, n_ids=3))
    assert "disagree on the batch size: 2 and 3" in e.value.message
    assert "'item_ids'" in e.value.message


def test_int64_input_with_fractions_refused() -> None:
    feed = _ranker_feed()
    feed["item_ids"] = np.array([[1.0, 2.5, 3.0], [1.0, 2.0, 3.0]])
    with pytest.raises(InvalidInput, match="input 'item_ids': expected INT64"):
        validate_inputs(RANKER, feed)


def test_hook_lists_get_the_json_rules() -> None:
    spec = [TensorSpec(name="px", datatype="UINT8", shape=[-1])]
    assert validate_inputs(spec, {"px": [0, 255]})["px"].dtype == np.uint8  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match=r"^input 'px': expected UINT8 values, got 300 at \[1\]"):
        validate_inputs(spec, {"px": [1, 300]})  # type: ignore[dict-item]


def test_fixed_dims_must_match_exactly() -> None:
    spec = [TensorSpec(name="img", datatype="UINT8", shape=[1, 2, 2])]
    assert validate_inputs(spec, {"img": np.zeros((1, 2, 2), dtype=np.uint8)})["img"].shape == (1, 2, 2)
    with pytest.raises(InvalidInput, match=r"expected \[1, 2, 2\]"):
        validate_inputs(spec, {"img": np.zeros((2, 2, 2), dtype=np.uint8)})


# --- helpers -----------------------------------------------------------------------------------------------------


def test_shape_matches() -> None:
    assert shape_matches([-1, 4], [7, 4])
    assert not shape_matches([-1, 4], [7, 5])
    assert not shape_matches([-1, 4], [7])
    assert shape_matches([], [])


def test_spec_from_onnx() -> None:
    spec = spec_from_onnx("x", "tensor(float)", ["N", 4, None])
    assert spec == TensorSpec(name="x", datatype="FP32", shape=[-1, 4, -1])
    assert spec.describe() == "x FP32[-1, 4, -1]"
    assert spec_from_onnx("s", "tensor(string)", [1]).dtype == np.object_
    with pytest.raises(ValueError, match="cannot serve"):
        spec_from_onnx("m", "map(int64,tensor(float))", [])


def test_tensor_spec_equality_dtype_and_as_dict() -> None:
    spec = TensorSpec(name="x", datatype="FP32", shape=[-1, 4])
    assert spec == FP32 and spec is not FP32
    assert spec != TensorSpec(name="x", datatype="FP32", shape=[-1, 5])
    assert spec != TensorSpec(name="x", datatype="FP64", shape=[-1, 4])
    assert spec != TensorSpec(name="y", datatype="FP32", shape=[-1, 4])
    assert spec.dtype is spec.dtype and spec.dtype == np.float32  # computed once, then an attribute
    assert spec == FP32  # the cached dtype is no field: equality is unchanged by having read it
    as_dict = spec.as_dict()
    assert as_dict == {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
    assert list(as_dict) == ["name", "datatype", "shape"]
    as_dict["shape"].append(7)  # a copy: the spec keeps its shape
    assert spec.shape == [-1, 4]
    with pytest.raises(TypeError):
        TensorSpec("x", "FP32", [-1, 4])  # type: ignore[call-arg]  # keywords only, as before
