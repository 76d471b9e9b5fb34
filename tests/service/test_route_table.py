"""One route table: every route in it answers alike through every transport — the ASGI app `modelfn serve` runs,
the Lambda HTTP adapter for each event source (REST v1, HTTP API with the default and a named stage, function URL,
ALB with and without multi-value headers), and SageMaker's /invocations routed by X-Modelfn-Path. The cases are
built from the table itself, so a route added without a case here fails the enumeration test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelfn.adapters.sagemaker import create_container_app
from modelfn.function import ModelFunction
from modelfn.http import create_app
from modelfn.registry import ModelRegistry
from modelfn.service.request import VERSION_HEADER
from modelfn.service.routes import CONTAINER_ROUTES, CORE_ROUTES, Route
from modelfn.settings import Settings
from tests.adapters.conftest import LambdaContext
from tests.adapters.test_http_events import EVENTS, Answer, Case, assert_same, lambda_answer

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

ROW = [5.1, 3.5, 1.4, 0.2]
PARAMS = {"name": "iris", "version": "1", "label": "stable"}
BODIES: dict[str, list[tuple[str, Any]]] = {
    "v2": [
        ("ok", {"id": "r1", "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}),
        ("bad", {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 3], "data": ROW}]}),
    ],
    "tf": [("ok", {"instances": [ROW, ROW]}), ("bad", {"instances": [[1, 2]]})],
    "plain": [("ok", {"features": [ROW]}), ("bad", {"features": "nope"})],
}


def cases(route: Route) -> list[Case]:
    path = route.template.format(**PARAMS)
    if route.codec is None:
        return [Case(f"{route.method} {route.template}", route.method, path)]
    return [
        Case(
            f"{route.method} {route.template} {kind}",
            "POST",
            path,
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        for kind, body in BODIES[route.codec]
    ]


CASES = [case for route in CORE_ROUTES for case in cases(route)]


@pytest.fixture(scope="module")
def transports(s3_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The iris function as Lambda builds it, and the same service behind ASGI and behind /invocations."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    mp.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    settings = Settings(store=s3_store, model="iris", cache_dir=Path(tmp_path_factory.mktemp("routes")))
    fn = ModelFunction(settings)
    registry = ModelRegistry.from_uri(s3_store, settings, ["iris"])
    with (
        TestClient(create_app(registry, default_model="iris", title="iris")) as asgi,
        TestClient(create_container_app(registry, default_model="iris", models=["iris"])) as container,
    ):
        yield {"function": fn, "asgi": asgi, "container": container}
    mp.undo()


def counts_erased(value: Any) -> Any:
    """A statistics answer with its counts and times zeroed: each transport's service counts its own requests, so
    only the shape (models, versions, fields) is the same."""
    if isinstance(value, dict):
        return {k: v if k in ("name", "version") else counts_erased(v) for k, v in value.items()}
    if isinstance(value, list):
        return [counts_erased(v) for v in value if not (isinstance(v, dict) and "batch_size" in v)]
    return 0 if isinstance(value, int) else value


def comparable(case: Case, body: bytes) -> Any:
    parsed = json.loads(body)
    return counts_erased(parsed) if case.path.endswith("/stats") else parsed


def asgi_answer(client: TestClient, case: Case) -> Answer:
    r = client.request(case.method, case.path, content=case.body or None, headers=case.headers)
    return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def invocation_answer(client: TestClient, case: Case) -> Answer:
    headers = {**case.headers, "X-Modelfn-Path": f"{case.method} {case.path}"}
    r = client.post("/invocations", content=case.body or b"{}", headers=headers)
    return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def test_every_route_of_the_table_has_a_case() -> None:
    templates = {(r.method, r.template) for r in CORE_ROUTES}
    assert len(templates) == len(CORE_ROUTES), "a route is defined twice"
    covered = {(c.method, t) for c in CASES for (m, t) in templates if c.name.startswith(f"{m} {t}")}
    assert covered == templates
    assert not {(r.method, r.template) for r in CONTAINER_ROUTES} & templates


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_transport_answers_alike(case: Case, transports: dict[str, Any]) -> None:
    want = asgi_answer(transports["asgi"], case)
    handler = transports["function"].http_handler
    answers = {kind: lambda_answer(handler(event(case), LambdaContext("iris"))) for kind, event in EVENTS.items()}
    if case.path not in ("/openapi.json", "/docs"):  # the container documents its own extra routes
        answers["invocations"] = invocation_answer(transports["container"], case)
    expect_ok = not case.name.endswith(" bad")
    assert (want.status < 400) == expect_ok, want.body
    for kind, got in answers.items():
        assert got.status == want.status, (kind, got.body, want.body)
        assert got.headers["content-type"] == want.headers["content-type"], kind
        assert got.headers.get(VERSION_HEADER) == want.headers.get(VERSION_HEADER), kind
        if want.headers["content-type"].startswith("application/json"):
            assert_same(comparable(case, got.body), comparable(case, want.body))
        else:
            assert got.body == want.body, kind


@pytest.mark.parametrize("route", [r for r in CORE_ROUTES if r.codec is not None], ids=lambda r: r.template)
def test_every_inference_answer_names_the_version_that_served_it(route: Route, transports: dict[str, Any]) -> None:
    ok = cases(route)[0]
    answer = asgi_answer(transports["asgi"], ok)
    assert answer.status == 200 and answer.headers[VERSION_HEADER] == "1"


def test_container_routes_answer(transports: dict[str, Any]) -> None:
    client: TestClient = transports["container"]
    assert client.get("/metrics").status_code == 200
    assert client.post("/invocations", json={"features": [ROW]}).json()["predictions"][0]["label"] == 0
    client.get("/v2/models/iris")  # loads the model if this module's cache was cleared
    assert client.get("/ping").status_code == 200


def test_the_fastapi_app_of_the_table_answers_as_the_service(transports: dict[str, Any]) -> None:
    """The FastAPI app is built from the table for its OpenAPI document; its handlers are thin calls into the
    service, so it answers alike too."""
    from modelfn.http.openapi import fastapi_app

    service = transports["asgi"].app.service
    with TestClient(fastapi_app(service)) as client:
        for case in CASES:
            if case.path in ("/openapi.json", "/docs"):
                continue
            got = asgi_answer(client, case)
            want = asgi_answer(transports["asgi"], case)
            assert (got.status, got.headers["content-type"]) == (want.status, want.headers["content-type"]), case
            assert got.body == want.body or case.path == "/health" or case.path.endswith("/stats"), case
