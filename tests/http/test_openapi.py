"""/openapi.json is generated from the route table: it validates, declares every path parameter of every route it
lists, lists exactly the routes served, and an OpenAPI-driven fuzzer (schemathesis) reaches inference on every
route of a real `modelfn serve` without a 5xx or a response the document does not describe."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelfn.service.routes import CORE_ROUTES

SERVED = {"name": ["iris", "mlp", "ranker"], "version": ["1", "2"], "label": ["stable", "fp32"], "model": ["iris"]}


@pytest.fixture(scope="module")
def document(server: str) -> dict[str, Any]:
    r = httpx.get(f"{server}/openapi.json", timeout=30)
    assert r.status_code == 200
    return dict(r.json())


def test_the_document_validates_and_declares_every_parameter(document: dict[str, Any]) -> None:
    validate(document)
    for path, item in document["paths"].items():
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            in_path = {seg[1:-1] for seg in path.replace(":", "/").split("/") if seg.startswith("{")}
            assert declared == in_path, (method, path)
            assert "422" not in op["responses"], (method, path)
            for p in op.get("parameters", []):
                assert p["in"] != "query" or (method == "post" and path == "/predict"), (method, path, p["name"])


def test_the_document_lists_exactly_the_served_routes(document: dict[str, Any]) -> None:
    listed = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert listed == {(r.method, r.template) for r in CORE_ROUTES if r.documented}


@pytest.fixture(scope="module")
def pinned_schema(document: dict[str, Any]) -> Any:
    """The document with model names, versions and labels pinned to what the server serves, so that generated
    requests reach the model (a random name would only ever be a 404)."""
    for item in document["paths"].values():
        for op in item.values():
            for p in op.get("parameters", []):
                if p["name"] in SERVED:
                    p["schema"] = {"type": "string", "enum": SERVED[p["name"]]}
    return schemathesis.openapi.from_dict(document)


def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(pinned_schema: Any, server: str) -> None:
    """Every operation, 25 generated requests each (valid and invalid bodies, parameters and headers)."""
    operations = [result.ok() for result in pinned_schema.get_all_operations()]
    assert len(operations) == sum(1 for r in CORE_ROUTES if r.documented)
    statuses: list[int] = []
    for operation in operations:

        @given(operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(base_url=server, timeout=30)
            statuses.append(response.status_code)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(
                response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
            )

        check()
    assert len(statuses) >= 5 * len(operations)
    assert 200 in statuses and 400 in statuses  # generated bodies both reach the model and get refused by it
