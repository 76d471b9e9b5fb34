"""The container: the service's HTTP API plus SageMaker's container contract and Prometheus metrics (the
`server` extra); the Lambda path never imports this module.

Routes added to the core table (service/routes.py CONTAINER_ROUTES, and SERVER_ROUTES as for any server):

- `GET /ping`: 200 `{"status": "ok", "models": [...]}` once every model the container serves is loaded (the
  entrypoint loads them before it listens), else 503 `{"error": ...}` naming the missing ones (and a background
  retry of their load starts). It reads memory only, so it answers at once while inference is busy.
- `GET /metrics` (SERVER_ROUTES, as for `modelfn serve`): Prometheus text format, the metrics of the catalogue
  modelfn/telemetry/names.py (http/metrics.py), plus whatever else the process registered in the default registry
  (the batcher's `modelfn_batch_size` / `modelfn_batches_total`, process and GC metrics).
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
from collections.abc import Iterable, Mapping
from typing import Any

from modelfn import jsonio
from modelfn.adapters.asgi import AsgiApp
from modelfn.errors import InvalidInput
from modelfn.hooks import Hooks
from modelfn.http.app import create_app
from modelfn.protocols import sagemaker, v2
from modelfn.protocols.sniff import protocol_of
from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import ActionFactory, Service
from modelfn.service.request import Request, Response, json_response, request_body
from modelfn.service.routes import CONTAINER_ROUTES, CORE_ROUTES
from modelfn.service.runner import in_thread, is_quick

PATH_HEADER = "x-modelfn-path"
TARGET_MODEL = "x-amzn-sagemaker-target-model"
_INFER = {"v2": "/v2/models/{name}/infer", "tf": "/v1/models/{name}:predict", "plain": "/predict"}


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


class Invocations:
    """POST /invocations: an explicit route runs as that request; otherwise the body is inflated and parsed once,
    its protocol sniffed, and the matching inference route runs on the parsed body (no replay, no re-parse).

    The route it runs is not admitted again: /invocations is not public, so the outer request was already
    authenticated and charged to its key's rate; checking the same headers again would only charge it twice. An
    explicit route therefore never bypasses the keys, and never reaches a route the caller could not."""

    def __init__(self, service: Service, models: list[str] | None) -> None:
        self.service = service
        self.models = models

    async def __call__(self, request: Request, _: Mapping[str, str]) -> Response:
        attrs = sagemaker.parse_attributes(request.headers.get(sagemaker.HEADER))
        headers = {**request.headers, **{k: attrs[k] for k in sagemaker.FORWARDED_HEADERS if k in attrs}}
        explicit = headers.get(PATH_HEADER) or attrs.get(sagemaker.PATH)
        if explicit:
            method, path, query = split_route(explicit)
            inner = Request(method, path, query, headers, request.body, request.client)
            response = await self.service.handle_async(inner, admitted=True)
        else:
            response = await self._sniffed(Request(request.method, request.path, "", headers, request.body))
        length = response.headers.get(v2.HEADER.lower())
        if length is not None:
            response.headers[sagemaker.HEADER] = sagemaker.format_attributes({sagemaker.BINARY_LENGTH: length})
        return response

    def _read(self, request: Request, binary: bool) -> tuple[bytes, Any]:
        """The inflated body and, unless it is v2 binary, its JSON: parsed once, here."""
        body = request_body(request, self.service.registry.settings.max_body_bytes)
        return body, None if binary else jsonio.loads(body, "invocation body")

    async def _sniffed(self, request: Request) -> Response:
        binary = v2.HEADER.lower() in request.headers
        # as for every route: a big or compressed body is inflated and parsed off the event loop
        body, parsed = (
            self._read(request, binary) if is_quick(request) else await in_thread(self._read, request, binary)
        )
        kind = protocol_of(parsed, binary)
        model = self._target_model(request.headers)
        headers = {k: v for k, v in request.headers.items() if k != "content-encoding"}  # inflated now
        inner = Request("POST", "/invocations", f"model={model}" if kind == "plain" else "", headers, body)
        route = self.service.table.route("POST", _INFER[kind])
        return await self.service.infer_async(route, {"name": model}, inner, parsed)

    def _target_model(self, headers: Mapping[str, str]) -> str:
        target = headers.get(TARGET_MODEL)
        if target:
            return target.removesuffix(".tar.gz")
        if self.service.default_model:
            return self.service.default_model
        served = self.models if self.models is not None else self.service.registry.allowed
        if served is not None and len(served) == 1:
            return served[0]
        raise InvalidInput(
            "/invocations needs a model: this container serves several; set the "
            "X-Amzn-SageMaker-Target-Model header or MODELFN_MODEL, or route with X-Modelfn-Path"
        )


class Ping:
    """Memory only: 200 once every expected model is loaded; otherwise 503 and one background load attempt."""

    def __init__(self, registry: ModelRegistry, models: list[str] | None) -> None:
        self.registry = registry
        self.expected = models
        self.retry: asyncio.Future[Any] | None = None

    async def __call__(self, request: Request, _: Mapping[str, str]) -> Response:
        loop = asyncio.get_running_loop()
        if self.expected is None:
            self.expected = sorted(await loop.run_in_executor(None, self.registry.model_names))
        loaded = {m.name for m in self.registry.cache.loaded()}
        missing = [m for m in self.expected if m not in loaded]
        if not missing:
            return json_response({"status": "ok", "models": self.expected})
        if self.retry is None or self.retry.done():
            self.retry = loop.run_in_executor(None, self.registry.preload)
        return json_response({"error": f"not loaded yet: {', '.join(missing)}"}, 503)


def create_container_app(
    registry: ModelRegistry,
    default_model: str | None = None,
    hooks: dict[str, Hooks] | None = None,
    models: Iterable[str] | None = None,
) -> AsgiApp:
    """The service with /ping, /invocations and /metrics. `models`: the ones /ping waits for (default: every
    model the registry serves, listed once at the first ping)."""
    expected = sorted(models) if models is not None else None
    actions: dict[str, ActionFactory] = {
        "ping": lambda service: Ping(service.registry, expected),
        "invocations": lambda service: Invocations(service, expected),
    }
    return create_app(
        registry,
        default_model=default_model,
        hooks=hooks,
        title="modelfn container",
        routes=CORE_ROUTES + CONTAINER_ROUTES,
        actions=actions,
    )
