"""FastAPI app: KServe v2 (JSON + binary), TF Serving REST, plain /predict, health and docs.

Handlers take the raw body and decode it with the protocol modules: binary tensors cannot go through a pydantic
body model, and skipping one keeps a warm request at the cost of a hand-written handler. Errors from the core
carry their status; this module is the only place that turns them into `{"error": ...}` responses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelfn import __version__, jsonio
from modelfn.adapters.asgi import FastInference
from modelfn.batching.batcher import Batcher
from modelfn.errors import InvalidInput, ModelfnError
from modelfn.fastpath import INLINE_BYTES, FastPath
from modelfn.hooks import Hooks
from modelfn.http import schemas
from modelfn.http.body import read_body
from modelfn.model.loaded import LoadedModel
from modelfn.protocols import plain, tfserving, v2
from modelfn.registry import ModelRegistry

log = logging.getLogger("modelfn")
JSON = "application/json"


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(obj), status_code=status, media_type=JSON, headers=headers)


def error_response(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def create_app(
    registry: ModelRegistry,
    default_model: str | None = None,
    hooks: dict[str, Hooks] | None = None,
    title: str = "modelfn",
    batching: bool | None = None,
) -> FastAPI:
    """The app serving every model of `registry`; `default_model` is what `/predict` runs (else the only one).

    `batching` (None: settings.batching or any model's override) joins concurrent requests for one model version
    into one session.run (modelfn.batching); only long-running servers turn it on, never the Lambda path."""
    app = FastAPI(
        title=title,
        version=__version__,
        description="ONNX models served over the Open Inference Protocol (KServe v2), TF Serving REST and /predict.",
    )
    app.state.registry = registry
    limit = registry.settings.max_body_bytes
    hooks = hooks or {}
    batcher = Batcher(registry.settings, batching) if Batcher.wanted(registry.settings, batching) else None
    app.state.batcher = batcher
    if batcher is not None:
        app.router.on_shutdown.append(batcher.close)

    @app.exception_handler(ModelfnError)
    async def _modelfn_error(_: Request, exc: ModelfnError) -> Response:
        if exc.status >= 500:
            log.warning("%s", exc.message)
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(400, f"invalid request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    async def model_for(name: str, version: str | None) -> LoadedModel:
        """Loaded models are returned at once; a load (download, verify, session) runs off the event loop."""
        resolved = registry.resolve(name, version)
        loaded = registry.peek(name, resolved)
        return loaded if loaded is not None else await run_in_threadpool(registry.get, name, resolved)

    async def compute(body: bytes, fn: Callable[[], Any]) -> Any:
        return fn() if len(body) <= INLINE_BYTES else await run_in_threadpool(fn)

    # ---- Open Inference Protocol (KServe v2) -------------------------------------------------------------
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def v2_server() -> Response:
        return _json({"name": "modelfn", "version": __version__, "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live", tags=["v2"], summary="Server liveness")
    async def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", tags=["v2"], summary="Server readiness: the store answers")
    async def v2_ready() -> Response:
        await run_in_threadpool(registry.model_names)
        return _json({"ready": True})

    async def v2_model(name: str, version: str | None = None) -> Response:
        model = await model_for(name, version)
        versions = await run_in_threadpool(registry.versions, name)
        return _json(v2.metadata(model, versions))

    async def v2_model_ready(name: str, version: str | None = None) -> Response:
        status = await run_in_threadpool(registry.status, name, version)
        if not status.ready:
            return error_response(503, status.error or "not ready")
        return _json({"name": name, "version": str(status.version), "ready": True})

    def v2_header_length(request: Request) -> int | None:
        header = request.headers.get(v2.HEADER)
        try:
            return int(header) if header is not None else None
        except ValueError as e:
            raise InvalidInput(f"{v2.HEADER} must be an integer, got {header!r}") from e

    def v2_response(content: bytes, json_len: int | None) -> Response:
        if json_len is None:
            return Response(content, media_type=JSON)
        return Response(content, media_type="application/octet-stream", headers={v2.HEADER: str(json_len)})

    fast = FastPath(registry, default_model, hooks)

    async def infer(request: Request) -> Response:
        """Inference without batching. The FastInference middleware answers these requests before routing; this
        endpoint runs the same fast path, documents the routes in OpenAPI and answers if the middleware is absent."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        route = fast.route(request.method, request.url.path, request.url.query, headers)
        if route is None:
            raise StarletteHTTPException(404, "Not Found")
        body = await read_body(request, limit)
        if fast.is_quick(route, len(body)):
            status, content, out = fast.answer(route, body, headers)
        else:
            status, content, out = await run_in_threadpool(fast.answer, route, body, headers)
        return Response(content, status_code=status, headers=out)

    async def v2_infer_batched(request: Request, name: str, version: str | None = None) -> Response:
        assert batcher is not None
        with batcher.arriving():
            body = await read_body(request, limit)
            model = await model_for(name, version)
            header_len = v2_header_length(request)
            req = await compute(body, lambda: v2.decode_request(body, header_len, model))
        results = await batcher.predict(model, req.inputs, req.outputs or None)
        return v2_response(*await compute(body, lambda: v2.encode_response(model, results, req.binary_outputs, req.id)))

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, v2_model, methods=["GET"], tags=["v2"], summary="Model metadata")
        app.add_api_route(f"{prefix}/ready", v2_model_ready, methods=["GET"], tags=["v2"], summary="Model readiness")
        app.add_api_route(
            f"{prefix}/infer",
            infer if batcher is None else v2_infer_batched,
            methods=["POST"],
            tags=["v2"],
            summary="Inference (JSON tensors or the binary tensor data extension)",
            openapi_extra=schemas.body(schemas.V2InferenceRequest, schemas.V2InferenceResponse),
        )

    # ---- TensorFlow Serving REST -------------------------------------------------------------------------
    def tf_target(name: str, version: str | None, label: str | None) -> str | None:
        if version is not None and not version.isdigit():
            raise InvalidInput(f"version must be a positive integer, got {version!r}")
        return version or label

    async def tf_status(name: str, version: str | None = None, label: str | None = None) -> Response:
        if ":" in name:  # GET /v1/models/m:predict: the route exists, the method does not
            raise StarletteHTTPException(405, f":{name.split(':', 1)[1]} takes POST, not GET")
        target = tf_target(name, version, label)
        status = await run_in_threadpool(registry.status, name, target)
        return _json(tfserving.status([(status.version, status.ready, status.error)]))

    async def tf_metadata(name: str, version: str | None = None, label: str | None = None) -> Response:
        model = await model_for(name, tf_target(name, version, label))
        return _json(tfserving.metadata(model))

    async def tf_predict_batched(
        request: Request, name: str, version: str | None = None, label: str | None = None
    ) -> Response:
        assert batcher is not None
        with batcher.arriving():
            body = await read_body(request, limit)
            model = await model_for(name, tf_target(name, version, label))
            req = await compute(body, lambda: tfserving.decode_request(body, model))
        results = await batcher.predict(model, req.inputs)
        return _json(await compute(body, lambda: tfserving.encode_response(results, req.row_format)))

    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}", "/v1/models/{name}/labels/{label}"):
        app.add_api_route(prefix, tf_status, methods=["GET"], tags=["tfserving"], summary="Model status")
        app.add_api_route(f"{prefix}/metadata", tf_metadata, methods=["GET"], tags=["tfserving"], summary="Metadata")
        app.add_api_route(
            f"{prefix}:predict",
            infer if batcher is None else tf_predict_batched,
            methods=["POST"],
            tags=["tfserving"],
            summary="Predict (row `instances` or columnar `inputs`)",
            openapi_extra=schemas.body(schemas.TFPredictRequest, schemas.TFPredictResponse),
        )

    # ---- plain ---------------------------------------------------------------------------------------------
    async def plain_model(model: str | None) -> tuple[LoadedModel, Hooks]:
        name = model or default_model
        if name is None:
            name = await run_in_threadpool(fast.only_model)
        loaded = await model_for(name, registry.settings.version if name == default_model else None)
        return loaded, hooks.get(name, Hooks())

    async def predict_batched(request: Request, model: str | None = None) -> Response:
        """`?model=NAME` picks one of several served models (an extension of the contract's plain route)."""
        assert batcher is not None
        with batcher.arriving():
            body = await read_body(request, limit)
            loaded, h = await plain_model(model)
            inputs = await compute(body, lambda: plain.decode_request(body, loaded, h.preprocess))
        results = await batcher.predict(loaded, inputs)
        return _json(await compute(body, lambda: plain.encode_response(results, loaded, h.postprocess)))

    app.add_api_route(
        "/predict",
        infer if batcher is None else predict_batched,
        methods=["POST"],
        tags=["plain"],
        summary="Predict with the function's own model",
        openapi_extra=schemas.body(schemas.PredictRequest, schemas.PredictResponse),
    )

    @app.get("/health", tags=["health"], summary="Process health and the models loaded in it")
    async def health() -> Response:
        loaded = {
            f"{m.name}/{m.version}": {"sha256": m.sha256, "load_ms": round(m.load_seconds * 1000, 1)}
            for m in registry.cache.loaded()
        }
        info: dict[str, Any] = {"status": "ok", "version": __version__, "loaded": loaded}
        if batcher is not None:
            info["batching"] = batcher.snapshot()
        return _json(info)

    if batcher is None:  # inference requests skip the router; with batching, the batching handlers above serve them
        app.add_middleware(FastInference, fast=fast)
    return app
