"""Open Inference Protocol messages to and from the service's own v2 form, and nothing else: a `ModelInferRequest`
becomes the v2 binary request (`<JSON header><tensor bytes>`) that `POST /v2/models/{m}/infer` takes, and the v2
binary answer becomes a `ModelInferResponse`. The two binary forms are the same bytes (raw tensors little-endian,
BYTES elements each after a 4-byte little-endian length), so raw contents pass through as they are; the service's
decoder then applies every check a HTTP request gets (names, datatypes, shapes, values, sizes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelfn import jsonio
from modelfn.adapters.grpc import oip_pb2 as pb
from modelfn.errors import InvalidInput
from modelfn.model.signature import V2_TO_NUMPY
from modelfn.protocols import v2
from modelfn.protocols.sizes import SizeLimits
from modelfn.service.dataplane import parse_version
from modelfn.service.request import Response
from modelfn.store.layout import check_name

LENGTH_HEADER = v2.HEADER.lower()

TYPED: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype("<i4")),
    "INT16": ("int_contents", np.dtype("<i4")),
    "INT32": ("int_contents", np.dtype("<i4")),
    "INT64": ("int64_contents", np.dtype("<i8")),
    "UINT8": ("uint_contents", np.dtype("<u4")),
    "UINT16": ("uint_contents", np.dtype("<u4")),
    "UINT32": ("uint_contents", np.dtype("<u4")),
    "UINT64": ("uint64_contents", np.dtype("<u8")),
    "FP32": ("fp32_contents", np.dtype("<f4")),
    "FP64": ("fp64_contents", np.dtype("<f8")),
    "BYTES": ("bytes_contents", np.dtype(np.object_)),
}
"""The typed-contents field of each datatype and the type its values have there. FP16 and BF16 have none."""


def model_path(name: str, version: str) -> str:
    """`/v2/models/{name}[/versions/{version}]`, after checking both: a name or version holding '/' or ':' would
    otherwise name another route."""
    check_name(name)
    if not version:
        return f"/v2/models/{name}"
    parse_version(version)
    return f"/v2/models/{name}/versions/{version}"


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A parameter map as the v2 JSON form writes it."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        if kind is not None:
            out[key] = getattr(param, kind)
    return out


Content = bytes | np.ndarray
"""An input's data for the v2 body: bytes in the binary form, or an array of values for its JSON `data`."""


def infer_body(req: pb.ModelInferRequest, limits: SizeLimits) -> tuple[bytes, int]:
    """The v2 binary request body of a ModelInferRequest and its JSON header's length. Typed contents are counted
    against MODELFN_MAX_ELEMENTS before any array is made of them (raw contents are bytes already, checked by the
    decoder before it allocates)."""
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs: one per input")
    if not raw:
        limits.check_elements(sum(len(values) for t in req.inputs for _, values in t.contents.ListFields()))
    inputs: list[tuple[str, str, list[int], Content]] = []
    for i, tensor in enumerate(req.inputs):
        if raw and tensor.HasField("contents"):
            raise InvalidInput(f"input {tensor.name!r}: contents given with raw_input_contents; use one or the other")
        content = raw[i] if raw else _typed(tensor)
        inputs.append((tensor.name, tensor.datatype, list(tensor.shape), content))
    outputs = [{"name": o.name, "parameters": parameters(o.parameters)} for o in req.outputs]
    return v2_body(inputs, outputs, req.id)


def v2_body(
    inputs: list[tuple[str, str, list[int], Content]], outputs: list[dict[str, Any]], rid: str
) -> tuple[bytes, int]:
    """`<JSON header><tensor bytes>` and the header's length, every output asked for in binary form (the form of
    `raw_output_contents`); `outputs` empty: all of them."""
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, shape, content in inputs:
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if isinstance(content, bytes):
            item["parameters"] = {"binary_data_size": len(content)}
            blobs.append(content)
        else:
            item["data"] = content
        items.append(item)
    header: dict[str, Any] = {"inputs": items, "parameters": {"binary_data_output": True}}
    if outputs:
        header["outputs"] = [{**o, "parameters": {**o.get("parameters", {}), "binary_data": True}} for o in outputs]
    if rid:
        header["id"] = rid
    head = jsonio.dumps(header)
    return b"".join([head, *blobs]), len(head)


def typed_values(datatype: str, values: Sequence[Any], field_dtype: np.dtype[Any]) -> Content:
    """Values of a typed field: bytes in the binary form when the field's type is the datatype's own (the values
    are then exact as they are), else an array for the JSON `data`, which the decoder range-checks (INT8 values
    travel as int32: 300 is refused there, never wrapped)."""
    if datatype == "BYTES":
        return v2.encode_bytes_tensor(np.array(list(values), dtype=np.object_))
    arr = np.array(values, dtype=field_dtype)
    return arr.tobytes() if arr.dtype == V2_TO_NUMPY[datatype] else arr


def _typed(tensor: pb.ModelInferRequest.InferInputTensor) -> Content:
    """An input's typed contents, from the field of its datatype."""
    where = f"input {tensor.name!r}"
    given = [field.name for field, _ in tensor.contents.ListFields()]
    typed = TYPED.get(tensor.datatype)
    if typed is None:
        if given:
            raise InvalidInput(f"{where}: {tensor.datatype} values travel only in raw_input_contents")
        return b""  # the decoder names what is wrong: an unknown datatype, or no data for the shape
    field, dtype = typed
    if any(name != field for name in given):
        raise InvalidInput(f"{where}: {tensor.datatype} values go in contents.{field}, got {', '.join(given)}")
    return typed_values(tensor.datatype, getattr(tensor.contents, field), dtype)


def infer_response(response: Response) -> pb.ModelInferResponse:
    """The service's v2 binary answer as a ModelInferResponse with `raw_output_contents`, as Triton answers."""
    body = response.body
    length = int(response.headers.get(LENGTH_HEADER, len(body)))
    doc = jsonio.loads(body[:length], "inference answer")
    answer = pb.ModelInferResponse(
        model_name=doc["model_name"], model_version=doc["model_version"], id=doc.get("id", "")
    )
    offset = length
    for out in doc["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:  # every output is asked for in binary: anything else is the service's bug, not the client's
            raise RuntimeError(f"output {out['name']!r} came back without binary data")
        answer.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        answer.raw_output_contents.append(body[offset : offset + size])
        offset += size
    return answer


def model_metadata(doc: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    tensors = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=doc["name"],
        versions=doc["versions"],
        platform=doc["platform"],
        inputs=[tensors(name=s["name"], datatype=s["datatype"], shape=s["shape"]) for s in doc["inputs"]],
        outputs=[tensors(name=s["name"], datatype=s["datatype"], shape=s["shape"]) for s in doc["outputs"]],
    )


def server_metadata(doc: Mapping[str, Any]) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=doc["name"], version=doc["version"], extensions=doc["extensions"])
