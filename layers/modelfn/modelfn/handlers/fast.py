"""The Lambda fast path for inference requests: v2 infer, TF Serving :predict and /predict straight from the
API Gateway / function URL / ALB event to the response dict, without an ASGI round trip.

Everything else (metadata, readiness, docs, OpenAPI, unknown routes) goes to the FastAPI app through Mangum,
which is imported and built only when first needed, so an HTTP function's cold start and its warm inference
requests pay for neither. Both paths share the protocol modules and answer byte for byte alike (the parity
tests compare them with `modelfn serve`)."""

from __future__ import annotations

import base64
import gzip
import logging
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError, PayloadTooLarge
from modelfn.hooks import Hooks
from modelfn.protocols import plain, tfserving, v2
from modelfn.registry import ModelRegistry
from modelfn.session import LoadedModel

log = logging.getLogger("modelfn")
JSON = "application/json"

V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
TF_PREDICT = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?:predict$"
)


@dataclass
class LambdaRequest:
    kind: str  # "v2" (HTTP API 2.0 and function URLs), "v1" (REST API), "alb"
    method: str
    path: str
    headers: dict[str, str]
    query: str
    body: bytes
    multi_value: bool


def parse_event(event: dict[str, Any], base_path: str = "/") -> LambdaRequest | None:
    """The parts of an HTTP event the fast path needs; None for shapes it leaves to Mangum."""
    ctx = event.get("requestContext") or {}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode() if isinstance(raw, str) else raw
    if event.get("version") == "2.0" and isinstance(ctx.get("http"), dict):
        http = ctx["http"]
        path = http.get("path") or event.get("rawPath") or "/"
        stage = ctx.get("stage")
        if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
            path = path[len(stage) + 1 :] or "/"
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        return _strip(
            LambdaRequest("v2", http.get("method", ""), path, headers, event.get("rawQueryString") or "", body, False),
            base_path,
        )
    if "httpMethod" not in event:
        return None
    kind = "alb" if "elb" in ctx else "v1"
    multi = "multiValueHeaders" in event and kind == "alb"
    if event.get("multiValueHeaders"):
        headers = {k.lower(): v[-1] for k, v in event["multiValueHeaders"].items() if v}
    else:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    params = event.get("multiValueQueryStringParameters") or {
        k: [v] for k, v in (event.get("queryStringParameters") or {}).items()
    }
    query = "&".join(f"{k}={v}" for k, vs in params.items() for v in vs)
    return _strip(
        LambdaRequest(kind, event["httpMethod"], event.get("path") or "/", headers, query, body, multi), base_path
    )


def _strip(req: LambdaRequest, base_path: str) -> LambdaRequest:
    base = "/" + base_path.strip("/")
    if base != "/" and (req.path == base or req.path.startswith(base + "/")):
        req.path = req.path[len(base) :] or "/"
    return req


def _response(req: LambdaRequest, status: int, content: bytes, headers: dict[str, str]) -> dict[str, Any]:
    headers = {"content-length": str(len(content)), **headers}
    binary = not headers.get("content-type", "").startswith(JSON)
    body = base64.b64encode(content).decode() if binary else content.decode()
    out: dict[str, Any] = {"statusCode": status, "body": body, "isBase64Encoded": binary}
    if req.kind == "v2":
        out["headers"] = headers
    elif req.multi_value:
        out["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    elif req.kind == "alb":
        out["headers"] = headers
    else:
        out["headers"] = headers
        out["multiValueHeaders"] = {}
    return out


class FastPath:
    def __init__(
        self,
        registry: ModelRegistry,
        default_model: str,
        hooks: Hooks,
        base_path: str = "/",
    ) -> None:
        self.registry = registry
        self.default_model = default_model
        self.hooks = hooks
        self.base_path = base_path
        self.limit = registry.settings.max_body_bytes

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The response, or None when the request is not an inference request (Mangum answers it)."""
        req = parse_event(event, self.base_path)
        if req is None or req.method != "POST":
            return None
        handler = self._route(req)
        if handler is None:
            return None
        try:
            body = self._body(req)
            content, headers = handler(body)
            return _response(req, 200, content, headers)
        except ModelfnError as e:
            if e.status >= 500:
                log.warning("%s", e.message)
            return _response(req, e.status, jsonio.dumps({"error": e.message}), {"content-type": JSON})
        except Exception as e:  # a server fault, as the app's catch-all answers it
            log.exception("unhandled error")
            error = {"error": f"internal error: {type(e).__name__}: {e}"}
            return _response(req, 500, jsonio.dumps(error), {"content-type": JSON})

    def _route(self, req: LambdaRequest) -> Callable[[bytes], tuple[bytes, dict[str, str]]] | None:
        if m := V2_INFER.match(req.path):
            name, version = m["name"], m["version"]
            header = req.headers.get(v2.HEADER.lower())
            return lambda body: self._v2(name, version, header, body)
        if m := TF_PREDICT.match(req.path):
            name, version = m["name"], m["version"] or m["label"]
            return lambda body: self._tf(name, version, body)
        if req.path == "/predict":
            named = parse_qs(req.query).get("model")
            model = named[-1] if named else None
            return lambda body: self._plain(model, body)
        return None

    def _body(self, req: LambdaRequest) -> bytes:
        if len(req.body) > self.limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes (MODELFN_MAX_BODY_BYTES)")
        encoding = req.headers.get("content-encoding", "identity").lower()
        if encoding in ("identity", ""):
            return req.body
        try:
            if encoding == "gzip":
                out = gzip.decompress(req.body)
            elif encoding == "deflate":
                out = zlib.decompress(req.body)
            else:
                raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or none")
        except (OSError, zlib.error, EOFError) as e:
            raise InvalidInput(f"body is not valid {encoding} data: {e}") from e
        if len(out) > self.limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes (MODELFN_MAX_BODY_BYTES)")
        return out

    def _model(self, name: str, version: str | None) -> LoadedModel:
        return self.registry.get(name, version)

    def _v2(self, name: str, version: str | None, header: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
        model = self._model(name, version)
        try:
            header_len = int(header) if header is not None else None
        except ValueError as e:
            raise InvalidInput(f"{v2.HEADER} must be an integer, got {header!r}") from e
        req = v2.decode_request(body, header_len, model)
        content, json_len = v2.encode_response(
            model, model.predict(req.inputs, req.outputs or None), req.binary_outputs, req.id
        )
        if json_len is None:
            return content, {"content-type": JSON}
        return content, {"content-type": "application/octet-stream", v2.HEADER.lower(): str(json_len)}

    def _tf(self, name: str, version: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
        model = self._model(name, version)
        req = tfserving.decode_request(body, model)
        return jsonio.dumps(tfserving.encode_response(model.predict(req.inputs), req.row_format)), {
            "content-type": JSON
        }

    def _plain(self, name: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
        target = name or self.default_model
        version = self.registry.settings.version if target == self.default_model else None
        model = self._model(target, version)
        hooks = self.hooks if target == self.default_model else Hooks()
        inputs = plain.decode_request(body, model, hooks.preprocess)
        answer = plain.encode_response(model.predict(inputs), model, hooks.postprocess)
        return jsonio.dumps(answer), {"content-type": JSON}
