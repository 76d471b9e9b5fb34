"""API Gateway (REST v1, HTTP API v2), Lambda function URLs and ALB, through Mangum with lifespan off."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from mangum import Mangum

from modelfn.adapters.lambda_http import unstaged


def strip_stage(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a named HTTP API stage taken out of its path, as the fast path reads it."""
    ctx = event.get("requestContext") or {}
    http = ctx.get("http")
    if not isinstance(http, dict):
        return event
    path = http.get("path", "")
    stripped = unstaged(ctx, path)
    if stripped == path:
        return event
    return {**event, "rawPath": stripped, "requestContext": {**ctx, "http": {**http, "path": stripped}}}


class HttpHandler:
    def __init__(self, app: FastAPI, base_path: str = "/") -> None:
        self.adapter = Mangum(app, lifespan="off", api_gateway_base_path=base_path)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.adapter(strip_stage(event), context)
