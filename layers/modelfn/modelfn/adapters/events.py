"""Lambda entry points. Each handler kind can say whether it recognises an event (as Mangum does), so one
batch function serves SQS, S3 and Step Functions triggers and tests can feed any event in events/."""

from __future__ import annotations

from typing import Any


def is_http(event: dict[str, Any]) -> bool:
    ctx = event.get("requestContext")
    return isinstance(ctx, dict) and ("httpMethod" in event or "http" in ctx or "elb" in ctx)


def _source(event: dict[str, Any]) -> str | None:
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        return records[0].get("eventSource") or records[0].get("EventSource")
    return None


def is_sqs(event: dict[str, Any]) -> bool:
    return _source(event) == "aws:sqs"


def is_s3(event: dict[str, Any]) -> bool:
    return _source(event) == "aws:s3"


def is_item_batch(event: dict[str, Any]) -> bool:
    """A Step Functions Distributed Map item batch (ItemBatcher): {"Items": [...], "BatchInput": {...}}."""
    return isinstance(event.get("Items"), list)
