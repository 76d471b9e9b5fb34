"""KServe's Python model server (kserve==0.21.0, in bench/.peers/kserve) serving the int8 MLP with onnxruntime:
a `kserve.Model` answering KServe v2 JSON, as KServe's custom-model guide writes one; one worker.

    python peer_kserve.py --http_port PORT --model PATH"""

from __future__ import annotations

import argparse
from typing import Any

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class MLP(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        logits, probabilities = self.session.run(None, {"input": x})
        outputs = []
        for name, value in (("logits", logits), ("probabilities", probabilities)):
            out = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.http_port, workers=1, enable_grpc=False).start([MLP("mlp", args.model)])
