"""S3 ObjectCreated batch scoring, and Step Functions Distributed Map item batches for files too large for one
invocation. Both go through the same RowScorer. A file that cannot be scored as a whole is reported in the
handler's answer and logged, never raised: Lambda would retry it forever."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.scoring import ERRORS_SUFFIX, RowScorer, score_object
from modelfn.scoring.records import RowBuilder
from modelfn.store import ObjectStore, open_store
from modelfn.store.s3 import S3Store
from modelfn.telemetry.failures import log_failure

log = logging.getLogger("modelfn")


class S3Handler:
    def __init__(
        self, model: Callable[[], LoadedModel], results: Callable[[], ObjectStore], name: str, input_prefix: str
    ) -> None:
        self.model = model
        self.results = results
        self.name = name
        self.prefix = input_prefix

    def target(self, bucket: str, key: str) -> str | None:
        """Where a key's results go, or None for keys this function must not score: outside its input prefix, or
        its own outputs (under the results location, or an errors file), so the function never triggers itself
        even if MODELFN_RESULTS is configured inside the input prefix."""
        if not key.startswith(self.prefix) or key.endswith(ERRORS_SUFFIX) or key.endswith("/"):
            return None
        results = self.results()
        if (
            isinstance(results, S3Store)
            and results.bucket == bucket
            and (not results.prefix or key.startswith(results.prefix + "/"))
        ):
            return None
        return f"{self.name}/{key[len(self.prefix) :]}"

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        done = []
        for record in event["Records"]:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(record["s3"]["object"]["key"])
            dest_key = self.target(bucket, key)
            if dest_key is None:
                log.warning("skipping s3://%s/%s: not an input of this function (prefix %r)", bucket, key, self.prefix)
                done.append({"input": f"s3://{bucket}/{key}", "skipped": True})
                continue
            model = self.model()
            try:
                stats = score_object(model, open_store(f"s3://{bucket}"), key, self.results(), dest_key)
            except InvalidInput as e:  # the file as a whole cannot be scored: retrying will not help
                where = f"s3://{bucket}/{key}"
                log_failure("file_not_scored", model.name, model.version, e.message, logging.ERROR, input=where)
                done.append({"input": f"s3://{bucket}/{key}", "error": e.message})
                continue
            done.append(stats.summary())
        return {"results": done}


def score_items(model: LoadedModel, event: dict[str, Any]) -> dict[str, Any]:
    """A Distributed Map item batch: Items are CSV rows as objects (header -> text), matched to the model's inputs
    as a file's columns are (`modelfn.scoring.layout`); where the names are not known, the features are the
    non-id columns, in BatchInput.columns order if given, else in the order of the first item's keys."""
    items = event["Items"]
    batch_input = event.get("BatchInput") or {}
    scorer = RowScorer(model)
    first = items[0] if items and isinstance(items[0], dict) else {}
    rows = RowBuilder(scorer.layout, text=True, keys=batch_input.get("columns") or list(first))
    for i, item in enumerate(items, start=1):
        if isinstance(item, dict):
            rows.add(i, item)
        else:
            rows.fail(i, "item is not an object")
    chunk = rows.chunk()
    good, cols, errors = scorer.score(chunk)
    has_id = any(isinstance(it, dict) and "id" in it for it in items)
    lists = {k: v.tolist() for k, v in cols.items()}
    scored = []
    for j, i in enumerate(good):
        row: dict[str, Any] = {"id": chunk.ids[i]} if has_id else {}
        row.update({k: v[j] for k, v in lists.items()})
        scored.append(row)
    for e in errors:
        e["item"] = e.pop("row")
    return {"scored": scored, "errors": errors, "source": {k: batch_input.get(k) for k in ("bucket", "key")}}
