"""ASGI: a scope, its body and the service's answer; nothing else. `modelfn serve` and the container run this
app under uvicorn; every route is the service's (the route table), so no framework sits in the request path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import SimpleNamespace

from modelfn.errors import ModelfnError
from modelfn.service.dispatch import Service
from modelfn.service.request import Request, Response, declared_length, error_response, too_large
from modelfn.types import Receive, Scope, Send

log = logging.getLogger("modelfn")
Observer = Callable[[Response, float], None]
"""Called once per answered request with the response and the seconds since it arrived (request metrics)."""
DISCONNECTED = 499


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes | None:
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
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_response(send: Send, response: Response) -> None:
    raw = [(b"content-length", str(len(response.body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": raw})
    await send({"type": "http.response.body", "body": response.body})


class AsgiApp:
    def __init__(self, service: Service, observe: Observer | None = None) -> None:
        self.service = service
        self.observe = observe
        self.limit = service.registry.settings.max_body_bytes
        self.state = SimpleNamespace(service=service, registry=service.registry, batcher=service.batcher)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        headers = {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await read_body(receive, headers, self.limit)
        except ModelfnError as e:
            response = error_response(e)
        else:
            if body is None:  # nobody to answer; counted as nginx counts it
                self._observe(Response(DISCONNECTED, b""), started)
                return
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            response = await self.service.handle_async(Request(scope["method"], scope["path"], query, headers, body))
        await send_response(send, response)
        self._observe(response, started)

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
