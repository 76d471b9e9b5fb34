"""The seed-style app of the common tutorials: FastAPI, a pydantic body model, `async def /predict`, the session
created at import, wrapped by Mangum for Lambda (`handler`) and served by uvicorn as `bench.baselines.seed_app:app`.

Environment: MODEL_PATH (a local ONNX file)."""

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from mangum import Mangum
from pydantic import BaseModel

session = ort.InferenceSession(os.environ.get("MODEL_PATH", "model.onnx"), providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name


class PredictRequest(BaseModel):
    features: list[float]


app = FastAPI(title="MLP model API")


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, Any]:
    x = np.array([request.features], dtype=np.float32)
    logits, probabilities = session.run(None, {input_name: x})
    return {
        "predictions": [
            {
                "logits": logits[0].tolist(),
                "probabilities": probabilities[0].tolist(),
                "class": int(probabilities[0].argmax()),
            }
        ]
    }


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


handler = Mangum(app)
