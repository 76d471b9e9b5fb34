"""`modelfn serve`: the HTTP API under uvicorn, every model of a store (or a subset), preloaded before listening."""

from __future__ import annotations

import logging
import sys
from typing import Any

from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

log = logging.getLogger("modelfn")


def build_registry(store: str | None, models: str | None, **overrides: Any) -> ModelRegistry:
    """`overrides` (None: from the environment) are Settings fields, e.g. batching, max_batch_size."""
    settings = Settings.load(store=store, **overrides)
    if not settings.store:
        raise SystemExit("modelfn serve: no store given: pass --store URI or set MODELFN_STORE")
    subset = [m.strip() for m in models.split(",") if m.strip()] if models else None
    return ModelRegistry.from_uri(settings.store, settings, subset)


def serve(
    store: str | None,
    models: str | None,
    host: str,
    port: int,
    log_level: str = "warning",
    batching: bool | None = None,
    max_batch_size: int | None = None,
    max_batch_wait_ms: float | None = None,
) -> int:
    import uvicorn

    from modelfn.http import create_app

    registry = build_registry(
        store, models, batching=batching, max_batch_size=max_batch_size, max_batch_wait_ms=max_batch_wait_ms
    )
    problems = registry.preload()
    for name, message in problems.items():
        print(f"modelfn serve: {name}: {message}", file=sys.stderr)
    app = create_app(registry)
    names = registry.model_names()
    print(f"modelfn serve: {len(names)} model(s) from {registry.repo.uri} on http://{host}:{port}", file=sys.stderr)
    if app.state.batcher is not None:
        cfg = registry.settings
        print(
            f"modelfn serve: dynamic batching on (up to {cfg.max_batch_size} rows, {cfg.max_batch_wait_ms:g} ms)",
            file=sys.stderr,
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    return 0
