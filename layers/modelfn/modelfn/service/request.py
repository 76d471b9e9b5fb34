"""The service's request and response, transport-neutral, and the one place a body is size-checked and inflated.

Adapters (Lambda events, ASGI, SageMaker /invocations) build a `Request` from what they received and turn the
`Response` back into their own shape; nothing else about a request is read anywhere but in the service."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError, PayloadTooLarge

log = logging.getLogger("modelfn")
JSON = "application/json"
VERSION_HEADER = "modelfn-version"
"""Every inference response names the integer version that actually served it."""
CACHE_HEADER = "modelfn-cache"
"""`hit` or `miss` on inference responses while the response cache is on."""


@dataclass(slots=True)
class Request:
    """One HTTP-shaped request. `headers` keys are lower case; `body` is as received (maybe compressed)."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str | None = None
    """The client's address when the transport knows it (rate limits without API keys are per address)."""

    def query_param(self, name: str) -> str | None:
        """The last value of a query parameter, percent-decoded (`?model=a%26b` is the model `a&b`)."""
        if not self.query:
            return None
        value = None
        for k, v in parse_qsl(self.query, keep_blank_values=True):
            if k == name:
                value = v
        return value


@dataclass(slots=True)
class InferenceRecord:
    """What an inference ran, kept on its response for the observers (capture, statistics, shadow): the decoded
    inputs, the model's results and how long `predict` took. References only: building it copies nothing."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    predict_seconds: float
    sha256: str = ""
    """The served version's content digest (model and external data files)."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": JSON})
    model: str | None = None
    """The served model that answered (a name the registry knows, never raw client input): for metrics labels."""
    version: int | None = None
    """The version that answered, when one did."""
    route: str | None = None
    """The matched route's template (`/v2/models/{name}/infer`), for metrics labels."""
    record: InferenceRecord | None = None
    """Set on an inference's 200: what ran (see Service.observers)."""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, jsonio.dumps(obj), {"content-type": JSON, **(headers or {})})


class Refused(ModelfnError):
    """A request turned away before it ran (401, 408, 429, 503 busy), with the headers the client acts on
    (WWW-Authenticate, Retry-After). Not logged: refusals come in floods and say nothing new."""

    def __init__(self, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.headers = dict(headers)


def error_response(e: BaseException) -> Response:
    """`{"error": ...}` with the error's own status; anything unexpected is a 500 that names only its type."""
    if isinstance(e, Refused):
        return json_response({"error": e.message}, e.status, e.headers)
    if isinstance(e, ModelfnError):
        if e.status >= 500:
            log.warning("%s", e.message)
        return json_response({"error": e.message}, e.status)
    log.error("unhandled error", exc_info=e)
    return json_response({"error": f"internal error ({type(e).__name__})"}, 500)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes (MODELFN_MAX_BODY_BYTES)")


def declared_length(headers: Mapping[str, str], limit: int) -> int | None:
    """The Content-Length a client declared, refused when malformed (400) or over the limit (413) before any
    byte of the body is read."""
    declared = headers.get("content-length")
    if declared is None:
        return None
    if not declared.strip().isdigit():
        raise InvalidInput(f"invalid Content-Length {declared!r}")
    length = int(declared)
    if length > limit:
        raise too_large(limit)
    return length


IDENTITY = ("", "identity")


def content_encoding(headers: Mapping[str, str]) -> str:
    """The request's Content-Encoding, normalized ("" when none)."""
    return headers.get("content-encoding", "").strip().lower()


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body under its Content-Encoding (gzip or deflate, as tritonclient offers), inflated only up to `limit`
    bytes: a small compressed body cannot expand past the size limit in memory. A stream that is truncated or
    followed by trailing bytes is refused, not half-read."""
    encoding = encoding.strip().lower()
    if encoding in IDENTITY:
        if len(body) > limit:
            raise too_large(limit)
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidInput(f"body is not valid {encoding} data: {e}") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput(f"body is not valid {encoding} data: truncated, or followed by trailing bytes")
    return out


def request_body(request: Request, limit: int) -> bytes:
    """The request's body, inflated and within the limit: what every codec reads."""
    body = request.body
    if "content-encoding" not in request.headers and len(body) <= limit:  # the common case, without two calls
        return body
    return decompress(body, content_encoding(request.headers), limit)
