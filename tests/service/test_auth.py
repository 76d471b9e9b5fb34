"""MODELFN_API_KEYS: with keys set, every route but the public ones answers 401 (with WWW-Authenticate) unless the
request carries a configured key as a Bearer token or X-API-Key; keys may be configured as their sha256; no key
ever reaches a log line or an answer; /invocations cannot reach another route without the key; and the Lambda
path applies the same keys."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelfn.adapters.lambda_http import LambdaHttp
from modelfn.adapters.sagemaker import create_container_app
from modelfn.function import ModelFunction
from modelfn.http import create_app
from modelfn.protocols.sagemaker import format_attributes
from modelfn.registry import ModelRegistry
from modelfn.service.auth import ApiKeys, presented_key
from modelfn.service.routes import CONTAINER_ROUTES, CORE_ROUTES, Route, RouteTable
from modelfn.settings import Settings

KEY = "k-3f9a1c0d-good"
OTHER = "k-other-second-key"
HASHED = "k-configured-by-digest-only"
WRONG = "k-3f9a1c0d-wrong"
KEYS = f"{KEY}, {OTHER},sha256:{hashlib.sha256(HASHED.encode()).hexdigest()}"
ROW = [5.1, 3.5, 1.4, 0.2]
V2 = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}
PUBLIC = {"/health", "/v2/health/live", "/v2/health/ready", "/ping", "/docs", "/openapi.json"}


def _client(s3_store: str, tmp_path: Path, **settings: Any) -> TestClient:
    """The container's app (core routes plus /ping, /invocations, /metrics) serving iris."""
    registry = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path, **settings), ["iris"])
    return TestClient(create_container_app(registry, models=["iris"]))


@pytest.fixture
def client(s3_store: str, tmp_path: Path) -> TestClient:
    return _client(s3_store, tmp_path, api_keys=KEYS)


def test_the_public_routes_are_exactly_the_contracts() -> None:
    assert RouteTable(CORE_ROUTES + CONTAINER_ROUTES).public == PUBLIC


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v2", None),
        ("GET", "/v2/models/iris", None),
        ("GET", "/v2/models/iris/ready", None),
        ("POST", "/v2/models/iris/infer", V2),
        ("GET", "/v1/models/iris/metadata", None),
        ("POST", "/v1/models/iris:predict", {"instances": [ROW]}),
        ("POST", "/predict?model=iris", {"features": [ROW]}),
        ("POST", "/invocations", {"features": [ROW]}),
        ("GET", "/metrics", None),
        ("GET", "/no/such/route", None),  # 401, not 404: nothing is said to a client without a key
    ],
)
def test_every_other_route_needs_a_key(client: TestClient, method: str, path: str, body: Any) -> None:
    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"X-API-Key": WRONG}, {"Authorization": f"Basic {KEY}"}):
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert set(r.json()) == {"error"} and "API key" in r.json()["error"]
    r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == (404 if path == "/no/such/route" else 200), r.text


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_public_routes_answer_without_a_key(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (200, 503), r.text  # /ping is 503 until iris is loaded; never 401
    assert "www-authenticate" not in r.headers


def test_a_wrong_method_on_a_public_path_is_still_a_405(client: TestClient) -> None:
    assert client.post("/health").status_code == 405


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer   {OTHER}  "},
        {"X-API-Key": KEY},
        {"X-API-Key": HASHED},  # configured only as sha256:<hex>
        {"Authorization": f"Basic {WRONG}", "X-API-Key": OTHER},  # not a Bearer token: the X-API-Key counts
    ],
)
def test_each_configured_key_and_header_admits(client: TestClient, headers: dict[str, str]) -> None:
    r = client.post("/v2/models/iris/infer", json=V2, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0]


def test_a_near_key_is_refused(client: TestClient) -> None:
    for near in (KEY[:-1], KEY + "x", KEY.upper(), f"sha256:{hashlib.sha256(KEY.encode()).hexdigest()}"):
        assert client.get("/v2", headers={"X-API-Key": near}).status_code == 401, near


def test_without_keys_nothing_is_asked(s3_store: str, tmp_path: Path) -> None:
    client = _client(s3_store, tmp_path)
    assert client.post("/v2/models/iris/infer", json=V2).status_code == 200
    assert client.get("/metrics").status_code == 200


def test_keys_never_reach_a_log_or_an_answer(s3_store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = _client(s3_store, tmp_path, api_keys=KEYS)
    answers = []
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"Bearer {WRONG}"},
        {"X-API-Key": WRONG},
        {"X-API-Key": HASHED},
    ):
        for method, path, body in (("POST", "/v2/models/iris/infer", V2), ("POST", "/v2/models/nope/infer", V2)):
            answers.append(client.request(method, path, json=body, headers=headers).text)
        answers.append(client.post("/v2/models/iris/infer", content=b"{not json", headers=headers).text)
    settings = Settings(api_keys=KEYS)
    text = caplog.text + "".join(answers) + repr(settings) + str(settings) + json.dumps(vars(settings), default=str)
    for secret in (KEY, OTHER, HASHED, WRONG, "k-3f9a1c0d"):
        assert secret not in text


def test_a_malformed_digest_is_refused_without_echoing_the_setting() -> None:
    with pytest.raises(ValueError, match="entry 2") as e:
        ApiKeys.parse(f"{KEY},sha256:abc")
    assert KEY not in str(e.value)
    assert ApiKeys.parse(None) is None and ApiKeys.parse("  ") is None
    with pytest.raises(ValueError):
        ApiKeys.parse(" , ,")


def test_the_presented_key() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "Bearer "}) is None
    assert presented_key({"x-api-key": "  "}) is None
    assert presented_key({}) is None


# ---- /invocations -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["header", "custom-attributes"])
def test_invocations_cannot_route_around_the_keys(client: TestClient, how: str) -> None:
    """The outer /invocations is admitted; the route it runs is not admitted again (it would only charge the rate
    twice), so a bad key on /invocations routed to /metrics is a 401 and a good one reaches /metrics."""
    route = (
        {"X-Modelfn-Path": "GET /metrics"}
        if how == "header"
        else {"X-Amzn-SageMaker-Custom-Attributes": format_attributes({"modelfn-path": "GET /metrics"})}
    )
    for bad in ({}, {"X-API-Key": WRONG}):
        r = client.post("/invocations", headers={**route, **bad})
        assert r.status_code == 401, r.text
        assert "modelfn_requests_total" not in r.text
    r = client.post("/invocations", headers={**route, "X-API-Key": KEY})
    assert r.status_code == 200 and "modelfn_requests_total" in r.text


def test_invocations_is_charged_once(s3_store: str, tmp_path: Path) -> None:
    """With a rate of 1/s (burst 2), two /invocations running an explicit route both answer: each is one request."""
    client = _client(s3_store, tmp_path, api_keys=KEY, rate_limit=1)
    headers = {"X-API-Key": KEY, "X-Modelfn-Path": "POST /v2/models/iris/infer"}
    assert [client.post("/invocations", json=V2, headers=headers).status_code for _ in range(2)] == [200, 200]
    assert client.post("/invocations", json=V2, headers=headers).status_code == 429


# ---- the key is checked before the body is read -----------------------------------------------------------------
def test_a_request_without_a_key_is_refused_before_its_body_arrives(s3_store: str, tmp_path: Path) -> None:
    """The body never comes: answering at all proves the server did not wait for it."""
    registry = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path, api_keys=KEY), ["iris"])
    app = create_app(registry)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # never
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/iris/infer",
        "query_string": b"",
        "headers": [(b"content-length", b"5000")],
        "client": ("192.0.2.1", 5000),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent[0]["status"] == 401
    assert (b"connection", b"close") in sent[0]["headers"]  # the unread body is not waited for either


# ---- Lambda --------------------------------------------------------------------------------------------------
def _http_api_event(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", **headers},
        "requestContext": {"http": {"method": "POST", "path": "/predict", "sourceIp": "203.0.113.10"}},
        "body": json.dumps({"features": [ROW]}),
        "isBase64Encoded": False,
    }


def test_the_lambda_path_applies_the_same_keys(s3_store: str, tmp_path: Path) -> None:
    function = ModelFunction(Settings(store=s3_store, model="iris", cache_dir=tmp_path, api_keys=KEYS))
    handler = LambdaHttp(function.service)
    refused = handler(_http_api_event({"x-api-key": WRONG}))
    assert refused["statusCode"] == 401 and refused["headers"]["www-authenticate"].startswith("Bearer")
    answered = handler(_http_api_event({"authorization": f"Bearer {KEY}"}))
    assert answered["statusCode"] == 200, answered["body"]
    assert json.loads(answered["body"])["predictions"][0]["label"] == 0


def test_serve_refuses_a_malformed_key_setting_in_one_line(s3_store: str, tmp_path: Path) -> None:
    env = {**os.environ, "MODELFN_API_KEYS": f"{KEY},sha256:nothex", "MODELFN_CACHE_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", s3_store, "--models", "iris"]
    done = subprocess.run([*argv, "--port", "1"], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "MODELFN_API_KEYS entry 2" in done.stderr and KEY not in done.stderr + done.stdout


def test_a_public_route_must_be_a_fixed_path() -> None:
    with pytest.raises(ValueError, match="fixed path"):
        Route("GET", "/v2/models/{name}", "v2_model", ("v2",), "Model metadata", public=True)
