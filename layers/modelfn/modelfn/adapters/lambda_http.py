"""Lambda HTTP events: API Gateway REST (payload 1.0), HTTP API (2.0), function URLs and ALB (with or without
multi-value headers), one class per event source as Mangum has them, each turning its event into the service's
Request and the Response back into the dict that source expects."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from modelfn.errors import InvalidInput
from modelfn.service.request import JSON, Request, Response, error_response
from modelfn.types import LambdaEvent


class Handles(Protocol):
    """What answers a Request: the service, or the SageMaker proxy."""

    def handle(self, request: Request) -> Response: ...


def _body(event: LambdaEvent) -> bytes:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidInput(f"the event says isBase64Encoded but its body is not base64: {e}") from e
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


def _lower(headers: Mapping[str, Any] | None) -> dict[str, str]:
    if not headers:
        return {}
    # map/zip rather than a comprehension: no Python frame of its own, on every request
    return dict(zip(map(str.lower, map(str, headers.keys())), map(str, headers.values()), strict=True))


TEXT = (JSON, "text/")
"""Content types answered as text; anything else is base64 with isBase64Encoded."""


def _encoded(response: Response) -> dict[str, Any]:
    headers = {"content-length": str(len(response.body)), **response.headers}
    binary = not headers.get("content-type", "").startswith(TEXT)
    body = base64.b64encode(response.body).decode() if binary else response.body.decode("utf-8")
    return {"statusCode": response.status, "headers": headers, "body": body, "isBase64Encoded": binary}


class HttpApi:
    """HTTP API payload 2.0, and Lambda function URLs (the same shape). A named stage is part of the path."""

    @staticmethod
    def matches(event: LambdaEvent) -> bool:
        return event.get("version") == "2.0" and isinstance((event.get("requestContext") or {}).get("http"), dict)

    @staticmethod
    def request(event: LambdaEvent) -> Request:
        ctx = event["requestContext"]
        path = unstaged(ctx.get("stage"), ctx["http"].get("path") or event.get("rawPath") or "/")
        headers = _lower(event.get("headers"))
        if event.get("cookies"):
            headers["cookie"] = "; ".join(event["cookies"])
        return Request(ctx["http"].get("method", ""), path, event.get("rawQueryString") or "", headers, _body(event))

    response = staticmethod(_encoded)


class RestApi:
    """API Gateway REST APIs (payload 1.0): query values arrive decoded and are encoded again here."""

    @staticmethod
    def matches(event: LambdaEvent) -> bool:
        return "httpMethod" in event and "elb" not in (event.get("requestContext") or {})

    @staticmethod
    def request(event: LambdaEvent) -> Request:
        query = urlencode(_query_pairs(event))
        return Request(event["httpMethod"], event.get("path") or "/", query, _headers_v1(event), _body(event))

    @staticmethod
    def response(response: Response) -> dict[str, Any]:
        return {**_encoded(response), "multiValueHeaders": {}}


class Alb:
    """Application Load Balancer targets: query values arrive as the client encoded them and stay so; the answer
    uses multi-value headers when the target group has them on (the event then carries them)."""

    def __init__(self, multi_value: bool) -> None:
        self.multi_value = multi_value

    @staticmethod
    def matches(event: LambdaEvent) -> bool:
        return "httpMethod" in event and "elb" in (event.get("requestContext") or {})

    @staticmethod
    def request(event: LambdaEvent) -> Request:
        query = "&".join(f"{k}={v}" for k, v in _query_pairs(event))
        return Request(event["httpMethod"], event.get("path") or "/", query, _headers_v1(event), _body(event))

    def response(self, response: Response) -> dict[str, Any]:
        out = _encoded(response)
        if self.multi_value:
            out["multiValueHeaders"] = {k: [v] for k, v in out.pop("headers").items()}
        return out


def _query_pairs(event: LambdaEvent) -> list[tuple[str, str]]:
    """REST v1 and ALB query parameters as (name, value) pairs, from the multi-value form when the event has it."""
    multi = event.get("multiValueQueryStringParameters") or {
        k: [v] for k, v in (event.get("queryStringParameters") or {}).items()
    }
    return [(k, v) for k, vs in multi.items() for v in vs or []]


def _headers_v1(event: LambdaEvent) -> dict[str, str]:
    if event.get("multiValueHeaders"):
        return {str(k).lower(): str(v[-1]) for k, v in event["multiValueHeaders"].items() if v}
    return _lower(event.get("headers"))


def unstaged(stage: str | None, path: str) -> str:
    """HTTP API events of a named stage carry it in the path (/prod/v2/...); the routes do not."""
    if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
        return path[len(stage) + 1 :] or "/"
    return path


def source_ip(event: LambdaEvent) -> str | None:
    """The caller's address as API Gateway saw it (HTTP API and function URLs: `http.sourceIp`; REST:
    `identity.sourceIp`; ALB events carry none), for rate limits without API keys."""
    ctx = event.get("requestContext") or {}
    ip = (ctx.get("http") or {}).get("sourceIp") or (ctx.get("identity") or {}).get("sourceIp")
    return str(ip) if ip else None


_HTTP_API, _REST_API = HttpApi(), RestApi()


def source_of(event: LambdaEvent) -> HttpApi | RestApi | Alb | None:
    if HttpApi.matches(event):
        return _HTTP_API
    if Alb.matches(event):
        return Alb("multiValueHeaders" in event)
    if RestApi.matches(event):
        return _REST_API
    return None


class LambdaHttp:
    """The HTTP handler of a function: event -> Request -> service -> the event source's response dict.
    `base_path`: an API mapping's base path (a custom domain's `/models`), stripped before routing."""

    def __init__(self, service: Handles, base_path: str = "/") -> None:
        self.service = service
        self.base = "/" + base_path.strip("/")

    def __call__(self, event: LambdaEvent, context: Any = None) -> dict[str, Any]:
        source = source_of(event)
        if source is None:
            raise ValueError("not an HTTP event (API Gateway REST or HTTP API, function URL, or ALB)")
        try:
            request = source.request(event)
        except InvalidInput as e:
            return source.response(error_response(e))
        request.client = source_ip(event)
        if self.base != "/" and (request.path == self.base or request.path.startswith(self.base + "/")):
            request.path = request.path[len(self.base) :] or "/"
        return source.response(self.service.handle(request))
