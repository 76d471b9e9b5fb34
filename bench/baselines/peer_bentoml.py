"""BentoML (bentoml==1.4.40, in bench/.peers/bentoml) serving the int8 MLP with onnxruntime: a `bentoml.service`
with one API, as BentoML's quickstart writes one; one worker. `bentoml serve peer_bentoml:MLP` from this folder.

Environment: MODEL_PATH (the int8 MLP)."""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(workers=1)
class MLP:
    def __init__(self) -> None:
        self.session = ort.InferenceSession(os.environ["MODEL_PATH"], providers=["CPUExecutionProvider"])

    @bentoml.api  # type: ignore[untyped-decorator]
    async def predict(self, features: list[list[float]]) -> dict[str, Any]:
        logits, probabilities = self.session.run(None, {"input": np.asarray(features, dtype=np.float32)})
        return {
            "predictions": [
                {"logits": lo.tolist(), "probabilities": p.tolist()}
                for lo, p in zip(logits, probabilities, strict=True)
            ]
        }
