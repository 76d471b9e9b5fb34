"""One structured line per failure, the same for a failed request, an SQS message and a batch row: the logger
"modelfn", its message the JSON object `{"event", "model", "version", "reason", ...}`, which reads as is on a
server's console and which CloudWatch Logs Insights parses into fields; the same fields go as the record's
`extra`, which JSON formatters (Lambda's, telemetry/logs.py) and caplog read. Refusals (401, 403, 408, 429) are
not logged: they come in floods and say nothing new."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelfn import jsonio
from modelfn.errors import ModelfnError
from modelfn.service.request import Request, Response
from modelfn.service.stats import REFUSED
from modelfn.telemetry.observers import Attribution, ResponseObserver

if TYPE_CHECKING:
    from modelfn.service.dataplane import DataPlane
    from modelfn.service.routes import RouteTable

log = logging.getLogger("modelfn")
MAX_REASON = 1000
"""A reason is cut to this many characters (an error message may quote a client's value)."""


def log_failure(
    event: str, model: str | None, version: int | None, reason: str, level: int | None = None, **fields: Any
) -> None:
    """The one failure line: `event` names what failed (request_failed, sqs_message_failed, row_not_scored...);
    `fields` add its identity (route and status, messageId, input and row). `level`: ERROR for a 5xx status,
    else WARNING, unless given."""
    doc: dict[str, Any] = {"event": event, "model": model, "version": version, "reason": reason[:MAX_REASON]}
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}  # a model or version not known is left out
    if level is None:
        level = logging.ERROR if int(fields.get("status") or 0) >= 500 else logging.WARNING
    log.log(level, "%s", jsonio.dumps(doc).decode(), extra=doc)


def reason_of(error: BaseException) -> tuple[str, int]:
    """An exception's message and HTTP status, as error_response answers it."""
    if isinstance(error, ModelfnError):
        return error.message, error.status
    return f"{type(error).__name__}: {error}", 500


class FailedRequests(ResponseObserver):
    """The Service observer that logs each failed request (status 400 and up, refusals aside) once, with the model
    and version it ran or would have run, its route template, status and the error it was answered."""

    def __init__(self, table: RouteTable, plane: DataPlane) -> None:
        self.attribute = Attribution(table, plane)

    def __call__(self, request: Request, response: Response, seconds: float) -> None:
        if response.status >= 400:  # a success costs one comparison, not the once-only bookkeeping and a call
            super().__call__(request, response, seconds)

    def observe(self, request: Request, response: Response, seconds: float) -> None:
        if response.status < 400 or response.status in REFUSED:
            return
        model, version = self.attribute(request, response)
        log_failure(
            "request_failed",
            model,
            version,
            _error(response.body),
            route=response.route,
            status=response.status,
            latency_ms=round(seconds * 1000, 3),
        )


def _error(body: bytes) -> str:
    """The `error` of a JSON error body (what the client was told)."""
    try:
        doc = jsonio.loads(body, "error body")
    except ModelfnError:
        return body[:MAX_REASON].decode("utf-8", errors="replace")
    return str(doc.get("error", "")) if isinstance(doc, Mapping) else str(doc)
