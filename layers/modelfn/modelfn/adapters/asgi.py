"""ASGI: a scope, its body and the service's answer; nothing else. `modelfn serve` and the container run this
app under uvicorn; every route is the service's (the route table), so no framework sits in the request path.

What only a server has to guard against is here, around the body read: at most MODELFN_MAX_CONCURRENCY requests
in flight (503 at once beyond it, bodies still arriving count), admission (the service's `admit`: keys, rate)
from the headers before any body byte is read, and a deadline for the whole body (MODELFN_BODY_TIMEOUT, then
408). A request answered before its body was read gets `Connection: close`, so a slow or refused client's
connection is closed rather than left to trickle the rest of its body."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace

from modelfn.errors import ModelfnError
from modelfn.service.dispatch import Service
from modelfn.service.limits import BodyDeadline, Busy, Gate
from modelfn.service.request import Request, Response, declared_length, error_response, too_large
from modelfn.types import Receive, Scope, Send

log = logging.getLogger("modelfn")
Observer = Callable[[Response, float], None]
"""Called once per answered request with the response and the seconds since it arrived (request metrics)."""
DISCONNECTED = 499


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes | None:
    """The whole body, refused with 413 as soon as it is known to be over the limit (declared or streamed) and
    with 400 when its Content-Length is malformed; None when the client went away before sending all of it."""
    declared_length(headers, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if not message.get("more_body", False):  # usually the first message: nothing to join then
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


async def send_response(send: Send, response: Response) -> None:
    raw = [(b"content-length", str(len(response.body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": raw})
    await send({"type": "http.response.body", "body": response.body})


def _unread(response: Response, headers: Mapping[str, str]) -> Response:
    """A response sent before the request's body was read closes the connection, unless there was no body."""
    if "content-length" in headers or "transfer-encoding" in headers:
        response.headers["connection"] = "close"
    return response


class AsgiApp:
    def __init__(self, service: Service, observe: Observer | None = None) -> None:
        settings = service.registry.settings
        self.service = service
        self.observe = observe
        self.limit = settings.max_body_bytes
        self.deadline = BodyDeadline(settings.body_timeout)
        self.gate = Gate(settings.max_concurrency)
        self.state = SimpleNamespace(service=service, registry=service.registry, batcher=service.batcher)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        client = scope.get("client")
        request = Request(scope["method"], scope["path"], query, headers, b"", client[0] if client else None)
        try:
            self.gate.enter()
        except Busy as e:
            response = _unread(error_response(e), headers)
            await send_response(send, response)
            self._observe(response, started)
            return
        try:
            answered = await self._answer(request, receive)
            if answered is not None:
                await send_response(send, answered)
        finally:
            self.gate.leave()
        # a client that went away gets nothing; counted as nginx counts it
        self._observe(answered if answered is not None else Response(DISCONNECTED, b""), started)

    async def _answer(self, request: Request, receive: Receive) -> Response | None:
        """Admission from the headers, then the body under its deadline, then the service; None when the client
        went away first."""
        try:
            if self.service.guarded:
                self.service.admit(request)
            body = await self.deadline.within(read_body(receive, request.headers, self.limit))
        except ModelfnError as e:
            return _unread(error_response(e), request.headers)
        if body is None:
            return None
        request.body = body
        return await self.service.handle_async(request, admitted=True)

    def _observe(self, response: Response, started: float) -> None:
        if self.observe is not None:
            self.observe(response, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.service.batcher is not None:
                    self.service.batcher.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
