"""MLServer (mlserver==1.7.1, in bench/.peers/mlserver) serving the int8 MLP with onnxruntime: a custom runtime
as MLServer's guide writes one (there is no official ONNX runtime), decoding and encoding with NumpyCodec; inference
in the main process (parallel_workers 0: on one core a pool of workers only adds hops)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxMLP(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self.session = ort.InferenceSession(str(uri), providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        logits, probabilities = self.session.run(None, {"input": x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("logits", logits),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
