"""The app `modelfn serve` and the container run: the service over ASGI, with dynamic batching where asked, the
server routes (Prometheus /metrics, the OpenAPI UI's own assets) and payload capture when MODELFN_CAPTURE is set.
Capture is flushed by a background thread, and everything still buffered is written at the lifespan's shutdown:
uvicorn's graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from modelfn.adapters.asgi import AsgiApp, Observer
from modelfn.batching.batcher import Batcher
from modelfn.capture import Capture
from modelfn.hooks import Hooks
from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import ActionFactory, Service
from modelfn.service.request import Request, Response
from modelfn.service.routes import CORE_ROUTES, SERVER_ROUTES, Route
from modelfn.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from modelfn.http.metrics import PrometheusMetrics


class ServerApp(AsgiApp):
    """The ASGI app, plus what a long-running server closes at its lifespan's shutdown (capture's last flush)."""

    def __init__(
        self, service: Service, metrics: PrometheusMetrics, capture: Capture | None, observe: Observer | None = None
    ) -> None:
        super().__init__(service, metrics.transport if observe is None else _both(metrics.transport, observe))
        self.metrics = metrics
        self.capture = capture

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, self._closing(send) if scope["type"] == "lifespan" else send)

    def _closing(self, send: Send) -> Send:
        async def sent(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await asyncio.to_thread(self.close)
            await send(message)

        return sent

    def close(self) -> None:
        """Write what capture still holds (also callable directly by a host that runs no lifespan)."""
        if self.capture is not None:
            self.capture.close()


def _both(first: Observer, second: Observer) -> Observer:
    def both(response: Response, seconds: float) -> None:
        first(response, seconds)
        second(response, seconds)

    return both


def _asset(service: Service) -> Callable[[Request, Mapping[str, str]], Response]:
    """The Swagger UI files /docs loads (http/openapi.py docs_html)."""

    def answer(request: Request, _: Mapping[str, str]) -> Response:
        from modelfn.http import openapi

        name = request.path.rpartition("/")[2]  # the route table admits only the files listed in ASSETS
        headers = {"content-type": openapi.ASSETS[name], "cache-control": "public, max-age=86400"}
        return Response(200, openapi.docs_asset(name), headers)

    return answer


def create_app(
    registry: ModelRegistry,
    default_model: str | None = None,
    hooks: Mapping[str, Hooks] | None = None,
    title: str = "modelfn",
    batching: bool | None = None,
    routes: tuple[Route, ...] = CORE_ROUTES,
    actions: Mapping[str, ActionFactory] | None = None,
    observe: Observer | None = None,
) -> ServerApp:
    """Every model of `registry`; `default_model` is what `/predict` runs (else the only one served).

    `batching` (None: settings.batching or any model's override) joins concurrent requests for one model version
    into one session.run (modelfn.batching); only long-running servers turn it on, never the Lambda path.
    `routes` get SERVER_ROUTES added; `observe` is told of every response the server sends, as the metrics are."""
    from modelfn.http.metrics import PrometheusMetrics  # prometheus_client: servers only, never the Lambda path

    settings = registry.settings
    batcher = Batcher(settings, batching) if Batcher.wanted(settings, batching) else None
    metrics = PrometheusMetrics()
    served: dict[str, ActionFactory] = {
        "metrics": lambda service: metrics.exposition,
        "docs_asset": _asset,
        **(actions or {}),
    }
    service = Service(registry, default_model, hooks, batcher, routes + SERVER_ROUTES, served, title)
    metrics.attach(service)
    capture = Capture.install(service)
    if capture is not None:
        metrics.sources.append(capture.samples)
        capture.start()
    return ServerApp(service, metrics, capture, observe)
