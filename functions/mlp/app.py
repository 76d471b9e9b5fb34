"""The MLP (256 -> 1024x3 -> 10) as a Lambda function; /predict adds the top class to each row."""

from __future__ import annotations

from typing import Any

from modelfn import LoadedModel, ModelFunction


def top_class(rows: list[dict[str, Any]], model: LoadedModel) -> list[dict[str, Any]]:
    for row in rows:
        probs = row["probabilities"]
        row["class"] = max(range(len(probs)), key=probs.__getitem__)
    return rows


fn = ModelFunction.from_env(model="mlp", postprocess=top_class)
http_handler = fn.http_handler
batch_handler = fn.batch_handler
sqs_handler = fn.sqs_handler
s3_handler = fn.s3_handler
