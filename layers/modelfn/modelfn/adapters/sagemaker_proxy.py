"""A Lambda HTTP handler for a model served by a SageMaker endpoint (the GPU container) rather than by Lambda.

API Gateway (REST v1, HTTP API v2), function URLs and ALB send the same routes as for a Lambda-served model:
`/v2/models/{m}[/...]`, `/v1/models/{m}[...]`, `/predict`, plus `/v2`, `/v2/health/*` and `/health`. Each request
becomes one `sagemaker-runtime` InvokeEndpoint, which reaches the container's `POST /invocations`:

- the body is passed as is, with `ContentType` and `Accept` from the request;
- the route goes in `CustomAttributes` (the one free-form field InvokeEndpoint hands to the container, as the
  header `X-Amzn-SageMaker-Custom-Attributes`): `modelfn-path=<percent-encoded "METHOD /path?query">`, plus
  `inference-header-content-length` and `content-encoding` when the request has them. The container's
  /invocations runs that route (see modelfn.adapters.sagemaker), so the whole HTTP API works through the endpoint.

The answer is the container's: its status (a non-2xx answer arrives as InvokeEndpoint's ModelError, carrying the
original status and body), body (base64 in the Lambda response when binary, as Mangum does for any non-text type)
and content type; a v2 binary answer's JSON length comes back in the response's CustomAttributes and is restored
as the `Inference-Header-Content-Length` header. Endpoint faults map to 502 (unknown endpoint, other errors),
503 (endpoint not ready, model not ready), 429 (throttled) and 504 (the model timed out), with `{"error": ...}`.

Environment: `MODELFN_SAGEMAKER_ENDPOINT` (required), `MODELFN_SAGEMAKER_TIMEOUT` (seconds to wait for the
endpoint's answer, default 25: under API Gateway's 30 s), `MODELFN_MODEL` (the model's name inside the container;
default: whatever the path names), `MODELFN_PUBLIC_MODEL` (the model's name in the API's paths, e.g. `mlp-gpu`,
rewritten to MODELFN_MODEL; default MODELFN_MODEL), `MODELFN_BASE_PATH` (API mapping base path to strip).
Paths naming another model get 404 here without an invocation. boto3 is the Lambda runtime's: no onnxruntime,
no model download, so this function's cold start is boto3's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from modelfn import jsonio
from modelfn.adapters.lambda_http import LambdaHttp
from modelfn.errors import ModelfnError
from modelfn.protocols import sagemaker
from modelfn.service.request import Request, Response, json_response
from modelfn.service.routes import CORE_ROUTES, RouteTable

SERVER_PATHS = {"/v2", "/v2/health/live", "/v2/health/ready", "/health"}
ROUTES = RouteTable(CORE_ROUTES)
_ERRORS = {
    "ValidationError": 502,  # unknown endpoint, bad parameters
    "ModelNotReadyException": 503,
    "ServiceUnavailable": 503,
    "InternalDependencyException": 503,
    "ThrottlingException": 429,
    "InternalFailure": 502,
}


class SageMakerProxy:
    """Answers each request of the Lambda HTTP adapter by forwarding it to the endpoint."""

    def __init__(
        self, endpoint: str, client: Any = None, model: str | None = None, public_model: str | None = None
    ) -> None:
        if not endpoint:
            raise ValueError("the SageMaker proxy needs MODELFN_SAGEMAKER_ENDPOINT")
        if client is None:
            import boto3
            from botocore.config import Config

            # Answer 504 before API Gateway's 30 s (and the function's 29 s) run out; a timed-out inference is not
            # retried (it would only pile up on the endpoint).
            timeout = float(os.environ.get("MODELFN_SAGEMAKER_TIMEOUT", "25"))
            config = Config(connect_timeout=2, read_timeout=timeout, retries={"total_max_attempts": 1})
            client = boto3.client("sagemaker-runtime", config=config)
        self.client = client
        self.endpoint = endpoint
        self.model = model
        self.public_model = public_model or model

    def target(self, request: Request) -> str | None:
        """`METHOD /path?query` for the container, or None when the route is not this model's. Routes are the
        service's own table (ModelfnError when it has no such route); the public name becomes the container's."""
        route = ROUTES.match(request.method, request.path)
        params, query = dict(route.params), request.query
        if "name" in params:
            if self.public_model is not None and params["name"] != self.public_model:
                return None
            params["name"] = self.model or params["name"]
        elif route.route.template == "/predict":
            pairs = dict(parse_qsl(query, keep_blank_values=True))
            asked = pairs.get("model")
            if asked is not None and self.public_model is not None and asked != self.public_model:
                return None
            if self.model is not None:
                pairs["model"] = self.model
            query = urlencode(pairs)
        elif route.route.template not in SERVER_PATHS:
            return None
        path = route.route.template.format(**params)
        return f"{request.method} {path}" + (f"?{query}" if query else "")

    def handle(self, request: Request) -> Response:
        try:
            route = self.target(request)
        except ModelfnError:  # no such route (or method) in the table: nothing the endpoint serves
            route = None
        if route is None:
            served = self.public_model or "this function's model"
            return json_response({"error": f"{request.path} is not served here (serving: {served})"}, 404)
        status, content_type, out_headers, payload = self.invoke(route, request.body, dict(request.headers))
        return Response(status, payload, {"content-type": content_type, **out_headers})

    def invoke(self, route: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, dict[str, str], bytes]:
        """One InvokeEndpoint: (status, content type, extra headers, body) of the container's answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        attrs = {sagemaker.PATH: route, **{h: headers[h] for h in sagemaker.FORWARDED_HEADERS if h in headers}}
        request: dict[str, Any] = {
            "EndpointName": self.endpoint,
            # InvokeEndpoint needs a body; GETs have none, and the container's GET routes ignore this one.
            "Body": body or b"{}",
            "ContentType": headers.get("content-type", "application/json"),
            "Accept": headers.get("accept", "*/*"),
            "CustomAttributes": sagemaker.format_attributes(attrs),
        }
        try:
            response = self.client.invoke_endpoint(**request)
        except ClientError as e:
            parsed: dict[str, Any] = dict(e.response)
            error = parsed.get("Error", {})
            code = error.get("Code", "")
            if code == "ModelError" and "OriginalStatusCode" in parsed:
                message = str(parsed.get("OriginalMessage") or "")
                return int(parsed["OriginalStatusCode"]), "application/json", {}, message.encode("utf-8")
            if code == "ModelError":
                status = 504 if "timed out" in str(error.get("Message", "")).lower() else 502
            else:
                status = _ERRORS.get(code, 502)
            return status, "application/json", {}, _error(f"SageMaker endpoint {self.endpoint}: {code}: {error}")
        except BotoCoreError as e:  # connection or read timeout, no credentials...
            return 504 if "timeout" in type(e).__name__.lower() else 502, "application/json", {}, _error(str(e))
        payload = response["Body"].read()
        out = {}
        length = sagemaker.parse_attributes(response.get("CustomAttributes")).get(sagemaker.BINARY_LENGTH)
        if length is not None:
            out["Inference-Header-Content-Length"] = length
        return 200, response.get("ContentType") or "application/json", out, payload


def _error(message: str) -> bytes:
    return jsonio.dumps({"error": message})


def create_handler(
    endpoint: str | None = None,
    client: Any = None,
    model: str | None = None,
    public_model: str | None = None,
    base_path: str | None = None,
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda handler; arguments default to the environment (see the module docstring)."""

    env = os.environ
    proxy = SageMakerProxy(
        endpoint or env.get("MODELFN_SAGEMAKER_ENDPOINT", ""),
        client,
        model or env.get("MODELFN_MODEL") or None,
        public_model or env.get("MODELFN_PUBLIC_MODEL") or None,
    )
    return LambdaHttp(proxy, base_path or env.get("MODELFN_BASE_PATH", "/"))


_handler: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None


def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """`Handler: modelfn.adapters.sagemaker_proxy.http_handler`: built from the environment on first use."""
    global _handler  # noqa: PLW0603 - one proxy per Lambda environment
    if _handler is None:
        _handler = create_handler()
    return _handler(event, context)
