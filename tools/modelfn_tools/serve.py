"""`modelfn serve`: the HTTP API under uvicorn, every model of a store (or a subset), preloaded before listening;
with `--functions DIR`, each function's hooks too, so `/predict` answers as the deployed Lambda function does."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from modelfn.errors import ModelfnError
from modelfn.hooks import Hooks
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

log = logging.getLogger("modelfn")
KEEP_ALIVE = 5
"""Idle keep-alive seconds (MODELFN_KEEP_ALIVE overrides): uvicorn's own default, now stated. A request's body has
its own deadline (MODELFN_BODY_TIMEOUT, adapters/asgi.py); this one closes idle connections between requests."""


class ServeError(Exception):
    """A reason `modelfn serve` cannot start, said in one line."""


def build_registry(store: str | None, models: str | None, **overrides: Any) -> ModelRegistry:
    """`overrides` (None: from the environment) are Settings fields, e.g. batching, max_batch_size."""
    settings = Settings.load(store=store, **overrides)
    if not settings.store:
        raise ServeError("no store given: pass --store URI or set MODELFN_STORE")
    subset = [m.strip() for m in models.split(",") if m.strip()] if models else None
    try:
        registry = ModelRegistry.from_uri(settings.store, settings, subset)
    except (ValueError, ModelfnError) as e:
        raise ServeError(str(e)) from e
    local = getattr(registry.repo.store, "root", None)
    if isinstance(local, Path) and not local.is_dir():
        raise ServeError(f"store {settings.store!r} does not exist (a local folder was expected there)")
    return registry


def load_function_hooks(functions: Path, store: str) -> dict[str, Hooks]:
    """Each `<functions>/<name>/app.py` imported as Lambda imports it (its ModelFunction built from the
    environment, with this server's store), and the hooks of the ModelFunction it builds taken by model name."""
    from modelfn.function import ModelFunction

    if not functions.is_dir():
        raise ServeError(f"--functions {functions}: not a folder")
    hooks: dict[str, Hooks] = {}
    saved = os.environ.get("MODELFN_STORE")
    os.environ["MODELFN_STORE"] = store
    try:
        for app in sorted(functions.glob("*/app.py")):
            spec = importlib.util.spec_from_file_location(f"modelfn_function_{app.parent.name}", app)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(app.parent))
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                raise ServeError(f"{app}: {type(e).__name__}: {e}") from e
            finally:
                sys.path.remove(str(app.parent))
            for value in vars(module).values():
                if isinstance(value, ModelFunction):
                    hooks[value.name] = value.hooks
    finally:
        if saved is None:
            os.environ.pop("MODELFN_STORE", None)
        else:
            os.environ["MODELFN_STORE"] = saved
    return hooks


def serve(
    store: str | None,
    models: str | None,
    host: str,
    port: int,
    log_level: str = "warning",
    batching: bool | None = None,
    max_batch_size: int | None = None,
    max_batch_wait_ms: float | None = None,
    functions: str | None = None,
) -> int:
    import uvicorn

    from modelfn.http import create_app

    try:
        registry = build_registry(
            store, models, batching=batching, max_batch_size=max_batch_size, max_batch_wait_ms=max_batch_wait_ms
        )
        names = registry.model_names()
        hooks = load_function_hooks(Path(functions), registry.repo.uri) if functions else {}
    except ModelfnError as e:
        print(f"modelfn serve: {e.message}", file=sys.stderr)
        return 1
    except ServeError as e:
        print(f"modelfn serve: {e}", file=sys.stderr)
        return 2
    for name, message in registry.preload().items():
        print(f"modelfn serve: {name}: {message}", file=sys.stderr)
    try:
        app = create_app(registry, hooks=hooks)
    except ValueError as e:  # a setting the service refuses, e.g. a malformed MODELFN_API_KEYS entry
        print(f"modelfn serve: {e}", file=sys.stderr)
        return 2
    where = f"{len(names)} model(s)" if names else "no models yet (new ones are picked up as they are published)"
    print(f"modelfn serve: {where} from {registry.repo.uri} on http://{host}:{port}", file=sys.stderr)
    if hooks:
        print(f"modelfn serve: hooks of {', '.join(sorted(hooks))} from {functions}", file=sys.stderr)
    if app.state.batcher is not None:
        cfg = registry.settings
        print(
            f"modelfn serve: dynamic batching on (up to {cfg.max_batch_size} rows, {cfg.max_batch_wait_ms:g} ms)",
            file=sys.stderr,
        )
    keep_alive = registry.settings.keep_alive or KEEP_ALIVE
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=keep_alive)
    return 0
