"""How a model version's requests may be joined: decided once per version, in its worker thread, the first time
it is asked for.

The artifact is read where the model cache keeps it, the path its loader recorded in `model.metadata["artifact"]`
(`<cache_dir>/sha256/<bundle>/model.onnx`, the bundle being the artifact's sha256, or for a version with external
data the sha256 of its whole file set; see `modelfn.registry.loader.cached_path` and `bundle_id`), and checked
against the sha256 again. If its bytes name none of the batch-dependent op types (`rewrite.BATCH_SENSITIVE`:
dynamic quantization ops, MeanVarianceNormalization) its requests are joined as they are; if they do, the
per-request quantization rewrite (`rewrite.py`) is tried and verified bit-exact against single runs; if the
artifact cannot be read, nothing is joined. A model whose graph mixes the rows of a batch in some other way (an
explicit reduction over the batch axis) must not be joined: set `{"<model>": {"batching": false}}` in
MODELFN_MODELS_CONFIG. fp32 models are joined as they are; their joined results can differ from single runs in
the last bits (a GEMM's blocking depends on the row count).

The rewritten graph gets a session of its own, with the same options as the model's (no spin-waiting on servers:
its pool threads would otherwise take the CPUs the event loop needs to decode the next batch while one runs).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfn.batching.rewrite import BATCH_SENSITIVE, SEGMENTS, segment_graph
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import session_options
from modelfn.settings import Settings

log = logging.getLogger("modelfn")


@dataclass
class Plan:
    """`join`: run joined batches with the model's own session; `segments`: with `session`, the rewritten
    per-request-quantization graph; `alone`: never join (the reason says why)."""

    mode: str
    reason: str = ""
    session: Any = None

    def describe(self) -> dict[str, str]:
        return {"mode": self.mode, "reason": self.reason} if self.reason else {"mode": self.mode}


def cached_artifact(settings: Settings) -> Callable[[LoadedModel], Path | None]:
    """Where the model cache keeps a model's verified artifact: the path its loader recorded, else (a model built
    by hand from a cached one) the disk cache's folder for an artifact without external data."""
    from modelfn.registry.loader import cached_path

    def locate(model: LoadedModel) -> Path | None:
        recorded = model.metadata.get("artifact")
        if isinstance(recorded, str):
            path = Path(recorded)
        elif model.sha256:
            path = cached_path(settings.for_model(model.name).cache_dir, model.sha256)
        else:
            return None
        return path if path.exists() else None

    return locate


def make_plan(model: LoadedModel, artifact: Path | None, settings: Settings) -> Plan:
    """Decide how this model version's requests may be joined (runs once per version, in its worker thread)."""
    if artifact is None:
        return Plan("alone", "the artifact is not available to inspect, so rows are never mixed")
    try:
        data = artifact.read_bytes()
    except OSError as e:
        return Plan("alone", f"cannot read the artifact: {e}")
    if model.sha256 and hashlib.sha256(data).hexdigest() != model.sha256:
        return Plan("alone", "the cached artifact no longer matches the model's sha256")
    if not any(token in data for token in BATCH_SENSITIVE):
        return Plan("join")
    try:
        rewritten = segment_graph(data)
    except ImportError:
        return Plan("alone", "dynamic quantization: per-request batching needs the onnx package")
    except Exception as e:  # a graph onnx cannot parse or rewrite is simply not joined
        return Plan("alone", f"dynamic quantization: graph rewrite failed: {type(e).__name__}: {e}")
    if rewritten is None:
        return Plan("alone", "batch-dependent ops this batcher cannot make per-request")
    return _segments_plan(model, rewritten, settings)


def _segments_plan(model: LoadedModel, rewritten: bytes, settings: Settings) -> Plan:
    """A session on the rewritten graph, used only once it is verified bit-exact against single runs."""
    try:
        import onnxruntime as ort

        opts = session_options(settings.for_model(model.name))  # no spin-waiting on servers (model/onnx.py)
        session = ort.InferenceSession(rewritten, sess_options=opts, providers=model.providers or None)
    except Exception as e:
        return Plan("alone", f"dynamic quantization: the per-request graph does not load: {e}")
    problem = verify_segments(model, session)
    if problem:
        log.warning("model %r version %d is not joined: %s", model.name, model.version, problem)
        return Plan("alone", f"dynamic quantization: {problem}")
    return Plan("segments", "dynamic quantization: activations quantized per request (verified bit-exact)", session)


def verify_segments(model: LoadedModel, session: Any, seed: int = 0) -> str | None:
    """Run random requests of several row counts and ranges joined (segment graph) and alone (the model's own
    session); None when every output is bit-identical, else what differs."""
    rng = np.random.default_rng(seed)
    for spec in model.inputs:
        if spec.dtype.kind != "f":
            return f"cannot verify with a non-float input ({spec.describe()})"
    names = model.output_names
    layouts = [[1, 2, 1, 3, 1, 1], [1] * 7, [4], [2, 2]]
    scales = [1.0, 100.0, 0.01, 0.0, 10.0, 3.0, 0.5]
    for layout in layouts:
        parts: list[dict[str, np.ndarray]] = []
        for i, rows in enumerate(layout):
            scale = scales[i % len(scales)]
            parts.append(
                {
                    s.name: (rng.standard_normal((rows, *[3 if d == -1 else d for d in s.shape[1:]])) * scale).astype(
                        s.dtype
                    )
                    for s in model.inputs
                }
            )
        feed = {s.name: np.concatenate([p[s.name] for p in parts]) for s in model.inputs}
        feed[SEGMENTS] = np.repeat(np.arange(len(layout), dtype=np.int64), layout)
        try:
            joined = session.run(names, feed)
            alone = [model.session.run(names, p) for p in parts]
        except Exception as e:
            return f"verification run failed: {type(e).__name__}: {e}"
        for j, name in enumerate(names):
            expected = np.concatenate([a[j] for a in alone])
            if expected.shape != joined[j].shape or not np.array_equal(expected, joined[j], equal_nan=True):
                return f"output {name!r} of a joined batch differs from single runs (layout {layout})"
    return None
