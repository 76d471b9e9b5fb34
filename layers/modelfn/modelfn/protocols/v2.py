"""Open Inference Protocol (KServe v2) with the binary tensor data extension, as tritonclient.http speaks it.

A binary request is `<JSON header><tensor bytes...>` with the JSON's length in the Inference-Header-Content-Length
header; each binary input names its byte count in `parameters.binary_data_size`, in input order. Outputs are
binary when asked (`parameters.binary_data` per output, or `binary_data_output` for all).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import NUMPY_TO_V2, V2_TO_NUMPY, TensorSpec, coerce, reshape, utf8
from modelfn.protocols import request_id
from modelfn.protocols.sizes import DEFAULT, SizeLimits

HEADER = "Inference-Header-Content-Length"


@dataclass
class V2Request:
    inputs: dict[str, np.ndarray]
    outputs: list[str] = field(default_factory=list)
    binary_outputs: set[str] = field(default_factory=set)
    id: str | None = None


def _shape(raw: Any, where: str) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers, got {jsonio.shown(raw)}")
    return raw


def decode_bytes_tensor(buf: bytes | memoryview, where: str, count: int | None = None) -> np.ndarray:
    """BYTES in binary form: each element is a 4-byte little-endian length followed by that many bytes, which
    must be UTF-8: the elements come back as `str`, what onnxruntime's string tensors take. With `count` (the
    declared shape's), no more elements than that are read: a buffer of empty strings cannot make a longer list."""
    items: list[str] = []
    view = memoryview(buf)
    pos = 0
    while pos < len(view):
        if len(items) == count:
            raise InvalidInput(f"{where}: the binary data holds more than the {count} elements its shape declares")
        if pos + 4 > len(view):
            raise InvalidInput(f"{where}: truncated BYTES element length at offset {pos}")
        (n,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + n > len(view):
            raise InvalidInput(f"{where}: BYTES element of {n} bytes runs past the end of the data")
        items.append(utf8(view[pos : pos + n], f"{where} element {len(items)}"))
        pos += n
    return np.array(items, dtype=np.object_)


def encode_bytes_tensor(arr: np.ndarray) -> bytes:
    """The binary form of a string tensor: each element's UTF-8 bytes after their 4-byte little-endian length."""
    parts = []
    for item in arr.reshape(-1).tolist():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _binary_tensor(spec: TensorSpec, shape: list[int], buf: memoryview, where: str) -> np.ndarray:
    if spec.datatype == "BYTES":
        arr = decode_bytes_tensor(buf, where, math.prod(shape))
    else:
        itemsize = spec.dtype.itemsize
        if len(buf) % itemsize:
            raise InvalidInput(f"{where}: {len(buf)} bytes is not a whole number of {spec.datatype} elements")
        arr = np.frombuffer(buf, dtype=spec.dtype.newbyteorder("<"))  # bit-exact: every value fits its dtype
    return reshape(arr, shape, f"{where} (binary data)")


def decode_request(
    body: bytes, header_length: int | None, model: LoadedModel, limits: SizeLimits = DEFAULT
) -> V2Request:
    """Parse a v2 request (JSON, or JSON header + binary tensors) into arrays of the declared datatypes."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(f"{HEADER} is {header_length} but the body has only {len(body)} bytes")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    return decode_parsed(jsonio.loads(head, "inference request"), binary, model, limits.for_body(head))


def decode_parsed(req: Any, binary: memoryview, model: LoadedModel, limits: SizeLimits = DEFAULT) -> V2Request:
    """Decode an already parsed JSON header (and the binary part after it, empty for pure JSON)."""
    if not isinstance(req, dict):
        raise InvalidInput("inference request must be a JSON object with an 'inputs' list")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("inference request needs a non-empty 'inputs' list")
    rid = request_id(req.get("id"))
    inputs = _decode_inputs(raw_inputs, binary, model, limits)
    outputs, binary_outputs = _requested_outputs(req, model)
    return V2Request(inputs, outputs, binary_outputs, rid)


def _decode_inputs(
    raw_inputs: list[Any], binary: memoryview, model: LoadedModel, limits: SizeLimits
) -> dict[str, np.ndarray]:
    """Each input from its JSON `data` or, in input order, from its slice of the binary part; the shapes all
    inputs declare are counted against MODELFN_MAX_ELEMENTS before any of them is decoded."""
    specs = {s.name: s for s in model.inputs}
    declared = []
    total = 0
    for i, item in enumerate(raw_inputs):
        spec, shape, where = _declared(item, i, specs, model)
        declared.append((item, spec, shape, where))
        total += math.prod(shape)
    limits.check_elements(total)
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item, spec, shape, where in declared:
        if spec.name in inputs:
            raise InvalidInput(f"{where} appears twice")
        size = _binary_size(item, where)
        if size is not None:
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{where}: binary_data_size {size} runs past the {len(binary)} bytes of binary data"
                    " after the header"
                )
            inputs[spec.name] = _binary_tensor(spec, shape, binary[offset : offset + size], where)
            offset += size
        elif "data" in item:
            data = item["data"]
            if isinstance(data, list) and data and isinstance(data[0], list):  # flat data is always shallow enough
                limits.nested_elements(data, where)  # for its depth: the count is the declared shape's to match
            inputs[spec.name] = coerce(spec, data, shape, where, limits.may_hold_booleans)
        else:
            raise InvalidInput(f"{where} has neither 'data' nor parameters.binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data after the header belong to no input")
    return inputs


def _declared(
    item: Any, i: int, specs: Mapping[str, TensorSpec], model: LoadedModel
) -> tuple[TensorSpec, list[int], str]:
    """The model's spec for one request input, after checking the name, datatype and shape it declares."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput(f"inputs[{i}] must be an object with a 'name'")
    name = item["name"]
    where = f"input {name!r}"
    spec = specs.get(name)
    if spec is None:
        raise InvalidInput(f"unknown input {name!r}; the model expects {[s.describe() for s in model.inputs]}")
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise InvalidInput(f"{where}: unknown datatype {jsonio.shown(datatype)}; expected {spec.datatype}")
    if datatype != spec.datatype:
        raise InvalidInput(f"{where}: datatype {datatype} does not match the model's {spec.datatype}")
    return spec, _shape(item.get("shape"), where), where


def _binary_size(item: dict[str, Any], where: str) -> int | None:
    params = item.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
    return size


def _requested_outputs(req: dict[str, Any], model: LoadedModel) -> tuple[list[str], set[str]]:
    """The outputs asked for (none: all) and which of them are to be binary."""
    req_params = req.get("parameters") or {}
    binary_all = bool(isinstance(req_params, dict) and req_params.get("binary_data_output"))
    raw_outputs = req.get("outputs")
    if raw_outputs is None:
        return [], set(model.output_names) if binary_all else set()
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list of {'name': ...} objects")
    outputs: list[str] = []
    binary_outputs: set[str] = set()
    for j, out in enumerate(raw_outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidInput(f"outputs[{j}] must be an object with a 'name'")
        outputs.append(out["name"])
        oparams = out.get("parameters") or {}
        if isinstance(oparams, dict) and oparams.get("classification"):
            raise InvalidInput("the classification extension is not supported; request the raw output")
        flag = oparams.get("binary_data") if isinstance(oparams, dict) else None
        if flag or (flag is None and binary_all):
            binary_outputs.add(out["name"])
    return outputs, binary_outputs


def encode_response(
    model: LoadedModel, results: Mapping[str, np.ndarray], binary: set[str], rid: str | None
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length for HEADER."""
    outs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in results.items():
        datatype = NUMPY_TO_V2.get(arr.dtype)
        if datatype is None:
            raise TypeError(f"output {name!r} has dtype {arr.dtype}, which v2 cannot carry")
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary:
            blob = encode_bytes_tensor(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = jsonio.tensor_list(arr.ravel())
        outs.append(entry)
    doc: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version), "outputs": outs}
    if rid is not None:
        doc["id"] = rid
    head = jsonio.dumps(doc)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def metadata(model: LoadedModel, versions: Sequence[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [s.as_dict() for s in model.inputs],
        "outputs": [s.as_dict() for s in model.outputs],
    }
