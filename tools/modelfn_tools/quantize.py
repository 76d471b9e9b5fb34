"""int8 dynamic quantization with onnxruntime.quantization (weights int8, activations quantized at run time)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from modelfn.errors import PublishError

SCHEMES = ("int8", "uint8")


def quantize(src: Path, dest: Path, scheme: str = "int8", per_channel: bool = False) -> dict[str, Any]:
    """Write a dynamically quantized copy of src to dest and return the manifest's `quantization` record."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in SCHEMES:
        raise PublishError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
    weight_type = QuantType.QInt8 if scheme == "int8" else QuantType.QUInt8
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference + graph optimisation make more nodes quantizable; optional for odd graphs
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            source = prepared
        except Exception:
            source = src
        try:
            quantize_dynamic(str(source), str(dest), weight_type=weight_type, per_channel=per_channel)
        except Exception as e:
            raise PublishError(f"could not quantize {src}: {e}") from e
    return {
        "method": "dynamic",
        "weight_type": scheme,
        "activation_type": "uint8 (dynamic)",
        "per_channel": per_channel,
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "source_size_bytes": src.stat().st_size,
    }
