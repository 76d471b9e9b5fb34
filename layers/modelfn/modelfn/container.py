"""`python -m modelfn.container [serve | healthcheck]`: the GPU / SageMaker container's entrypoint.

SageMaker starts the image with the argument `serve`; no argument means the same. `healthcheck` asks the running
server's /ping (Docker's HEALTHCHECK) and exits 0 when it answers 200.

Everything else comes from the environment:

- `MODELFN_STORE`: the store URI. Default: `/opt/ml/model` when that folder exists (SageMaker's ModelDataUrl,
  extracted there; it must hold the store layout `<model>/<version>/model.onnx` + `manifest.json`).
- `MODELFN_MODELS`: comma-separated models to serve. Default: `MODELFN_MODEL` alone when set, else every model
  of the store.
- `MODELFN_MODEL`: the default model of `/predict` and `/invocations`. Default: the only model served.
- `MODELFN_VERSION`, `MODELFN_PROVIDERS`, `MODELFN_MODELS_CONFIG`, `MODELFN_CUDA_DEVICE`, `MODELFN_CACHE_DIR`, ...:
  the runtime's settings (modelfn.settings.Settings), as everywhere else.
- `MODELFN_HOST` (default `0.0.0.0`), `MODELFN_PORT` (else SageMaker's `SAGEMAKER_BIND_TO_PORT`, else 8080).
- `MODELFN_GRPC_PORT` (default: off): also serve the Open Inference Protocol over gRPC on this port, on the same
  event loop (modelfn.adapters.grpc; `tritonclient.grpc` works with its defaults). gRPC listens before HTTP does.
- `MODELFN_SHUTDOWN_TIMEOUT` (default 30): seconds a SIGTERM waits for in-flight requests to finish.
- `MODELFN_KEEP_ALIVE` (default 75): idle keep-alive seconds, above the 60 s of the load balancers in front.
- `MODELFN_API_KEYS`, `MODELFN_RATE_LIMIT`, `MODELFN_MAX_CONCURRENCY` (default 256), `MODELFN_BODY_TIMEOUT`
  (default 30): API keys and limits, as for `modelfn serve` (modelfn.service.auth, modelfn.service.limits). On a
  SageMaker endpoint leave MODELFN_API_KEYS unset: InvokeEndpoint forwards no Authorization header (IAM guards it).
- `MODELFN_LOG_LEVEL` (default `info`).
- `MODELFN_CAPTURE`, `MODELFN_CAPTURE_PERCENT`, ...: payload capture (modelfn.capture), written in the background
  and flushed at the stop below.

Start: every served model is fetched, verified, loaded and warmed up before the port opens, so the first 200 from
`/ping` means ready. A model that fails to load is logged and keeps `/ping` at 503; the others still serve.
Stop: SIGTERM (or SIGINT) closes the listening socket, lets in-flight requests complete (up to the timeout), runs
the app's lifespan shutdown (captured records written) and exits 0. One uvicorn worker per container (one process
per GPU; scale with instances), on uvloop and httptools when they are installed (the `server` extra installs both).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("modelfn")
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
USAGE = "usage: python -m modelfn.container [serve | healthcheck]"


@dataclass(frozen=True)
class ServerConfig:
    store: str | None
    models: list[str] | None
    host: str = "0.0.0.0"  # the container's own network namespace
    port: int = 8080
    shutdown_timeout: int = 30
    keep_alive: int = 75
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env
        store = env.get("MODELFN_STORE") or (str(SAGEMAKER_MODEL_DIR) if SAGEMAKER_MODEL_DIR.is_dir() else None)
        listed = env.get("MODELFN_MODELS") or env.get("MODELFN_MODEL") or ""
        models = [m.strip() for m in listed.split(",") if m.strip()] or None
        return cls(
            store=store,
            models=models,
            host=env.get("MODELFN_HOST") or cls.host,
            port=int(env.get("MODELFN_PORT") or env.get("SAGEMAKER_BIND_TO_PORT") or cls.port),
            shutdown_timeout=int(env.get("MODELFN_SHUTDOWN_TIMEOUT") or cls.shutdown_timeout),
            keep_alive=int(env.get("MODELFN_KEEP_ALIVE") or cls.keep_alive),
            log_level=(env.get("MODELFN_LOG_LEVEL") or cls.log_level).lower(),
        )


def build_config(app: Any, cfg: ServerConfig) -> Any:
    """The uvicorn.Config the container runs: one worker, uvloop + httptools when installed, graceful shutdown."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        workers=1,
        lifespan="auto",  # create_app may register startup/shutdown work (none needs it today)
        timeout_graceful_shutdown=cfg.shutdown_timeout,
        timeout_keep_alive=cfg.keep_alive,
        log_level=cfg.log_level,
        access_log=False,
        server_header=False,
    )


def _drained(sig: int, _: FrameType | None) -> None:
    """uvicorn handles SIGTERM/SIGINT while it runs (graceful shutdown), then restores the previous handlers and
    raises the signal again: with this one installed before it, that second delivery ends nothing and we exit 0."""
    log.info("received %s: in-flight requests drained, exiting", signal.Signals(sig).name)


def serve(cfg: ServerConfig) -> int:
    import uvicorn

    from modelfn.adapters.sagemaker import create_container_app
    from modelfn.errors import ModelfnError
    from modelfn.registry import ModelRegistry
    from modelfn.settings import Settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(getattr(logging, cfg.log_level.upper(), logging.INFO))
    if not cfg.store:
        print("modelfn.container: no store: set MODELFN_STORE (or provide /opt/ml/model)", file=sys.stderr)
        return 2
    try:
        settings = Settings.load(store=cfg.store)
    except ModelfnError as e:  # a MODELFN_ variable that does not validate, said in one line
        print(f"modelfn.container: {e.message}", file=sys.stderr)
        return 2
    registry = ModelRegistry.from_uri(cfg.store, settings, cfg.models)
    try:
        names = registry.model_names()
    except ModelfnError as e:
        print(f"modelfn.container: cannot list models in {cfg.store}: {e.message}", file=sys.stderr)
        return 1
    if not names:
        wanted = f" ({', '.join(cfg.models)})" if cfg.models else ""
        print(f"modelfn.container: no models{wanted} in {registry.repo.uri}", file=sys.stderr)
        return 1
    default = settings.model or (names[0] if len(names) == 1 else None)
    if default is not None and default not in names:
        print(f"modelfn.container: MODELFN_MODEL={default!r} is not served ({', '.join(names)})", file=sys.stderr)
        return 1
    for name, message in registry.preload().items():
        log.error("model %r could not be loaded at start: %s", name, message)
    try:
        app = create_container_app(registry, default_model=default, models=names)
    except ValueError as e:  # a setting the service refuses, e.g. a malformed MODELFN_API_KEYS entry
        print(f"modelfn.container: {e}", file=sys.stderr)
        return 2
    server = uvicorn.Server(build_config(app, cfg))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _drained)
    log.info(
        "serving %s from %s on http://%s:%d (default model: %s)", names, registry.repo.uri, cfg.host, cfg.port, default
    )
    if settings.grpc_port is not None:
        from modelfn.adapters.grpc.server import GrpcServer, run_with_grpc

        return 0 if run_with_grpc(server, GrpcServer(app.service, cfg.host, settings.grpc_port)) else 1
    server.run()
    return 0 if server.started else 1


def healthcheck(cfg: ServerConfig) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{cfg.port}/ping", timeout=3) as r:
            return 0 if r.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "serve"
    if args or command not in ("serve", "healthcheck"):
        print(USAGE, file=sys.stderr)
        return 2
    cfg = ServerConfig.from_env()
    return healthcheck(cfg) if command == "healthcheck" else serve(cfg)


if __name__ == "__main__":
    sys.exit(main())
