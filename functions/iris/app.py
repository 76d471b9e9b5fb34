"""The iris classifier as a Lambda function: the runtime does the work, this module adds class names.

Everything below runs in the init phase: the model is fetched, verified and loaded before the first request."""

from __future__ import annotations

from typing import Any

from modelfn import LoadedModel, ModelFunction

CLASS_NAMES = ("setosa", "versicolor", "virginica")


def add_class_names(rows: list[dict[str, Any]], model: LoadedModel) -> list[dict[str, Any]]:
    """/predict answers {"label": 2, "class": "virginica", "probabilities": [...]}."""
    for row in rows:
        row["class"] = CLASS_NAMES[int(row["label"])]
    return rows


fn = ModelFunction.from_env(model="iris", postprocess=add_class_names)
http_handler = fn.http_handler
batch_handler = fn.batch_handler
sqs_handler = fn.sqs_handler
s3_handler = fn.s3_handler
