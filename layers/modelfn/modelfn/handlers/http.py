"""API Gateway (REST v1, HTTP API v2), Lambda function URLs and ALB, through Mangum with lifespan off."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from mangum import Mangum


def strip_stage(event: dict[str, Any]) -> dict[str, Any]:
    """HTTP API events of a named stage carry it in the path (/prod/v2/...); the app's routes do not."""
    ctx = event.get("requestContext") or {}
    stage = ctx.get("stage")
    http = ctx.get("http")
    if not stage or stage == "$default" or not isinstance(http, dict):
        return event
    prefix = f"/{stage}"
    path = http.get("path", "")
    if path != prefix and not path.startswith(prefix + "/"):
        return event
    stripped = path[len(prefix) :] or "/"
    return {**event, "rawPath": stripped, "requestContext": {**ctx, "http": {**http, "path": stripped}}}


class HttpHandler:
    def __init__(self, app: FastAPI, base_path: str = "/") -> None:
        self.adapter = Mangum(app, lifespan="off", api_gateway_base_path=base_path)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.adapter(strip_stage(event), context)
