"""TensorFlow Serving's REST API: `instances` (row format) and `inputs` (columnar), answered with `predictions`
or `outputs` exactly as TF Serving documents; BYTES values may be {"b64": "..."}."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import V2_TO_TF, TensorSpec, coerce
from modelfn.protocols import request_id, split_rows
from modelfn.protocols.sizes import DEFAULT, SizeLimits

SIGNATURE = "serving_default"


@dataclass
class TFRequest:
    inputs: dict[str, np.ndarray]
    row_format: bool


def _unb64(value: Any, where: str, limits: SizeLimits, level: int = 1) -> Any:
    """{"b64": ...} values as their bytes (which `coerce` then takes as UTF-8 text); plain strings stay. It walks
    every list, as deep as MODELFN_MAX_JSON_DEPTH at most, so never as deep as Python's recursion limit."""
    if isinstance(value, list):
        if level > limits.max_json_depth:
            raise limits.too_deep(where)
        return [_unb64(v, where, limits, level + 1) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"{where}: invalid base64 value: {e}") from e
    return value


Columns = list[tuple[TensorSpec, Any]]
"""Each input's spec with its JSON value, gathered before any is converted (and so counted first)."""


def _tensors(columns: Columns, limits: SizeLimits) -> dict[str, np.ndarray]:
    """The inputs as arrays, once their elements in all are within MODELFN_MAX_ELEMENTS."""
    labeled = []
    total = 0
    for spec, value in columns:
        where = f"input {spec.name!r}"
        total += limits.nested_elements(value, where)
        labeled.append((spec, value, where))
    limits.check_elements(total)
    return {spec.name: _tensor(spec, value, where, limits) for spec, value, where in labeled}


def _tensor(spec: TensorSpec, value: Any, where: str, limits: SizeLimits) -> np.ndarray:
    if spec.datatype == "BYTES":
        value = _unb64(value, where, limits)
    return coerce(spec, value, None, where, limits.may_hold_booleans)


def decode_request(body: bytes, model: LoadedModel, limits: SizeLimits = DEFAULT) -> TFRequest:
    return decode_parsed(jsonio.loads(body, "predict request"), model, limits.for_body(body))


def decode_parsed(req: Any, model: LoadedModel, limits: SizeLimits = DEFAULT) -> TFRequest:
    if not isinstance(req, dict):
        raise InvalidInput("predict request must be a JSON object with 'instances' or 'inputs'")
    sig = req.get("signature_name", SIGNATURE)
    if sig != SIGNATURE:
        raise InvalidInput(f"signature_name {jsonio.shown(sig)} not found; this model has {SIGNATURE!r}")
    has_instances, has_inputs = "instances" in req, "inputs" in req
    if has_instances == has_inputs:
        raise InvalidInput("request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    request_id(req.get("id"))  # not TF Serving's, but echoed in an SQS answer: a string or a number only
    columns = _rows(req["instances"], model.inputs) if has_instances else _columns(req["inputs"], model.inputs)
    return TFRequest(_tensors(columns, limits), has_instances)


def _rows(instances: Any, specs: Sequence[TensorSpec]) -> Columns:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list, one entry per example")
    named = all(isinstance(r, dict) and "b64" not in r for r in instances)
    if named:
        names = [s.name for s in specs]
        cols: dict[str, list[Any]] = {n: [] for n in names}
        for i, row in enumerate(instances):
            keys = set(row)
            if keys != set(names):
                raise InvalidInput(f"instances[{i}] has keys {sorted(keys)}; every instance needs exactly {names}")
            for n in names:
                cols[n].append(row[n])
        return [(s, cols[s.name]) for s in specs]
    if any(isinstance(r, dict) and "b64" not in r for r in instances):
        raise InvalidInput("'instances' mixes named (object) and unnamed entries")
    if len(specs) != 1:
        raise InvalidInput(f"the model has {len(specs)} inputs {[s.name for s in specs]}: each instance must name them")
    return [(specs[0], instances)]


def _columns(inputs: Any, specs: Sequence[TensorSpec]) -> Columns:
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        by_name = {s.name: s for s in specs}
        unknown = sorted(set(inputs) - set(by_name))
        if unknown:
            raise InvalidInput(f"unknown input(s) {unknown}; the model expects {list(by_name)}")
        return [(by_name[n], v) for n, v in inputs.items()]
    if len(specs) != 1:
        raise InvalidInput(f"the model has {len(specs)} inputs {[s.name for s in specs]}: 'inputs' must name them")
    return [(specs[0], inputs)]


def encode_response(results: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if not row_format:
        if len(results) == 1:
            return {"outputs": jsonio.tensor_list(next(iter(results.values())))}
        return {"outputs": {n: jsonio.tensor_list(a) for n, a in results.items()}}
    if len(results) == 1:
        (only,) = results.values()
        if only.ndim == 0:
            raise InvalidInput("the model's output has no batch dimension; use the columnar 'inputs' format")
        return {"predictions": jsonio.tensor_list(only)}
    return {"predictions": split_rows(results)}


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": V2_TO_TF[spec.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False},
        "name": spec.name,
    }


def status(versions: Sequence[tuple[int, bool, str | None]]) -> dict[str, Any]:
    """GET /v1/models/{m}[/versions/{v}]: TF Serving's model_version_status."""
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE" if ok else "END",
                "status": {"error_code": "OK" if ok else "UNAVAILABLE", "error_message": err or ""},
            }
            for v, ok, err in versions
        ]
    }


def metadata(model: LoadedModel) -> dict[str, Any]:
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": {s.name: _tensor_info(s) for s in model.inputs},
                        "outputs": {s.name: _tensor_info(s) for s in model.outputs},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }
