"""The container app: the HTTP API of `create_app`, plus SageMaker's container contract and Prometheus metrics.

This is the only module that imports prometheus_client (the `server` extra); the Lambda path never imports it.

Routes added to `create_app`'s:

- `GET /ping`: 200 `{"status": "ok", "models": [...]}` once every model the container serves is loaded (the
  entrypoint loads them before it listens), else 503 `{"error": ...}` naming the missing ones (and a background
  retry of their load starts). It reads memory only, so it answers at once while inference is busy.
- `GET /metrics`: Prometheus text format: `modelfn_requests_total{model,version,route,status}` and
  `modelfn_request_seconds{model,version,route}` (histogram), plus whatever else the process registered in the
  default registry (the batcher's `modelfn_batch_size` / `modelfn_batches_total`, process and GC metrics).
  `route` is the route's template (`/v2/models/{name}/infer`), `model` and `version` are what the request ran
  (empty for requests that named no served model, so client input never becomes a label).
- `POST /invocations`: SageMaker's inference route. It runs one route of the HTTP API, chosen so:

  1. Explicit route: header `X-Modelfn-Path: METHOD /path?query` (e.g. `POST /v2/models/mlp/infer`,
     `GET /v2/models/mlp`; a bare path means POST), or the same value percent-encoded under the `modelfn-path` key
     of SageMaker's CustomAttributes (header `X-Amzn-SageMaker-Custom-Attributes`, `key=value` pairs separated by
     `;`). InvokeEndpoint passes only CustomAttributes through to the container, so this is how
     `modelfn.adapters.sagemaker_proxy` carries the whole HTTP API over one SageMaker endpoint. CustomAttributes
     may also carry `inference-header-content-length` and `content-encoding`, which become those request headers.
  2. Otherwise the body decides, for the target model:
     - a v2 inference request (JSON whose `inputs` is a list of tensor objects with a `name`, or the binary tensor
       extension: header `Inference-Header-Content-Length`) runs `POST /v2/models/{model}/infer`;
     - a TF Serving request (`instances`, or `inputs` in any other form) runs `POST /v1/models/{model}:predict`;
     - `{"features": ...}` runs `POST /predict?model={model}`.
     The target model is the header `X-Amzn-SageMaker-Target-Model` (a trailing `.tar.gz` dropped), else the
     container's default model (MODELFN_MODEL), else the only model served; otherwise 400. For the default model,
     MODELFN_VERSION (a version or a label) applies.

  The answer is that route's. A v2 answer with binary outputs also names its JSON length in the response's
  CustomAttributes (`inference-header-content-length=N`), since SageMaker returns no other response header.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote, urlencode

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.requests import Request

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError, PayloadTooLarge
from modelfn.hooks import Hooks
from modelfn.http.app import create_app
from modelfn.http.body import read_body
from modelfn.protocols import sagemaker, v2
from modelfn.registry import ModelRegistry

log = logging.getLogger("modelfn")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH_HEADER = "x-modelfn-path"
TARGET_MODEL = "x-amzn-sagemaker-target-model"
UNMATCHED = "<unmatched>"

REQUESTS = Counter(
    "modelfn_requests_total", "HTTP requests answered", ["model", "version", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "modelfn_request_seconds",
    "Time from the request's arrival to the end of its response",
    ["model", "version", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)


def split_route(value: str) -> tuple[str, str, str]:
    """`METHOD /path?query` (or a bare path, meaning POST) -> (method, path, query)."""
    method, _, target = value.strip().partition(" ")
    if not target:
        method, target = "POST", method
    target = target.strip()
    path, _, query = target.partition("?")
    if not path.startswith("/") or not method.isalpha():
        raise InvalidInput(f"invalid route {value!r}: expected 'METHOD /path?query'")
    if path.rstrip("/") == "/invocations":
        raise InvalidInput("/invocations cannot route to itself")
    return method.upper(), path, query


def _header(scope: Scope, name: str) -> str | None:
    raw = name.encode("latin-1")
    for k, v in scope.get("headers", []):
        if k.lower() == raw:
            return bytes(v).decode("latin-1")
    return None


async def _send_json(send: Send, status: int, obj: Any) -> None:
    body = jsonio.dumps(obj)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ContainerMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware task and stream per request): times and counts every request, and turns
    `POST /invocations` into the route it stands for before the app routes it."""

    def __init__(
        self, app: ASGIApp, registry: ModelRegistry, default_model: str | None, models: list[str] | None = None
    ) -> None:
        self.app = app
        self.registry = registry
        self.default_model = default_model
        self.models = models
        self.limit = registry.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        model: str | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        out: Send = send_status
        try:
            if scope["path"] == "/invocations" and scope["method"] == "POST":
                try:
                    routed = await self.route_invocation(scope, receive)
                except ModelfnError as e:
                    await _send_json(out, e.status, {"error": e.message})
                    return
                if routed is None:  # the client went away while sending the body
                    status = 499
                    return
                scope, receive, model = routed
                out = self._mirror_binary_length(out)
            await self.app(scope, receive, out)
        finally:
            self._record(scope, status, model, time.perf_counter() - started)

    # ---- /invocations --------------------------------------------------------------------------------------
    async def route_invocation(self, scope: Scope, receive: Receive) -> tuple[Scope, Receive, str | None] | None:
        attrs = sagemaker.parse_attributes(_header(scope, sagemaker.HEADER))
        explicit = _header(scope, PATH_HEADER) or attrs.get(sagemaker.PATH)
        extra = [(k.encode(), attrs[k].encode("latin-1")) for k in sagemaker.FORWARDED_HEADERS if k in attrs]
        replaced = {k for k, _ in extra}
        headers = [(k, v) for k, v in scope["headers"] if bytes(k).lower() not in replaced] + extra
        if explicit:
            method, path, query = split_route(explicit)
            return self._rewrite(scope, headers, method, path, query), receive, None

        raw = await self._read_raw(receive)
        if raw is None:
            return None
        model = self._target_model(scope)
        sniff = Request({**scope, "headers": headers})
        sniff._body = raw  # read_body decodes (gzip/deflate) and size-checks an already-read body
        body = await read_body(sniff, self.limit)
        kind = self._protocol(body, _header({"headers": headers}, v2.HEADER.lower()) is not None)
        version = self.registry.settings.version if model == self.default_model else None
        if kind == "v2":
            path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
            query = ""
        elif kind == "tf":
            where = "" if not version else f"/versions/{version}" if version.isdigit() else f"/labels/{version}"
            path, query = f"/v1/models/{model}{where}:predict", ""
        else:
            path, query = "/predict", urlencode({"model": model})
        return self._rewrite(scope, headers, "POST", path, query), _replay(raw, receive), model

    async def _read_raw(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes (MODELFN_MAX_BODY_BYTES)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _target_model(self, scope: Scope) -> str:
        target = _header(scope, TARGET_MODEL)
        if target:
            return target.removesuffix(".tar.gz")
        if self.default_model:
            return self.default_model
        served = self.models if self.models is not None else self.registry.allowed
        if served is not None and len(served) == 1:
            return served[0]
        raise InvalidInput(
            "/invocations needs a model: this container serves several; set the "
            "X-Amzn-SageMaker-Target-Model header or MODELFN_MODEL, or route with X-Modelfn-Path"
        )

    @staticmethod
    def _protocol(body: bytes, binary: bool) -> str:
        if binary:
            return "v2"
        req = jsonio.loads(body, "invocation body")
        if not isinstance(req, dict):
            raise InvalidInput("invocation body must be a JSON object: a v2 or TF Serving request, or {'features'}")
        inputs = req.get("inputs")
        if isinstance(inputs, list) and inputs and all(isinstance(t, dict) and "name" in t for t in inputs):
            return "v2"
        if "instances" in req or "inputs" in req:
            return "tf"
        if "features" in req:
            return "plain"
        raise InvalidInput(
            "cannot tell the protocol of this invocation: send a v2 request ('inputs': [{name, datatype, shape, "
            "data}]), a TF Serving one ('instances' or 'inputs'), or {'features': ...}; or set X-Modelfn-Path"
        )

    @staticmethod
    def _rewrite(scope: Scope, headers: list[tuple[bytes, bytes]], method: str, path: str, query: str) -> Scope:
        return {
            **scope,
            "method": method,
            "path": path,
            "raw_path": path.encode("utf-8"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
        }

    @staticmethod
    def _mirror_binary_length(send: Send) -> Send:
        header = v2.HEADER.lower().encode()

        async def mirrored(message: Message) -> None:
            if message["type"] == "http.response.start":
                for k, v in message.get("headers", []):
                    if k.lower() == header:
                        attrs = sagemaker.format_attributes({sagemaker.BINARY_LENGTH: bytes(v).decode("latin-1")})
                        message["headers"] = [*message["headers"], (sagemaker.HEADER.encode(), attrs.encode())]
                        break
            await send(message)

        return mirrored

    # ---- metrics -------------------------------------------------------------------------------------------
    def _record(self, scope: Scope, status: int, model: str | None, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or ("/invocations" if scope["path"] == "/invocations" else UNMATCHED)
        params = scope.get("path_params") or {}
        name = model or params.get("name")
        requested = params.get("version") or params.get("label")
        if name is None and template == "/predict":
            query = dict(
                kv.split("=", 1) for kv in scope.get("query_string", b"").decode("latin-1").split("&") if "=" in kv
            )
            name = unquote(query.get("model", "")) or self.default_model
            if name == self.default_model:
                requested = requested or self.registry.settings.version
        model_label, version_label = "", ""
        if name and name in {m.name for m in self.registry.cache.loaded()}:
            model_label = name
            if status < 400:
                try:  # the request just resolved this, so it is cached: no store round trip here
                    version_label = str(self.registry.resolve(name, requested))
                except ModelfnError:
                    version_label = ""
            elif requested is not None and requested.isdigit():
                version_label = requested
        REQUESTS.labels(model_label, version_label, template, str(status)).inc()
        LATENCY.labels(model_label, version_label, template).observe(seconds)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over once, then listens for the client's disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_container_app(
    registry: ModelRegistry,
    default_model: str | None = None,
    hooks: dict[str, Hooks] | None = None,
    models: Iterable[str] | None = None,
) -> FastAPI:
    """`create_app` plus /ping, /invocations and /metrics. `models`: the ones /ping waits for (default: every
    model the registry serves, listed once at the first ping)."""
    app = create_app(registry, default_model=default_model, hooks=hooks, title="modelfn container")
    expected: list[str] | None = sorted(models) if models is not None else None
    retry: asyncio.Future[Any] | None = None

    @app.get("/ping", tags=["container"], summary="SageMaker health check: 200 once the served models are loaded")
    async def ping() -> Response:
        nonlocal expected, retry
        if expected is None:
            expected = sorted(await asyncio.get_running_loop().run_in_executor(None, registry.model_names))
        loaded = {m.name for m in registry.cache.loaded()}
        missing = [m for m in expected if m not in loaded]
        if not missing:
            return Response(jsonio.dumps({"status": "ok", "models": expected}), media_type="application/json")
        if retry is None or retry.done():
            retry = asyncio.get_running_loop().run_in_executor(None, registry.preload)
        error = f"not loaded yet: {', '.join(missing)}"
        return Response(jsonio.dumps({"error": error}), status_code=503, media_type="application/json")

    @app.post(
        "/invocations",
        tags=["container"],
        summary="SageMaker inference: a v2, TF Serving or {'features'} request, or any route via X-Modelfn-Path",
        description=__doc__.split("- `POST /invocations`: ", 1)[1] if __doc__ else None,
    )
    async def invocations() -> Response:
        """Documentation only: ContainerMiddleware answers POST /invocations before the app routes anything."""
        raise InvalidInput("POST /invocations is answered by ContainerMiddleware, which is not installed")

    @app.get("/metrics", tags=["container"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(ContainerMiddleware, registry=registry, default_model=default_model, models=expected)
    return app
