"""The app `modelfn serve` and the container run: the service over ASGI, with dynamic batching where asked."""

from __future__ import annotations

from collections.abc import Mapping

from modelfn.adapters.asgi import AsgiApp, Observer
from modelfn.batching.batcher import Batcher
from modelfn.hooks import Hooks
from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import ActionFactory, Service
from modelfn.service.routes import CORE_ROUTES, Route


def create_app(
    registry: ModelRegistry,
    default_model: str | None = None,
    hooks: Mapping[str, Hooks] | None = None,
    title: str = "modelfn",
    batching: bool | None = None,
    routes: tuple[Route, ...] = CORE_ROUTES,
    actions: Mapping[str, ActionFactory] | None = None,
    observe: Observer | None = None,
) -> AsgiApp:
    """Every model of `registry`; `default_model` is what `/predict` runs (else the only one served).

    `batching` (None: settings.batching or any model's override) joins concurrent requests for one model version
    into one session.run (modelfn.batching); only long-running servers turn it on, never the Lambda path."""
    settings = registry.settings
    batcher = Batcher(settings, batching) if Batcher.wanted(settings, batching) else None
    service = Service(registry, default_model, hooks, batcher, routes, actions, title)
    return AsgiApp(service, observe)
