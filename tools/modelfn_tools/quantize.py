"""int8 dynamic quantization with onnxruntime.quantization (weights int8, activations quantized at run time)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from modelfn.errors import PublishError

SCHEMES = ("int8", "uint8")
INLINE_LIMIT = 1536 * 1024 * 1024
"""A model (graph and external data together) under this is quantized as one in-memory file: onnxruntime's
pre-processing cannot follow external data through its temporary folder, and protobuf caps one file at 2 GiB.
A larger one skips pre-processing and keeps its weights in external data (`OUT.data` beside `OUT`)."""


def _source(src: Path, tmp: Path) -> tuple[Path, int, bool]:
    """The file to quantize, the source's size with its external data, and whether it is too large for one file.
    A model with external data is first rewritten as one file (the external data files are checked to lie in its
    folder, as publish checks them)."""
    import onnx

    from modelfn_tools.publish import external_data, load_proto

    try:
        files = external_data(src, load_proto(src))
    except PublishError as e:
        raise PublishError(f"could not quantize {src}: {e.message}") from e
    size = src.stat().st_size + sum(f.source.stat().st_size for f in files)
    if size >= INLINE_LIMIT or not files:
        return src, size, size >= INLINE_LIMIT
    inlined = tmp / "inlined.onnx"
    onnx.save_model(onnx.load(str(src)), str(inlined))
    return inlined, size, False


def quantize(src: Path, dest: Path, scheme: str = "int8", per_channel: bool = False) -> dict[str, Any]:
    """Write a dynamically quantized copy of src to dest and return the manifest's `quantization` record."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in SCHEMES:
        raise PublishError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
    weight_type = QuantType.QInt8 if scheme == "int8" else QuantType.QUInt8
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source, source_size, large = _source(src, Path(tmp))
        if not large:
            prepared = Path(tmp) / "prepared.onnx"
            try:  # shape inference + graph optimisation make more nodes quantizable; optional for odd graphs
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                source = prepared
            except Exception:
                pass
        try:
            quantize_dynamic(
                str(source),
                str(dest),
                weight_type=weight_type,
                per_channel=per_channel,
                use_external_data_format=large,
            )
        except Exception as e:
            raise PublishError(f"could not quantize {src}: {e}") from e
    return {
        "method": "dynamic",
        "weight_type": scheme,
        "activation_type": "uint8 (dynamic)",
        "per_channel": per_channel,
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "source_size_bytes": source_size,
    }
