"""`modelfn serve`: the HTTP API under uvicorn (or granian), every model of a store (or a subset), preloaded before
listening, in one or more worker processes; with `--functions DIR`, each function's hooks too, so `/predict`
answers as the deployed Lambda function does."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
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


SERVERS = ("granian", "uvicorn")
DEFAULT_SERVER = "uvicorn"
"""The HTTP server `modelfn serve` runs the app under unless --server says otherwise. granian measured faster on one
pinned core (bench/server_throughput.py: more req/s at less CPU per request), but under a slow-body attack
(tests/http/test_slow_clients.py) the connections it holds back beyond its backpressure are accepted, and so closed,
only a body deadline after the others: until that is settled uvicorn stays the default and granian is opt-in."""
WORKER_CONFIG = "_MODELFN_SERVE_WORKER"
"""Environment variable by which `serve` hands its options to its worker processes (`worker_app`)."""


@dataclass(frozen=True)
class ServeOptions:
    store: str | None
    models: str | None
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "warning"
    batching: bool | None = None
    max_batch_size: int | None = None
    max_batch_wait_ms: float | None = None
    functions: str | None = None
    batching_always: bool = False
    server: str = DEFAULT_SERVER
    workers: int = 1


def build_app(o: ServeOptions, announce: bool = True) -> Any:
    """The registry (every model preloaded) and its ASGI app, as one process serves it; ServeError or ModelfnError
    when it cannot be built."""
    from modelfn.http import create_app

    registry = build_registry(
        o.store, o.models, batching=o.batching, max_batch_size=o.max_batch_size, max_batch_wait_ms=o.max_batch_wait_ms
    )
    names = registry.model_names()
    hooks = load_function_hooks(Path(o.functions), registry.repo.uri) if o.functions else {}
    for name, message in registry.preload().items():
        print(f"modelfn serve: {name}: {message}", file=sys.stderr)
    try:
        app = create_app(registry, hooks=hooks)
    except ValueError as e:  # a setting the service refuses, e.g. a malformed MODELFN_API_KEYS entry
        raise ServeError(str(e)) from e
    if app.state.batcher is not None and o.batching_always:
        app.state.batcher.adaptive = False
    if not announce:
        return app
    where = f"{len(names)} model(s)" if names else "no models yet (new ones are picked up as they are published)"
    print(f"modelfn serve: {where} from {registry.repo.uri} on http://{o.host}:{o.port}", file=sys.stderr)
    if hooks:
        print(f"modelfn serve: hooks of {', '.join(sorted(hooks))} from {o.functions}", file=sys.stderr)
    if app.state.batcher is not None:
        cfg = registry.settings
        how = "always joined" if o.batching_always else "joined where it measures worth it"
        print(
            f"modelfn serve: dynamic batching on ({how}; up to {cfg.max_batch_size} rows, "
            f"{cfg.max_batch_wait_ms:g} ms)",
            file=sys.stderr,
        )
    return app


def worker_app() -> Any:
    """The app of one worker process (the servers' factory target): the options `serve` left in the environment."""
    o = ServeOptions(**json.loads(os.environ[WORKER_CONFIG]))
    return build_app(o)


def worker_threads(workers: int) -> int:
    """onnxruntime intra-op threads per worker: the CPUs this process may use shared out, at least one each."""
    from modelfn.model.onnx import available_cpus

    return max(1, available_cpus() // workers)


def hand_over(o: ServeOptions, intra_op_threads: int | None) -> None:
    """Leave the options and each worker's share of the CPUs (unless MODELFN_INTRA_OP_THREADS says) in the
    environment the workers inherit."""
    os.environ[WORKER_CONFIG] = json.dumps(asdict(o))
    if intra_op_threads is None:
        os.environ["MODELFN_INTRA_OP_THREADS"] = str(worker_threads(o.workers))


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
    batching_always: bool = False,
    server: str = DEFAULT_SERVER,
    workers: int = 1,
    grpc_port: int | None = None,
) -> int:
    """Serve under `server` (granian or uvicorn) in `workers` processes, each with its own models (RSS counts a
    model once per worker) and its share of the CPUs for onnxruntime (MODELFN_INTRA_OP_THREADS overrides).
    `grpc_port`: the Open Inference Protocol over gRPC too, on uvicorn's event loop in this one process."""
    if grpc_port is not None:
        if workers != 1:
            print("modelfn serve: --grpc-port serves from one process: use --workers 1", file=sys.stderr)
            return 2
        server = "uvicorn"  # gRPC runs on uvicorn's event loop (modelfn.adapters.grpc.server.run_with_grpc)
    o = ServeOptions(
        store, models, host, port, log_level, True if batching_always else batching, max_batch_size,
        max_batch_wait_ms, functions, batching_always, server, workers,
    )  # fmt: skip
    if server not in SERVERS:
        print(f"modelfn serve: --server {server!r}: choose one of {', '.join(SERVERS)}", file=sys.stderr)
        return 2
    if workers < 1:
        print(f"modelfn serve: --workers {workers}: at least 1", file=sys.stderr)
        return 2
    try:
        settings = build_registry(store, models).settings  # the store and the settings are checked here, once
        app = build_app(o) if workers == 1 else None  # one worker: this process serves, models loaded here
    except ModelfnError as e:
        print(f"modelfn serve: {e.message}", file=sys.stderr)
        return 1
    except ServeError as e:
        print(f"modelfn serve: {e}", file=sys.stderr)
        return 2
    keep_alive = settings.keep_alive or KEEP_ALIVE
    if app is None:  # every worker builds its own app: models are never loaded before a fork
        hand_over(o, settings.intra_op_threads)
    if server == "granian":
        if app is not None:
            _run_granian_here(app, o, keep_alive)
        else:
            _run_granian(o, keep_alive)
        return 0
    import uvicorn

    if grpc_port is not None and app is not None:
        from modelfn.adapters.grpc.server import GrpcServer, run_with_grpc

        print(f"modelfn serve: gRPC (Open Inference Protocol) on {host}:{grpc_port}", file=sys.stderr)
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=keep_alive
        )
        return 0 if run_with_grpc(uvicorn.Server(config), GrpcServer(app.service, host, grpc_port)) else 1
    target: Any = app if app is not None else f"{__name__}:worker_app"
    uvicorn.run(
        target,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=keep_alive,
        workers=workers if app is None else None,
        factory=app is None,
    )
    return 0


def _granian_options(o: ServeOptions, keep_alive: float) -> dict[str, Any]:
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    return {
        "address": o.host,
        "port": o.port,
        "interface": Interfaces.ASGI,
        "log_level": LogLevels(o.log_level.lower()),
        "log_access": False,
        "websockets": False,
        "http1_settings": HTTP1Settings(header_read_timeout=int(keep_alive * 1000)),
    }


def _run_granian_here(app: Any, o: ServeOptions, keep_alive: float) -> None:
    """One worker: granian's server embedded in this process (no fork), on uvloop where installed; SIGINT and
    SIGTERM stop it gracefully (the app's lifespan shutdown runs)."""
    import asyncio
    import signal

    from granian.server.embed import Server

    logging.getLogger("_granian").addFilter(lambda record: "experimental" not in record.getMessage())
    server = Server(app, **_granian_options(o, keep_alive))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def _run_granian(o: ServeOptions, keep_alive: float) -> None:
    """Granian (a Rust HTTP server) over the ASGI app, `o.workers` worker processes each building it. An idle
    keep-alive connection is closed after `keep_alive` seconds as uvicorn does (granian's header read timeout)."""
    from granian import Granian
    from granian.constants import Loops

    Granian(
        f"{__name__}:worker_app", workers=o.workers, factory=True, loop=Loops.auto, **_granian_options(o, keep_alive)
    ).serve()
