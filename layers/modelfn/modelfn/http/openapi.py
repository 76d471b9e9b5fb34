"""FastAPI built from the service's route table: each route registered once, with its real path (and query)
parameters, its request and response schemas and the errors it can answer, its handler a thin call into the
service's ASGI adapter. Its OpenAPI document is what /openapi.json serves; the app itself answers alike."""

from __future__ import annotations

import html
import inspect
import pathlib
from functools import cache
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Path, Query
from fastapi import Request as StarletteRequest
from fastapi.responses import Response as FastAPIResponse

from modelfn import __version__, jsonio
from modelfn.http import schemas
from modelfn.service.routes import Route, RouteNotFound
from modelfn.types import Receive, Scope, Send

if TYPE_CHECKING:
    from modelfn.adapters.asgi import AsgiApp
    from modelfn.service.dispatch import Service

DESCRIPTION = "ONNX models served over the Open Inference Protocol (KServe v2), TF Serving REST and /predict."
_PARAM_DOCS = {
    "name": "A served model's name",
    "version": "A version number (KServe v2 also takes a label here)",
    "label": "A version label, e.g. stable or canary",
    "model": "Which served model /predict runs (default: the function's own, or the only one served)",
}
_BODIES: dict[str, tuple[type[Any], type[Any]]] = {
    "v2": (schemas.V2InferenceRequest, schemas.V2InferenceResponse),
    "tf": (schemas.TFPredictRequest, schemas.TFPredictResponse),
    "plain": (schemas.PredictRequest, schemas.PredictResponse),
}


class _Delegate(FastAPIResponse):
    """Hands the request to the service's ASGI adapter: the one body reader and error mapping there is."""

    def __init__(self, app: AsgiApp) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _endpoint(app: AsgiApp, route: Route) -> Any:
    """A handler whose signature declares the route's path and query parameters (FastAPI documents what a
    signature declares) and which answers through the service exactly as the adapters do."""

    async def endpoint(request: StarletteRequest, **_: str) -> FastAPIResponse:
        return _Delegate(app)

    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=StarletteRequest)]
    params += [
        inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=str, default=Path(description=_PARAM_DOCS[p]))
        for p in route.params
    ]
    params += [
        inspect.Parameter(
            q, inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=Query(None, description=_PARAM_DOCS[q])
        )
        for q in route.query
    ]
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = f"{route.action}_{route.method.lower()}_{abs(hash(route.template))}"
    return endpoint


def _responses(route: Route) -> dict[int | str, dict[str, Any]]:
    error = {"content": {"application/json": {"schema": schemas.schema(schemas.ErrorResponse)}}}
    codes: dict[int | str, str] = {}
    if route.params or route.codec is not None:
        codes |= {400: "The request does not fit the route or the model's signature", 404: "Unknown model or version"}
    if route.codec is not None:
        codes |= {413: "Body over MODELFN_MAX_BODY_BYTES", 503: "The version cannot be served (integrity, load)"}
    elif route.blocking:
        codes |= {502: "The model store did not answer", 503: "The version cannot be served (integrity, load)"}
    return {code: {"description": text, **error} for code, text in codes.items()}


def _openapi_extra(route: Route) -> dict[str, Any] | None:
    if route.codec is None:
        return None
    request, response = _BODIES[route.codec]
    content: dict[str, Any] = {"application/json": {"schema": schemas.schema(request)}}
    if route.codec == "v2":
        content["application/octet-stream"] = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "The binary tensor data extension: a JSON header of Inference-Header-Content-Length "
                "bytes, then the tensors' bytes",
            }
        }
    return {
        "requestBody": {"required": True, "content": content},
        "responses": {"200": {"content": {"application/json": {"schema": schemas.schema(response)}}}},
    }


def fastapi_app(service: Service) -> FastAPI:
    """The FastAPI app of the route table (its own docs routes off: the table has them)."""
    from modelfn.adapters.asgi import AsgiApp

    adapter = AsgiApp(service)
    app = FastAPI(title=service.title, version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.openapi_url = None
    for route in service.table.routes:
        app.add_api_route(
            route.template,
            _endpoint(adapter, route),
            methods=[route.method],
            tags=list(route.tags),
            summary=route.summary,
            include_in_schema=route.documented,
            responses=_responses(route),
            openapi_extra=_openapi_extra(route),
        )
    return app


def openapi_document(service: Service) -> bytes:
    app = fastapi_app(service)
    app.openapi_url = "/openapi.json"
    doc = app.openapi()
    _drop_validation_errors(doc)
    return jsonio.dumps(doc)


def _drop_validation_errors(doc: dict[str, Any]) -> None:
    """FastAPI documents a 422 for every route with parameters; the service answers a bad request with 400
    `{"error": ...}` (documented per route), so the 422 and its schemas would describe answers never given."""
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            operation.get("responses", {}).pop("422", None)
    components = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if "components" in doc and not components:
        doc["components"].pop("schemas", None)
        if not doc["components"]:
            doc.pop("components")


ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
"""The Swagger UI files /docs loads, served by servers (SERVER_ROUTES) from the swagger-ui-bundle package."""
SWAGGER_UI = "4.15.5"
"""The Swagger UI release swagger-ui-bundle 1.1.0 vendors; the fallback CDN serves the same one."""
FALLBACK = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI}"
_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="icon" href="./docs/favicon-32x32.png">
<link rel="stylesheet" href="./docs/swagger-ui.css" onerror="this.onerror=null;this.href='{cdn}/swagger-ui.css'">
</head>
<body>
<div id="swagger-ui"></div>
<script>
function modelfnDocs() {{
  SwaggerUIBundle({{
    url: "./openapi.json", dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true, validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
  }});
}}
function modelfnDocsFallback() {{
  var s = document.createElement("script");
  s.src = "{cdn}/swagger-ui-bundle.js";
  s.onload = modelfnDocs;
  document.body.appendChild(s);
}}
</script>
<script src="./docs/swagger-ui-bundle.js" onload="modelfnDocs()" onerror="modelfnDocsFallback()"></script>
</body>
</html>
"""


def docs_html(title: str) -> bytes:
    """The OpenAPI UI, pointing at ./openapi.json (relative, so a stage or base path in front still works).

    One page for every transport. Its script, style and icon are modelfn's own `./docs/...` routes, which servers
    answer (the `server` extra's swagger-ui-bundle), so /docs works with no Internet access. Lambda does not serve
    them (the 1.5 MB bundle stays out of the layer; a browser that reaches API Gateway or a function URL is online
    anyway): there the local request fails and the page loads the same release from the jsDelivr CDN instead. The
    validator badge is off (it would send the document to validator.swagger.io)."""
    return _PAGE.format(title=html.escape(f"{title} - docs"), cdn=FALLBACK).encode()


@cache
def docs_asset(name: str) -> bytes:
    """One Swagger UI file from the swagger-ui-bundle package (`server` extra), read once; 404 without it."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError as e:
        raise RouteNotFound(f"/docs/{name}: the Swagger UI files are not installed (the `server` extra)") from e

    return (pathlib.Path(str(swagger_ui_path)) / name).read_bytes()
