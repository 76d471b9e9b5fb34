"""The Lambda side of the inference fast path (modelfn/fastpath.py): API Gateway REST (v1), HTTP API (v2),
function URL and ALB events in, the response dict out, with no ASGI round trip. Everything that is not an
inference request returns None here and goes to the FastAPI app through Mangum."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from modelfn.fastpath import JSON, FastPath


def unstaged(ctx: dict[str, Any], path: str) -> str:
    """HTTP API events of a named stage carry it in the path (/prod/v2/...); the app's routes do not."""
    stage = ctx.get("stage")
    if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
        return path[len(stage) + 1 :] or "/"
    return path


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
        path = unstaged(ctx, path)
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


class LambdaFastPath:
    def __init__(self, fast: FastPath, base_path: str = "/") -> None:
        self.fast = fast
        self.base_path = base_path

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The response, or None when the request is not an inference request (Mangum answers it)."""
        req = parse_event(event, self.base_path)
        if req is None:
            return None
        route = self.fast.route(req.method, req.path, req.query, req.headers)
        if route is None:
            return None
        return _response(req, *self.fast.answer(route, req.body, req.headers))
