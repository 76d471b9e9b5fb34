"""The HTTP handler answers as `modelfn serve` does, whichever front door the request came through: API Gateway
REST (v1), HTTP API (v2, default and named stage), Lambda function URLs and ALB. Every case is sent both ways:
as a Lambda event to ModelFunction.http_handler, and over HTTP to the `server` fixture (a real `modelfn serve`)."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import numpy as np
import pytest

from modelfn.function import ModelFunction
from modelfn.hooks import Hooks
from modelfn.model.loaded import LoadedModel
from modelfn.protocols.v2 import HEADER as V2_HEADER
from modelfn.settings import Settings

from .conftest import LambdaContext

# With metrics disabled Powertools keeps the metric set between invocations and flushes it itself every 100
# values, after which an invocation may find it empty and warn.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

ACCOUNT = "123456789012"
API_ID = "a1b2c3d4e5"
URL_ID = "abcdefghijklmnopqrstuvwxyz012345"
IRIS_CLASSES = ("setosa", "versicolor", "virginica")


def add_class_names(rows: list[dict[str, Any]], model: LoadedModel) -> list[dict[str, Any]]:
    """The iris function's post-processing hook (functions/iris/app.py)."""
    for row in rows:
        row["class"] = IRIS_CLASSES[int(row["label"])]
    return rows


# ---- requests ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    server_query: dict[str, list[str]] | None = None  # where `modelfn serve` needs more (it serves every model)
    model: str = "iris"  # the function that answers it
    binary: bool = False

    def __str__(self) -> str:
        return self.name


def _iris(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = np.array([4.3, 2.0, 1.0, 0.1], dtype=np.float32)
    hi = np.array([7.9, 4.4, 6.9, 2.5], dtype=np.float32)
    return (lo + rng.random((n, 4), dtype=np.float32) * (hi - lo)).astype(np.float32)


def _json_case(name: str, path: str, doc: Any, **kw: Any) -> Case:
    return Case(name, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json"}, **kw)


def _binary_case() -> Case:
    """tritonclient's binary tensor extension: JSON header, then the FP32 bytes; binary outputs asked for."""
    x = np.random.default_rng(7).standard_normal((3, 256)).astype(np.float32)
    head = json.dumps(
        {
            "id": "bin-1",
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [3, 256],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "logits"}],
        }
    ).encode()
    return Case(
        "v2-binary-infer",
        "POST",
        "/v2/models/mlp/infer",
        head + x.tobytes(),
        {"Content-Type": "application/octet-stream", V2_HEADER: str(len(head))},
        model="mlp",
        binary=True,
    )


X = _iris(6, seed=3)
CASES = [
    _json_case(
        "v2-json-infer",
        "/v2/models/iris/infer",
        {
            "id": "req-1",
            "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [4, 4], "data": X[:4].ravel().tolist()}],
        },
    ),
    _json_case(
        "v2-json-infer-version-outputs",
        "/v2/models/iris/versions/1/infer",
        {
            "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [2, 4], "data": X[4:].tolist()}],
            "outputs": [{"name": "probabilities"}],
        },
    ),
    _binary_case(),
    _json_case("tf-predict-instances", "/v1/models/iris:predict", {"instances": X[:3].tolist()}),
    _json_case(
        "tf-predict-inputs-label",
        "/v1/models/iris/labels/stable:predict",
        {"inputs": {"float_input": X[3:].tolist()}},
    ),
    _json_case("predict", "/predict", {"features": X[:5].tolist()}, server_query={"model": ["iris"]}),
    _json_case("predict-one-row", "/predict", {"features": X[5].tolist()}, server_query={"model": ["iris"]}),
    Case("v2-metadata", "GET", "/v2/models/iris"),
    Case("v2-model-ready", "GET", "/v2/models/iris/ready"),
    Case("tf-status", "GET", "/v1/models/iris"),
    Case("tf-metadata", "GET", "/v1/models/iris/versions/1/metadata"),
    _json_case(
        "400-wrong-datatype",
        "/v2/models/iris/infer",
        {"inputs": [{"name": "float_input", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    ),
    Case(
        "400-invalid-json",
        "POST",
        "/v1/models/iris:predict",
        b'{"instances": [1, 2',
        {"Content-Type": "application/json"},
    ),
    Case("404-missing-version", "GET", "/v2/models/iris/versions/99"),
    Case("404-no-route", "GET", "/v3/nothing/here"),
    Case("health", "GET", "/health"),
    Case("v2-live", "GET", "/v2/health/live"),
]


# ---- events ------------------------------------------------------------------------------------------------
def _headers(case: Case) -> dict[str, str]:
    headers = {
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "pytest-modelfn",
        "Accept": "*/*",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
        **case.headers,
    }
    if case.body:
        headers["Content-Length"] = str(len(case.body))
    return headers


def _body(case: Case) -> tuple[str | None, bool]:
    if not case.body:
        return None, False
    if case.binary:
        return base64.b64encode(case.body).decode(), True
    return case.body.decode(), False


def rest_v1_event(case: Case, stage: str = "prod") -> dict[str, Any]:
    """API Gateway REST API, Lambda proxy integration ({proxy+} resource): the stage is not in `path`."""
    headers = _headers(case)
    body, b64 = _body(case)
    return {
        "resource": "/{proxy+}",
        "path": case.path,
        "httpMethod": case.method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in case.query.items()} or None,
        "multiValueQueryStringParameters": case.query or None,
        "pathParameters": {"proxy": case.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": case.method,
            "extendedRequestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": "01/Jan/2024:00:00:00 +0000",
            "path": f"/{stage}{case.path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": API_ID,
            "requestTimeEpoch": 1704067200000,
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.10", "userAgent": "pytest-modelfn"},
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "apiId": API_ID,
        },
        "body": body,
        "isBase64Encoded": b64,
    }


def http_v2_event(case: Case, stage: str = "$default", domain: str | None = None) -> dict[str, Any]:
    """HTTP API (payload format 2.0); a named stage appears in rawPath and requestContext.http.path."""
    path = case.path if stage == "$default" else f"/{stage}{case.path}"
    domain = domain or f"{API_ID}.execute-api.us-east-1.amazonaws.com"
    headers = {k.lower(): v for k, v in _headers(case).items()}
    headers["host"] = domain
    body, b64 = _body(case)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default" if stage == "$default" else "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": urlencode(case.query, doseq=True),
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": domain.split(".")[0],
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": case.method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "pytest-modelfn",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default" if stage == "$default" else "ANY /{proxy+}",
            "stage": stage,
            "time": "01/Jan/2024:00:00:00 +0000",
            "timeEpoch": 1704067200000,
        },
        "isBase64Encoded": b64,
    }
    if case.query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in case.query.items()}
    if stage != "$default":
        event["pathParameters"] = {"proxy": case.path.lstrip("/")}
    if body is not None:
        event["body"] = body
    return event


def function_url_event(case: Case) -> dict[str, Any]:
    return http_v2_event(case, domain=f"{URL_ID}.lambda-url.us-east-1.on.aws")


def alb_event(case: Case) -> dict[str, Any]:
    body, b64 = _body(case)
    return {
        "requestContext": {
            "elb": {
                "targetGroupArn": f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:targetgroup/modelfn/0123456789ab"
            }
        },
        "httpMethod": case.method,
        "path": case.path,
        "queryStringParameters": {k: v[-1] for k, v in case.query.items()},
        "headers": {k.lower(): v for k, v in _headers(case).items()},
        "body": body or "",
        "isBase64Encoded": b64,
    }


def alb_multi_value_event(case: Case) -> dict[str, Any]:
    """ALB with multi-value headers turned on for the target group: the event (and the answer) carry lists."""
    event = alb_event(case)
    event["multiValueHeaders"] = {k: [v] for k, v in event.pop("headers").items()}
    event["multiValueQueryStringParameters"] = dict(case.query)
    del event["queryStringParameters"]
    return event


EVENTS: dict[str, Callable[[Case], dict[str, Any]]] = {
    "rest-v1": rest_v1_event,
    "http-v2": http_v2_event,
    "http-v2-stage": lambda case: http_v2_event(case, stage="prod"),
    "function-url": function_url_event,
    "alb": alb_event,
    "alb-multi-value": alb_multi_value_event,
}


# ---- answers -----------------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def lambda_answer(response: dict[str, Any]) -> Answer:
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        headers[k.lower()] = ", ".join(values)
    raw = response.get("body") or ""
    body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
    return Answer(int(response["statusCode"]), headers, body)


def server_answer(base: str, case: Case) -> Answer:
    query = case.server_query if case.server_query is not None else case.query
    r = httpx.request(
        case.method, base + case.path, params=query or None, content=case.body or None, headers=case.headers, timeout=30
    )
    return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def assert_same(actual: Any, expected: Any, where: str = "$") -> None:
    """Same structure, same strings and integers, floats within float32 noise."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert sorted(actual) == sorted(expected), (where, sorted(actual), sorted(expected))
        for k in expected:
            assert_same(actual[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(actual, float | int), where
        assert math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-6), (where, actual, expected)
    else:
        assert actual == expected, (where, actual, expected)


def split_binary(answer: Answer) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A v2 binary response: the JSON header, then each binary output's raw FP32 values."""
    n = int(answer.headers[V2_HEADER.lower()])
    head = json.loads(answer.body[:n])
    arrays, offset = [], n
    for out in head["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arrays.append(np.frombuffer(answer.body[offset : offset + size], dtype="<f4"))
            offset += size
    assert offset == len(answer.body)
    return head, arrays


# ---- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def functions(s3_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModelFunction]]:
    """The iris function (with its class-name hook) and the mlp function, built once for the module. Powertools
    is quieted here too (module scope runs before the per-test autouse fixture)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    mp.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    mp.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    cache: Path = tmp_path_factory.mktemp("http-fn-cache")
    try:
        yield {
            name: ModelFunction(
                Settings(store=s3_store, model=name, cache_dir=cache), Hooks(postprocess=hook), base_path="/"
            )
            for name, hook in (("iris", add_class_names), ("mlp", None))
        }
    finally:
        mp.undo()


# ---- the comparison ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(EVENTS))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_lambda_answers_as_the_server_does(
    case: Case, kind: str, functions: dict[str, ModelFunction], server: str, lambda_context: LambdaContext
) -> None:
    fn = functions[case.model]
    if case.name == "health":
        # as after a cold start (models are loaded at init; this module's tests clear the process's model cache)
        fn.load()
        httpx.get(f"{server}/v2/models/iris/ready", timeout=30).raise_for_status()
    event = EVENTS[kind](case)
    response = fn.http_handler(event, lambda_context)
    got = lambda_answer(response)
    want = server_answer(server, case)

    assert got.status == want.status, (got.body, want.body)
    assert got.headers["content-type"] == want.headers["content-type"]

    if case.binary:
        assert response["isBase64Encoded"] is True
        assert got.headers[V2_HEADER.lower()] == want.headers[V2_HEADER.lower()]
        got_head, got_arrays = split_binary(got)
        want_head, want_arrays = split_binary(want)
        assert got_head["id"] == "bin-1"
        assert_same(got_head, want_head)
        assert len(got_arrays) == len(want_arrays) == 1
        np.testing.assert_allclose(got_arrays[0], want_arrays[0], rtol=1e-5, atol=1e-6)
        return

    assert response["isBase64Encoded"] is False
    body, expected = got.json(), want.json()
    if case.name.startswith("predict"):
        # the server has no hooks: the same fields, and the function's hook adds the class name
        for row in body["predictions"]:
            assert row.pop("class") == IRIS_CLASSES[row["label"]]
    elif case.name == "health":
        # both processes are healthy and run the same iris artifact; what else they loaded, and when, differs
        assert (body["status"], body["version"]) == (expected["status"], expected["version"])
        assert body["loaded"]["iris/1"]["sha256"] == expected["loaded"]["iris/1"]["sha256"]
        return
    assert_same(body, expected)
    if want.status >= 400:
        assert set(body) == {"error"}


def test_predict_hook_answers_class_names(functions: dict[str, ModelFunction], lambda_context: LambdaContext) -> None:
    setosa = [5.1, 3.5, 1.4, 0.2]
    virginica = [7.7, 3.0, 6.1, 2.3]
    case = _json_case("predict", "/predict", {"features": [setosa, virginica]})
    answer = lambda_answer(functions["iris"].http_handler(http_v2_event(case), lambda_context))
    assert answer.status == 200
    assert [(r["label"], r["class"]) for r in answer.json()["predictions"]] == [(0, "setosa"), (2, "virginica")]


def test_query_strings_reach_the_app(functions: dict[str, ModelFunction], lambda_context: LambdaContext) -> None:
    """/predict?model=iris through each event kind's own query-string encoding."""
    case = _json_case("predict", "/predict", {"features": X[0].tolist()}, query={"model": ["iris"]})
    for kind, make in EVENTS.items():
        event = make(case)
        if kind.startswith("http") or kind == "function-url":
            assert parse_qs(event["rawQueryString"]) == {"model": ["iris"]}
        answer = lambda_answer(functions["iris"].http_handler(event, lambda_context))
        assert answer.status == 200, (kind, answer.body)
        assert len(answer.json()["predictions"]) == 1


def test_metrics_are_emitted_as_emf(
    s3_store: str,
    tmp_path: Path,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With POWERTOOLS_METRICS_DISABLED unset (as deployed), each invocation prints EMF lines in the modelfn
    namespace: ColdStart on the first one, HttpLatency on every one."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    fn = ModelFunction(Settings(store=s3_store, model="iris", cache_dir=tmp_path), Hooks(postprocess=add_class_names))
    capsys.readouterr()

    answer = lambda_answer(fn.http_handler(http_v2_event(CASES[0]), lambda_context))
    assert answer.status == 200

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [doc for doc in lines if "_aws" in doc]
    names: set[str] = set()
    for doc in emf:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "modelfn"
            names.update(m["Name"] for m in directive["Metrics"])
    assert {"ColdStart", "HttpLatency"} <= names, lines
    cold = next(doc for doc in emf if "ColdStart" in doc)
    assert cold["ColdStart"] == [1.0]
    assert cold["function_name"] == lambda_context.function_name
    assert cold["service"] == "iris"
    latency = next(doc for doc in emf if "HttpLatency" in doc)
    assert latency["service"] == "iris"
    assert len(latency["HttpLatency"]) == 1 and latency["HttpLatency"][0] > 0

    # a warm invocation: latency again, no second cold start
    assert lambda_answer(fn.http_handler(http_v2_event(CASES[0]), lambda_context)).status == 200
    warm = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any("HttpLatency" in doc for doc in warm)
    assert not any("ColdStart" in doc for doc in warm)
