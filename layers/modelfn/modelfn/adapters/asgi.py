"""The server side of the inference fast path (modelfn/fastpath.py): a pure ASGI middleware in front of the
FastAPI app that answers v2 infer, TF :predict and /predict itself, skipping routing, dependency solving and
Request objects. Everything else passes through to the app. Not installed when dynamic batching is on (the
batching handlers live in the app)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from types import SimpleNamespace
from typing import Any

from starlette.concurrency import run_in_threadpool

from modelfn.fastpath import FastPath, error_answer, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FastInference:
    def __init__(self, app: ASGIApp, fast: FastPath) -> None:
        self.app = app
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        route = self.fast.route("POST", scope["path"], scope["query_string"].decode("latin-1"), headers)
        if route is None:
            await self.app(scope, receive, send)
            return
        # what Starlette's router would leave in the scope, for middlewares outside this one (request metrics)
        scope["route"] = SimpleNamespace(path=route.template)
        scope["path_params"] = route.params
        try:
            body = await self._body(receive, headers)
        except Exception as e:
            await self._send(send, *error_answer(e))
            return
        if self.fast.is_quick(route, len(body)):
            answer = self.fast.answer(route, body, headers)
        else:
            answer = await run_in_threadpool(self.fast.answer, route, body, headers)
        await self._send(send, *answer)

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        """The whole body, refused with 413 as soon as it is known to be over the limit (declared or streamed)."""
        limit = self.fast.limit
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _send(send: Send, status: int, content: bytes, headers: dict[str, str]) -> None:
        raw = [(b"content-length", str(len(content)).encode())]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})
