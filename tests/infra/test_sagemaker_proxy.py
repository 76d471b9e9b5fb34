"""The Lambda handler that forwards a heavy model's HTTP API to a SageMaker endpoint, against the real container
entrypoint. moto does not run endpoints, so a stand-in sagemaker-runtime client does what InvokeEndpoint does:
POST the body to the container's /invocations with ContentType, Accept and CustomAttributes as SageMaker's headers,
and answer a non-2xx as a ModelError carrying the original status and body."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import uuid
from typing import Any, cast
from urllib.parse import urlencode

import boto3
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from modelfn.adapters import sagemaker_proxy
from modelfn.adapters.sagemaker_proxy import create_handler

from .conftest import Container, Reference

ENDPOINT = "modelfn-mlp-gpu"
ROWS = np.random.default_rng(11).normal(size=(4, 256)).astype(np.float32)


class FakeSageMakerRuntime:
    """invoke_endpoint as SageMaker runs it, on the local container process."""

    def __init__(self, base: str, endpoint: str = ENDPOINT) -> None:
        self.base = base
        self.endpoint = endpoint
        self.calls: list[dict[str, Any]] = []

    def invoke_endpoint(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        if kw["EndpointName"] != self.endpoint:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": f"Endpoint {kw['EndpointName']} not found."}},
                "InvokeEndpoint",
            )
        headers = {"Content-Type": kw.get("ContentType", "application/octet-stream"), "Accept": kw.get("Accept", "*/*")}
        if "CustomAttributes" in kw:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = kw["CustomAttributes"]
        r = httpx.post(f"{self.base}/invocations", content=kw["Body"], headers=headers, timeout=60)
        if not 200 <= r.status_code < 300:
            raise ClientError(
                cast(
                    Any,
                    {
                        "Error": {
                            "Code": "ModelError",
                            "Message": f"Received client error ({r.status_code}) from primary with message {r.text!r}",
                        },
                        "OriginalStatusCode": r.status_code,
                        "OriginalMessage": r.text,
                        "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
                        "ResponseMetadata": {"HTTPStatusCode": 424},
                    },
                ),
                "InvokeEndpoint",
            )
        out: dict[str, Any] = {
            "Body": StreamingBody(io.BytesIO(r.content), len(r.content)),
            "ContentType": r.headers["content-type"],
            "InvokedProductionVariant": "AllTraffic",
        }
        if "x-amzn-sagemaker-custom-attributes" in r.headers:
            out["CustomAttributes"] = r.headers["x-amzn-sagemaker-custom-attributes"]
        return out


def http_api_event(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """API Gateway HTTP API, payload format 2.0, $default stage."""
    hdrs = {"host": "abc123.execute-api.us-east-1.amazonaws.com", **{k.lower(): v for k, v in (headers or {}).items()}}
    text = hdrs.get("content-type", "application/json").startswith("application/json")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": hdrs["host"],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.1",
                "userAgent": "t",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": 1704067200000,
        },
        "isBase64Encoded": bool(body) and not text,
    }
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = body.decode() if text else base64.b64encode(body).decode()
    return event


def rest_event(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    """API Gateway REST API, Lambda proxy integration, stage prod."""
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.1"},
        },
        "body": body.decode() if body else None,
        "isBase64Encoded": False,
    }


def answer(response: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    raw = response.get("body") or ""
    body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
    return int(response["statusCode"]), headers, body


def v2_json(rows: np.ndarray = ROWS) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.fixture
def runtime(container: Container) -> FakeSageMakerRuntime:
    return FakeSageMakerRuntime(container.base)


@pytest.fixture
def handler(runtime: FakeSageMakerRuntime) -> Any:
    """The proxy for the public name `mlp-gpu`, served as `mlp` inside the endpoint's container."""
    return create_handler(endpoint=ENDPOINT, client=runtime, model="mlp", public_model="mlp-gpu")


def test_v2_json_infer_through_the_endpoint(handler: Any, runtime: FakeSageMakerRuntime, reference: Reference) -> None:
    status, headers, body = answer(handler(http_api_event("POST", "/v2/models/mlp-gpu/infer", v2_json()), None))
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    out = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in json.loads(body)["outputs"]}
    expected = reference.run("mlp", 2, {"input": ROWS})
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)
    [call] = runtime.calls
    assert call["EndpointName"] == ENDPOINT
    assert call["ContentType"] == "application/json"
    assert call["CustomAttributes"] == "modelfn-path=POST%20/v2/models/mlp/infer"


def test_binary_tensors_round_trip_as_base64(handler: Any, reference: Reference) -> None:
    """tritonclient's own binary request body; the answer's binary outputs come back base64 with their header."""
    inp = triton.InferInput("input", list(ROWS.shape), "FP32")
    inp.set_data_from_numpy(ROWS, binary_data=True)
    outs = [triton.InferRequestedOutput("probabilities", binary_data=True)]
    body, json_len = triton.InferenceServerClient.generate_request_body([inp], outputs=outs)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_len)}
    event = http_api_event("POST", "/v2/models/mlp-gpu/versions/1/infer", body, headers)
    assert event["isBase64Encoded"] is True
    response = handler(event, None)
    assert response["isBase64Encoded"] is True
    status, out_headers, raw = answer(response)
    assert status == 200, raw
    header_len = int(out_headers["inference-header-content-length"])
    result = triton.InferenceServerClient.parse_response_body(raw, header_length=header_len)
    assert result.get_response()["model_version"] == "1"
    expected = reference.run("mlp", 1, {"input": ROWS})["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)


def test_metadata_tf_and_predict_routes(handler: Any, reference: Reference) -> None:
    status, _, body = answer(handler(http_api_event("GET", "/v2/models/mlp-gpu"), None))
    assert status == 200, body
    assert json.loads(body)["name"] == "mlp"
    expected = reference.run("mlp", 2, {"input": ROWS})["probabilities"]
    tf = json.dumps({"instances": ROWS.tolist()}).encode()
    status, _, body = answer(handler(rest_event("POST", "/v1/models/mlp-gpu:predict", tf), None))
    assert status == 200, body
    np.testing.assert_allclose([p["probabilities"] for p in json.loads(body)["predictions"]], expected, rtol=1e-5)
    # mlp v2 is int8 with dynamic quantization: activation scales come from the whole batch, so compare like for like
    expected = reference.run("mlp", 2, {"input": ROWS[:2]})["probabilities"]
    plain = json.dumps({"features": ROWS[:2].tolist()}).encode()
    status, _, body = answer(handler(http_api_event("POST", "/predict", plain), None))
    assert status == 200, body
    np.testing.assert_allclose([p["probabilities"] for p in json.loads(body)["predictions"]], expected, rtol=1e-5)


def test_container_errors_keep_their_status_and_body(handler: Any) -> None:
    status, _, body = answer(handler(http_api_event("GET", "/v2/models/mlp-gpu/versions/9"), None))
    assert status == 404
    assert "error" in json.loads(body)
    bad = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    status, _, body = answer(handler(http_api_event("POST", "/v2/models/mlp-gpu/infer", bad.encode()), None))
    assert status == 400
    assert "input" in json.loads(body)["error"]


def test_other_models_and_paths_are_not_forwarded(handler: Any, runtime: FakeSageMakerRuntime) -> None:
    for path in ("/v2/models/iris/infer", "/metrics", "/invocations", "/docs"):
        status, _, body = answer(handler(http_api_event("POST", path, b"{}"), None))
        assert status == 404, path
        assert "not served here" in json.loads(body)["error"]
    status, _, _ = answer(handler(http_api_event("POST", "/predict", b"{}", query={"model": "iris"}), None))
    assert status == 404
    assert runtime.calls == []


def test_endpoint_faults_map_to_gateway_errors(runtime: FakeSageMakerRuntime) -> None:
    missing = create_handler(endpoint="no-such-endpoint", client=runtime, model="mlp", public_model="mlp-gpu")
    status, _, body = answer(missing(http_api_event("POST", "/v2/models/mlp-gpu/infer", v2_json()), None))
    assert status == 502
    assert "no-such-endpoint" in json.loads(body)["error"]


def test_module_handler_reads_the_environment(monkeypatch: pytest.MonkeyPatch, runtime: FakeSageMakerRuntime) -> None:
    monkeypatch.setenv("MODELFN_SAGEMAKER_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("MODELFN_MODEL", "mlp")
    monkeypatch.setenv("MODELFN_PUBLIC_MODEL", "mlp-gpu")
    monkeypatch.setattr(sagemaker_proxy, "_handler", None)
    made: list[str] = []

    def client(service: str, **_: Any) -> FakeSageMakerRuntime:
        made.append(service)
        return runtime

    monkeypatch.setattr(boto3, "client", client)
    status, _, body = answer(sagemaker_proxy.http_handler(http_api_event("GET", "/v2/models/mlp-gpu/ready"), None))
    assert status == 200, body
    assert json.loads(body) == {"name": "mlp", "version": "2", "ready": True}
    assert made == ["sagemaker-runtime"]
    assert runtime.calls[-1]["EndpointName"] == ENDPOINT
    sagemaker_proxy.http_handler(http_api_event("GET", "/v2/models/mlp-gpu/ready"), None)
    assert made == ["sagemaker-runtime"]  # built once per Lambda environment


def test_lambda_path_never_imports_the_server_stack() -> None:
    """prometheus_client and uvicorn belong to the container; the Lambda handlers (this proxy included) load
    without them."""
    code = (
        "import sys, modelfn.function, modelfn.adapters.sagemaker_proxy, modelfn.http.app;"
        "print(sorted(m for m in ('prometheus_client', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
