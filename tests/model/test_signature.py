"""Request validation against a model's signature: lossless coercion only, and errors that say what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelfn.errors import InvalidInput
from modelfn.model.signature import TensorSpec, coerce, shape_matches, spec_from_onnx, validate_inputs

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


def test_bytes_from_strings() -> None:
    arr = coerce(BYTES, ["hello", "héllo", b"raw"])
    assert arr.dtype == np.object_
    assert arr.tolist() == [b"hello", "héllo".encode(), b"raw"]
    nested = coerce(TensorSpec(name="t", datatype="BYTES", shape=[-1, 2]), [["a", "b"], ["c", "d"]])
    assert nested.shape == (2, 2)
    assert nested[1, 0] == b"c"
    with pytest.raises(InvalidInput, match="BYTES elements must be strings"):
        coerce(BYTES, ["ok", 3])


def test_bool_and_empty() -> None:
    spec = TensorSpec(name="b", datatype="BOOL", shape=[-1])
    assert coerce(spec, [True, False]).tolist() == [True, False]
    with pytest.raises(InvalidInput, match="expected BOOL"):
        coerce(spec, [1.5])
    empty = coerce(FP32, [], shape=[0, 4])
    assert empty.shape == (0, 4)
    assert empty.dtype == np.float32


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
