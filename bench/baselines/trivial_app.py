"""The core's limit for the HTTP side: a raw ASGI app that reads the whole body and answers a fixed JSON document,
nothing else (no routing, no parsing, no model). Served by granian or uvicorn as `bench.baselines.trivial_app:app`;
whatever a model server does beyond this is its own cost."""

from __future__ import annotations

from typing import Any

BODY = b'{"predictions":[{"logits":[0.0],"probabilities":[1.0]}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
