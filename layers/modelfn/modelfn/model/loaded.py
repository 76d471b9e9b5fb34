"""A verified, loaded model version: the one place a request's inputs are checked and the session is run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import onnxruntime as ort

from modelfn.errors import InvalidInput
from modelfn.model.signature import TensorSpec, validate_inputs


@dataclass
class LoadedModel:
    """A verified, loaded and warmed-up model version: what the HTTP, SQS and S3 paths all run."""

    name: str
    version: int
    session: ort.InferenceSession
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str = ""
    load_seconds: float = 0.0
    providers: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None
    """Names of a single [N, K] input's K columns (the manifest's `features`), for batch scoring by name."""
    content_id: str = ""
    """A digest of every file the version loaded (graph and external data): what a cached answer is keyed by."""

    @cached_property
    def output_names(self) -> list[str]:
        """Computed once: a version's signature never changes (read on every request)."""
        return [o.name for o in self.outputs]

    def predict(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Validate against the signature, run, return the requested outputs by name."""
        known = self.output_names
        if outputs:
            names = list(outputs)
            unknown = [n for n in names if n not in known]
            if unknown:
                raise InvalidInput(f"unknown output(s) {unknown}; the model has {known}")
        else:
            names = known
        feed = validate_inputs(self.inputs, inputs)
        try:
            results = self.session.run(names, feed)
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ort.capi.onnxruntime_pybind11_state.Fail) as e:
            # Shapes passed validation but the graph disagrees (e.g. a fixed inner dim hidden behind -1).
            raise InvalidInput(f"model {self.name!r} version {self.version} rejected the input: {e}") from e
        except UnicodeEncodeError as e:  # a str no UTF-8 can hold (a lone surrogate), e.g. from a preprocess hook
            strings = [s.name for s in self.inputs if s.datatype == "BYTES"]
            raise InvalidInput(f"string input(s) {strings}: a value is not encodable as UTF-8 ({e.reason})") from e
        return dict(zip(names, map(np.asarray, results), strict=True))
