"""The plain route: `{"features": [...]}` (one row) or `{"features": [[...], ...]}` for a model's single input,
answered with one object per row, `{"predictions": [{"<output>": value, ...}, ...]}`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import coerce
from modelfn.protocols import split_rows
from modelfn.protocols.sizes import DEFAULT, SizeLimits

Preprocess = Callable[[Any, LoadedModel], Mapping[str, np.ndarray]]
Postprocess = Callable[[list[dict[str, Any]], LoadedModel], list[dict[str, Any]]]


def decode_request(
    body: bytes, model: LoadedModel, preprocess: Preprocess | None = None, limits: SizeLimits = DEFAULT
) -> dict[str, np.ndarray]:
    return decode_parsed(jsonio.loads(body, "predict request"), model, preprocess, limits.for_body(body))


def decode_parsed(
    req: Any, model: LoadedModel, preprocess: Preprocess | None = None, limits: SizeLimits = DEFAULT
) -> dict[str, np.ndarray]:
    """Decode an already parsed body (SageMaker /invocations parses it once to tell its protocol). A preprocess
    hook's tensors are counted against MODELFN_MAX_ELEMENTS as the request's own would be, before the model runs."""
    if not isinstance(req, dict) or "features" not in req:
        raise InvalidInput('body must be {"features": [...]} (one row) or {"features": [[...], ...]} (rows)')
    features = req["features"]
    if preprocess is not None:
        inputs = dict(preprocess(features, model))
        limits.check_elements(sum(_size(v, f"input {n!r}", limits) for n, v in inputs.items()))
        return inputs
    limits.check_elements(limits.nested_elements(features, "features"))
    if len(model.inputs) != 1:
        names = [s.name for s in model.inputs]
        raise InvalidInput(f"/predict feeds a single input; this model has {names}: use /v2/models/{model.name}/infer")
    spec = model.inputs[0]
    arr = coerce(spec, features, None, "features", limits.may_hold_booleans)
    if arr.ndim == len(spec.shape) - 1:  # one row without its batch dimension
        arr = arr[np.newaxis, ...]
    return {spec.name: arr}


def _size(value: Any, where: str, limits: SizeLimits) -> int:
    """A hook's tensor's elements: an array's size, or (plain lists, which `validate_inputs` takes too) counted."""
    return value.size if isinstance(value, np.ndarray) else limits.nested_elements(value, where)


def encode_response(
    results: Mapping[str, np.ndarray], model: LoadedModel, postprocess: Postprocess | None = None
) -> dict[str, Any]:
    out = split_rows(results)
    if postprocess is not None:
        out = postprocess(out, model)
    return {"predictions": out}
