"""`modelfn serve`: the HTTP API under uvicorn, every model of a store (or a subset), preloaded before listening."""

from __future__ import annotations

import logging
import sys

from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

log = logging.getLogger("modelfn")


def build_registry(store: str | None, models: str | None) -> ModelRegistry:
    settings = Settings.load(store=store)
    if not settings.store:
        raise SystemExit("modelfn serve: no store given: pass --store URI or set MODELFN_STORE")
    subset = [m.strip() for m in models.split(",") if m.strip()] if models else None
    return ModelRegistry.from_uri(settings.store, settings, subset)


def serve(store: str | None, models: str | None, host: str, port: int, log_level: str = "warning") -> int:
    import uvicorn

    from modelfn.http import create_app

    registry = build_registry(store, models)
    problems = registry.preload()
    for name, message in problems.items():
        print(f"modelfn serve: {name}: {message}", file=sys.stderr)
    app = create_app(registry)
    names = registry.model_names()
    print(f"modelfn serve: {len(names)} model(s) from {registry.repo.uri} on http://{host}:{port}", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    return 0
