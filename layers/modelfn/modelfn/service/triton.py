"""Triton's HTTP extensions beyond the Open Inference Protocol, in the shapes `tritonclient.http` reads: a model's
configuration (`get_model_config`), the repository index (`get_model_repository_index`) and inference statistics
(`get_inference_statistics`). Plain functions of the data plane, as its other actions are; the counting itself is
the statistics observer's (stats.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelNotFound
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import TensorSpec
from modelfn.registry import ModelRegistry
from modelfn.service.dataplane import DataPlane, parse_version
from modelfn.service.request import VERSION_HEADER, Request, Response, json_response, request_body
from modelfn.service.stats import InferenceStatistics
from modelfn.store.layout import ARTIFACT, check_name

TRITON_TYPES: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}
"""KServe v2 datatypes as Triton's model configuration names them (DataType in model_config.proto)."""
INT32_MAX = 2**31 - 1
NOT_LOADED = "not loaded in this process yet: it loads on its first request"


# ---- configuration ---------------------------------------------------------------------------------------------
def batches(model: LoadedModel) -> bool:
    """Triton's rule for an ONNX model: it batches when every input and output has a variable first dimension;
    its configuration then lists dims without it."""
    return all(s.shape and s.shape[0] == -1 for s in (*model.inputs, *model.outputs))


def max_batch_size(model: LoadedModel, max_elements: int) -> int:
    """The most rows one request may carry before MODELFN_MAX_ELEMENTS refuses it (a variable dimension counted
    as 1, so this is an upper bound for such inputs); modelfn has no other batch limit."""
    per_row = sum(math.prod(max(d, 1) for d in s.shape[1:]) for s in model.inputs)
    return max(1, min(INT32_MAX, max_elements // max(per_row, 1)))


def _dims(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    """A tensor's dims; a batched [N] tensor is dims [1] reshaped to [], as Triton configures one."""
    if not batched:
        return {"dims": spec.shape}
    if len(spec.shape) == 1:
        return {"dims": [1], "reshape": {"shape": []}}
    return {"dims": spec.shape[1:]}


def model_config(model: LoadedModel, max_elements: int) -> dict[str, Any]:
    """The configuration Triton would give this ONNX model (its `config.pbtxt` as JSON, with the defaults Triton
    fills in): what tools that read a Triton server's configuration (model analyzers, clients that size batches)
    expect."""
    batched = batches(model)
    inputs = [
        {
            "name": s.name,
            "data_type": TRITON_TYPES[s.datatype],
            "format": "FORMAT_NONE",
            **_dims(s, batched),
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
        }
        for s in model.inputs
    ]
    outputs = [
        {
            "name": s.name,
            "data_type": TRITON_TYPES[s.datatype],
            **_dims(s, batched),
            "label_filename": "",
            "is_shape_tensor": False,
        }
        for s in model.outputs
    ]
    return {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"all": {}},
        "max_batch_size": max_batch_size(model, max_elements) if batched else 0,
        "input": inputs,
        "output": outputs,
        "default_model_filename": ARTIFACT,
        "parameters": {},
    }


def config_response(plane: DataPlane, params: Mapping[str, str]) -> Response:
    model = plane.registry.get(*plane.model_version(params, tf=False))
    config = model_config(model, plane.limits.max_elements)
    return json_response(config, headers={VERSION_HEADER: str(model.version)})


# ---- repository index ------------------------------------------------------------------------------------------
def _ready_only(request: Request, limit: int) -> bool:
    """The index request's `{"ready": true}` (only versions ready to infer); tritonclient sends an empty body."""
    body = request_body(request, limit)
    if not body.strip():
        return False
    parsed = jsonio.loads(body, "repository index request")
    if not isinstance(parsed, dict) or not isinstance(parsed.get("ready", False), bool):
        raise InvalidInput('a repository index request is empty or {"ready": true|false}')
    return bool(parsed.get("ready", False))


def _versions(registry: ModelRegistry, name: str) -> list[int]:
    """A listed model's versions; none when it has none (a model folder with nothing published yet)."""
    try:
        return registry.versions(name)
    except ModelNotFound:
        return []


def repository_index(plane: DataPlane, request: Request) -> Response:
    """Every served model version and its state, without loading anything (an index must stay cheap with many
    versions): READY once loaded in this process, else UNAVAILABLE saying it loads on its first request (Triton's
    own answer for a model in the repository that is not loaded)."""
    ready_only = _ready_only(request, plane.registry.settings.max_body_bytes)
    registry = plane.registry
    index = []
    for name in registry.model_names():
        for version in _versions(registry, name):
            ready = registry.peek(name, version) is not None
            if ready or not ready_only:
                entry = {"name": name, "version": str(version), "state": "READY" if ready else "UNAVAILABLE"}
                index.append({**entry, "reason": "" if ready else NOT_LOADED})
    return json_response(index)


# ---- statistics ------------------------------------------------------------------------------------------------
def statistics_response(stats: InferenceStatistics, plane: DataPlane, params: Mapping[str, str]) -> Response:
    """`/v2/models/stats`: every served model's versions; `/v2/models/{m}/stats`: that model's; with
    `/versions/{v}`: that version's (a label resolves to its version). An unknown model or version is a 404."""
    registry = plane.registry
    if "name" not in params:
        versions = [(n, v) for n in registry.model_names() for v in _versions(registry, n)]
    else:
        name = check_name(params["name"])
        versions = [(name, v) for v in registry.versions(name)]
        if "version" in params:
            version = registry.resolve(name, parse_version(params["version"]))
            if (name, version) not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version}")
            versions = [(name, version)]
    return json_response({"model_stats": [stats.model_stats(n, v) for n, v in versions]})
