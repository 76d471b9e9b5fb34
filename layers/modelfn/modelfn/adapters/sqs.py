"""SQS batches with Powertools' BatchProcessor: each failing message is reported by id (ReportBatchItemFailures),
logged with its reason, and never takes the rest of the batch with it. Results are keyed by message id, so a
redelivery overwrites.

A message body is parsed once: it is the request itself, or `{"request_uri": "s3://bucket/key"}` naming one too
large for SQS, which is read only from S3 under the configured requests prefix and only up to the body limit (a
message must never make the function read its own files or another bucket). The parsed request is then sniffed
and decoded as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelNotFound, PayloadTooLarge
from modelfn.model.loaded import LoadedModel
from modelfn.protocols.sniff import protocol_of
from modelfn.service.dataplane import DataPlane
from modelfn.service.request import Request, Response
from modelfn.settings import Settings
from modelfn.store import ObjectStore, open_store
from modelfn.telemetry.failures import log_failure, reason_of

SQS_ROUTE = "sqs"
"""The `route` of an answered SQS message, for observers (capture records, statistics)."""
Observe = Callable[[Request, Response, float], Response]

S3 = "s3://"
POINTER_KEYS = frozenset({"request_uri", "id"})
MAX_URI = len(S3) + 63 + 1 + 1024  # bucket names are at most 63 characters, keys at most 1024 bytes


@dataclass(frozen=True)
class RequestSource:
    """Where a message's `request_uri` may point, and how much of it is read: s3:// objects in `bucket` whose key
    starts with the whole path segments of `prefix` ('' is the whole bucket), at most `limit` bytes. Without a
    bucket every request_uri is refused, `disabled` saying why."""

    bucket: str | None
    prefix: str
    limit: int
    disabled: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestSource:
        """MODELFN_REQUESTS_PREFIX, else MODELFN_RESULTS; MODELFN_MAX_BODY_BYTES bounds what is read."""
        where = settings.requests_prefix or settings.results
        limit = settings.max_body_bytes
        if not where:
            return cls(None, "", limit, "no requests prefix is set (MODELFN_REQUESTS_PREFIX, else MODELFN_RESULTS)")
        bucket, _, prefix = where.removeprefix(S3).partition("/")
        prefix = prefix.strip("/")
        if not where.startswith(S3) or not bucket or (prefix and _bad_segment(prefix)):
            return cls(None, "", limit, f"the requests prefix {where!r} is not an s3://bucket[/prefix]")
        return cls(bucket, prefix, limit)

    @property
    def uri(self) -> str:
        return f"{S3}{self.bucket}/{self.prefix}/" if self.prefix else f"{S3}{self.bucket}/"

    def key_of(self, uri: Any) -> str:
        """The object key `uri` names, if it lies under this source; InvalidInput saying why not otherwise. The
        comparison is on the literal bucket and whole key segments, so `s3://b/req` admits `s3://b/req/x` but
        not `s3://b/requests-evil/x`, and no key with an empty, '.' or '..' segment is read."""
        if not isinstance(uri, str):
            raise InvalidInput(f"request_uri must be a string, not {type(uri).__name__}")
        if len(uri) > MAX_URI:
            raise InvalidInput(f"request_uri is {len(uri)} characters long; S3 keys are at most 1024 bytes")
        if self.bucket is None:
            raise InvalidInput(f"request_uri {uri!r} is not followed: {self.disabled}")
        if not uri.startswith(S3):
            raise InvalidInput(f"request_uri {uri!r} is refused: only s3:// objects under {self.uri} are read")
        bucket, _, key = uri.removeprefix(S3).partition("/")
        if _bad_segment(key):
            raise InvalidInput(f"request_uri {uri!r} does not name an object: empty, '.' or '..' path segment")
        if bucket != self.bucket or not key.startswith(f"{self.prefix}/" if self.prefix else ""):
            raise InvalidInput(f"request_uri {uri!r} is outside {self.uri}, the only place requests are read from")
        return key

    def read(self, uri: Any) -> bytes:
        """The object's bytes; PayloadTooLarge past the limit, found by reading at most limit + 1 bytes of it."""
        key = self.key_of(uri)
        try:
            with self.store.open_reader(key) as stream:
                data = stream.read(self.limit + 1)
        except ModelNotFound as e:
            raise InvalidInput(f"request_uri {uri!r} does not exist") from e
        if len(data) > self.limit:
            raise PayloadTooLarge(
                f"request_uri {uri!r} is over the limit of {self.limit} bytes (MODELFN_MAX_BODY_BYTES)"
            )
        return data

    @property
    def store(self) -> ObjectStore:
        return open_store(f"{S3}{self.bucket}")

    def parse(self, body: str) -> Any:
        """A message body parsed once: the request it holds, or the one its request_uri names, parsed."""
        doc = jsonio.loads(body, "message body")
        if not isinstance(doc, dict) or "request_uri" not in doc:
            return doc
        if not set(doc) <= POINTER_KEYS:
            extra = sorted(set(doc) - POINTER_KEYS)[:5]
            raise InvalidInput(f"a message with request_uri holds nothing else (besides 'id'); it also has {extra}")
        return jsonio.loads(self.read(doc["request_uri"]), "the request at request_uri")


def _bad_segment(path: str) -> bool:
    """True when a '/'-separated key is empty or has an empty, '.' or '..' segment."""
    return any(part in ("", ".", "..") for part in path.split("/"))


def respond(plane: DataPlane, model: LoadedModel, request: Any) -> Response:
    """The answer that the parsed request's protocol defines, from the data plane every transport uses: a v2
    response, or TF Serving's `predictions` / `outputs` (with the request's `id` when it has one)."""
    kind = protocol_of(request)
    if kind == "plain":
        raise InvalidInput("an SQS message is a v2 or TF Serving request; {'features': ...} is for POST /predict only")
    answer = plane.run(kind, model, Request("POST", "sqs"), parsed=request)
    if kind == "tf" and request.get("id") is not None:  # appended to the answer object, not parsed again
        answer.body = answer.body[:-1] + b',"id":' + jsonio.dumps(request["id"]) + b"}"
    answer.route = SQS_ROUTE
    return answer


class SqsHandler:
    def __init__(
        self,
        plane: DataPlane,
        model: Callable[[], LoadedModel],
        results: Callable[[], ObjectStore],
        name: str,
        requests: RequestSource,
        observe: Observe | None = None,
    ) -> None:
        """`observe`: the service's observers (Service._observed), told of each answered message as of a request."""
        self.plane = plane
        self.model = model
        self.results = results
        self.name = name
        self.requests = requests
        self.observe = observe

    def record(self, record: SQSRecord) -> str:
        """One message: its answer written to <results>/<model>/<messageId>.json, whose key is returned. A
        failure is logged and raised, so the processor reports this message alone."""
        version: int | None = None
        started = perf_counter()
        try:
            model = self.model()
            version = model.version
            answer = respond(self.plane, model, self.requests.parse(record.body))
            key = f"{self.name}/{record.message_id}.json"
            self.results().write_bytes(key, answer.body)
        except Exception as e:
            reason, status = reason_of(e)
            log_failure("sqs_message_failed", self.name, version, reason, messageId=record.message_id, status=status)
            raise
        if self.observe is not None:  # capture and statistics see SQS answers as they see HTTP ones
            self.observe(Request("POST", SQS_ROUTE, headers={"x-request-id": record.message_id}), answer, started)
        return key

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return dict(process_partial_response(event, self.record, processor, context))
