"""TensorFlow Serving's gRPC `PredictionService.Predict` in and out of the same v2 request the Open Inference
Protocol's ModelInfer makes (translate.py): a `PredictRequest`'s TensorProtos become v2 inputs (`tensor_content` as
binary data as it is, typed `*_val` fields through `typed_values`, so an out-of-range INT8 in `int_val` is refused
like a JSON one), `output_filter` the outputs asked for; the answer's raw outputs become TensorProtos
(`tensor_content`, or `string_val` for strings). Version numbers and labels are TF Serving's `model_spec`."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfn.adapters.grpc import oip_pb2 as pb
from modelfn.adapters.grpc import tfs_pb2 as tfs
from modelfn.adapters.grpc.translate import Content, model_path, typed_values
from modelfn.errors import InvalidInput
from modelfn.model.signature import V2_TO_TF
from modelfn.protocols import v2
from modelfn.protocols.sizes import SizeLimits
from modelfn.protocols.tfserving import SIGNATURE

TF_TO_V2 = {tf: datatype for datatype, tf in V2_TO_TF.items()}
TYPED: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_val", np.dtype(np.bool_)),
    "INT8": ("int_val", np.dtype("<i4")),
    "INT16": ("int_val", np.dtype("<i4")),
    "INT32": ("int_val", np.dtype("<i4")),
    "UINT8": ("int_val", np.dtype("<i4")),
    "UINT16": ("int_val", np.dtype("<i4")),
    "INT64": ("int64_val", np.dtype("<i8")),
    "UINT32": ("uint32_val", np.dtype("<u4")),
    "UINT64": ("uint64_val", np.dtype("<u8")),
    "FP32": ("float_val", np.dtype("<f4")),
    "FP64": ("double_val", np.dtype("<f8")),
    "BYTES": ("string_val", np.dtype(np.object_)),
}
"""Each datatype's typed field in a TensorProto and the type its values have there (FP16: `half_val`, below)."""

Input = tuple[str, str, list[int], Content]


def predict_request(req: tfs.PredictRequest, limits: SizeLimits) -> tuple[str, list[Input], list[dict[str, Any]]]:
    """The model's v2 path, its inputs and the outputs asked for."""
    spec = req.model_spec
    if spec.signature_name not in ("", SIGNATURE):
        raise InvalidInput(f"signature_name {spec.signature_name!r} not found; this model has {SIGNATURE!r}")
    kind = spec.WhichOneof("version_choice")
    version = str(spec.version.value) if kind == "version" else spec.version_label if kind == "version_label" else ""
    typed = (getattr(t, TYPED[d][0]) for t in req.inputs.values() if (d := _datatype(t, "")) in TYPED)
    limits.check_elements(sum(len(values) for values in typed) + sum(len(t.half_val) for t in req.inputs.values()))
    inputs = [_input(name, tensor) for name, tensor in req.inputs.items()]
    return model_path(spec.name, version), inputs, [{"name": n} for n in req.output_filter]


def _datatype(tensor: tfs.TensorProto, where: str) -> str:
    name = tfs.DataType.Name(tensor.dtype) if tensor.dtype in tfs.DataType.values() else str(tensor.dtype)
    datatype = TF_TO_V2.get(name)
    if datatype is None and where:
        raise InvalidInput(f"{where}: dtype {name} is not one modelfn serves ({', '.join(sorted(TF_TO_V2))})")
    return datatype or ""


def _input(name: str, tensor: tfs.TensorProto) -> Input:
    where = f"input {name!r}"
    datatype = _datatype(tensor, where)
    if tensor.tensor_shape.unknown_rank:
        raise InvalidInput(f"{where}: a tensor of unknown rank cannot be served; give its shape")
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        if datatype == "BYTES":
            raise InvalidInput(f"{where}: DT_STRING values go in string_val, not tensor_content")
        return name, datatype, shape, tensor.tensor_content
    if datatype == "FP16":
        bits = np.array(tensor.half_val, dtype="<i4")
        if ((bits < 0) | (bits > 0xFFFF)).any():
            raise InvalidInput(f"{where}: half_val holds a value that is not a 16-bit pattern")
        return name, datatype, shape, bits.astype("<u2").tobytes()
    field, dtype = TYPED[datatype]
    return name, datatype, shape, typed_values(datatype, getattr(tensor, field), dtype)


def predict_response(answer: pb.ModelInferResponse) -> tfs.PredictResponse:
    """The v2 answer as TF Serving's: numbers in `tensor_content`, strings in `string_val`."""
    out = tfs.PredictResponse()
    out.model_spec.name = answer.model_name
    out.model_spec.version.value = int(answer.model_version)
    out.model_spec.signature_name = SIGNATURE
    for tensor, blob in zip(answer.outputs, answer.raw_output_contents, strict=True):
        proto = out.outputs[tensor.name]
        proto.dtype = tfs.DataType.Value(V2_TO_TF[tensor.datatype])
        proto.tensor_shape.dim.extend(tfs.TensorShapeProto.Dim(size=d) for d in tensor.shape)
        if tensor.datatype == "BYTES":
            strings = v2.decode_bytes_tensor(blob, f"output {tensor.name!r}").tolist()
            proto.string_val.extend(s.encode("utf-8") for s in strings)
        else:
            proto.tensor_content = blob
    return out
