"""A hand-written Lambda handler for the MLP: no framework. The model is fetched from S3 with get_object and its
session created at import (the init phase), as the usual hand-written handler does.

Environment: MODEL_BUCKET and MODEL_KEY (the artifact in S3), or MODEL_PATH (a local file)."""

import json
import os

import boto3
import numpy as np
import onnxruntime as ort


def load_model() -> bytes | str:
    if os.environ.get("MODEL_PATH"):
        return os.environ["MODEL_PATH"]
    s3 = boto3.client("s3")
    return s3.get_object(Bucket=os.environ["MODEL_BUCKET"], Key=os.environ["MODEL_KEY"])["Body"].read()


session = ort.InferenceSession(load_model(), providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name


def handler(event, context):
    try:
        body = json.loads(event["body"])
        x = np.asarray(body["features"], dtype=np.float32)
        if x.ndim == 1:
            x = x[np.newaxis, :]
        logits, probabilities = session.run(None, {input_name: x})
    except (KeyError, TypeError, ValueError) as e:
        return {
            "statusCode": 400,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"error": str(e)}),
        }
    predictions = [
        {"logits": lg.tolist(), "probabilities": p.tolist(), "class": int(p.argmax())}
        for lg, p in zip(logits, probabilities, strict=True)
    ]
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"predictions": predictions}),
    }
