"""SQS batches with Powertools' BatchProcessor: each failing message is reported by id (ReportBatchItemFailures)
and never takes the rest of the batch with it. Results are keyed by message id, so a redelivery overwrites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.protocols.sniff import infer_json
from modelfn.store import ObjectStore, split_uri


class SqsHandler:
    def __init__(self, model: Callable[[], LoadedModel], results: Callable[[], ObjectStore], name: str) -> None:
        self.model = model
        self.results = results
        self.name = name

    def request_body(self, body: str) -> bytes:
        """The message body, or the request it points to with {"request_uri": "s3://bucket/key"} (for requests
        larger than SQS's 256 KiB)."""
        doc = jsonio.loads(body, "message body")
        if isinstance(doc, dict) and set(doc) <= {"request_uri", "id"} and "request_uri" in doc:
            try:
                store, key = split_uri(str(doc["request_uri"]))
            except ValueError as e:
                raise InvalidInput(f"request_uri: {e}") from e
            return store.read_bytes(key)
        return body.encode()

    def record(self, record: SQSRecord) -> str:
        answer = infer_json(self.model(), self.request_body(record.body))
        key = f"{self.name}/{record.message_id}.json"
        self.results().write_bytes(key, answer)
        return key

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return dict(process_partial_response(event, self.record, processor, context))
