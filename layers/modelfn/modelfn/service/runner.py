"""How an inference request runs on a server's event loop: what is quick runs inline (tens of microseconds),
anything that may wait (a store round trip, a model load, a big or compressed body) runs in a worker thread, and
with dynamic batching the predict step is the batcher's. The event loop never waits on the store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

from modelfn.batching.batcher import Batcher
from modelfn.model.loaded import LoadedModel
from modelfn.service.dataplane import DataPlane, Target
from modelfn.service.request import IDENTITY, InferenceRecord, Request, Response, content_encoding
from modelfn.service.routes import Codec

T = TypeVar("T")

INLINE_BYTES = 256 * 1024
"""Uncompressed bodies up to this size for a loaded model are answered on the event loop; larger ones (and every
compressed one, whose inflated size is unknown until inflated) go to a worker thread."""


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def is_quick(request: Request) -> bool:
    return len(request.body) <= INLINE_BYTES and content_encoding(request.headers) in IDENTITY


class Runner:
    def __init__(self, plane: DataPlane, batcher: Batcher | None = None) -> None:
        self.plane = plane
        self.batcher = batcher

    async def model(self, target: Target) -> LoadedModel:
        """The loaded model from memory when its resolution is fresh; otherwise resolved and loaded in a thread."""
        model = self.plane.registry.lookup(target.name, target.version)
        if model is None:
            return await in_thread(self.plane.model, target)
        if target.routed:
            self.plane.traffic.remember(target, model.version)
        return model

    async def infer(self, codec: Codec, target: Target, request: Request, parsed: Any = None) -> Response:
        model = await self.model(target)
        plane = self.plane
        quick = is_quick(request) and (plane.cache is None or not plane.cache.blocking)
        batcher = self.batcher if self.batcher is not None and self.batcher.enabled(model.name) else None
        if batcher is None:
            if quick:
                return plane.run(codec, model, request, parsed)
            return await in_thread(plane.run, codec, model, request, parsed)
        with batcher.arriving():
            if quick:
                decoded = plane.decode(codec, model, request, parsed)
                key, hit = plane.cached(codec, model, decoded)
            else:
                decoded = await in_thread(plane.decode, codec, model, request, parsed)
                key, hit = await in_thread(plane.cached, codec, model, decoded)
        started = perf_counter()
        results = hit if hit is not None else await batcher.predict(model, decoded.inputs, decoded.outputs)
        record = InferenceRecord(decoded.inputs, results, perf_counter() - started, model.content_id or model.sha256)
        if key is not None and hit is None:
            assert plane.cache is not None
            plane.cache.put(key, results) if quick else await in_thread(plane.cache.put, key, results)
        encoded = decoded.encode(results) if quick else await in_thread(decoded.encode, results)
        return plane.answer(model, encoded, record, None if key is None else hit is not None)
