"""Request metrics are labelled only with what the service vouches for: a client that names thousands of different
versions, labels, models or paths adds no series (before: one series per version string, 12.9 MB of /metrics).
`modelfn serve`'s app and the container expose the same catalogue (telemetry/names.py); Lambda does not route
/metrics at all."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelfn_tools.publish import publish

from modelfn.adapters.sagemaker import create_container_app
from modelfn.function import ModelFunction
from modelfn.http import create_app
from modelfn.http.app import ServerApp
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings
from modelfn.telemetry.names import METRICS

ROW = [5.1, 3.5, 1.4, 0.2]
V2 = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}


@pytest.fixture
def store(example_dir: Path, tmp_path: Path) -> str:
    where = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", where, "iris", labels=["stable"], progress=False)
    return where


def _registry(store: str, tmp_path: Path, **settings: Any) -> ModelRegistry:
    return ModelRegistry.from_uri(store, Settings(cache_dir=tmp_path / "cache", **settings), ["iris"])


async def _mistakes(client: httpx.AsyncClient, first: int, count: int) -> None:
    """`count` requests with client input where labels could be: versions, labels, models, paths."""
    for i in range(first, first + count):
        match i % 4:
            case 0:
                await client.post(f"/v2/models/iris/versions/{10_000 + i}/infer", json=V2)
            case 1:
                await client.post(f"/v1/models/iris/labels/l{i}:predict", json={"instances": [ROW]})
            case 2:
                await client.post(f"/v2/models/m{i}/infer", json=V2)
            case _:
                await client.get(f"/random/{i}")


@pytest.mark.parametrize("kind", ["serve", "container"])
def test_client_input_never_becomes_a_label(store: str, tmp_path: Path, kind: str) -> None:
    registry = _registry(store, tmp_path)
    app = create_app(registry) if kind == "serve" else create_container_app(registry, models=["iris"])
    assert isinstance(app, ServerApp)

    async def run() -> tuple[set[Any], set[Any], str, str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.post("/v2/models/iris/infer", json=V2)).status_code == 200
            await _mistakes(client, 0, 20)  # every kind of mistake once, so their series exist
            await client.get("/metrics")  # and the exposition's own
            before, first = set(app.metrics.series()), (await client.get("/metrics")).text
            await _mistakes(client, 20, 5000)
            after, body = set(app.metrics.series()), (await client.get("/metrics")).text
            return before, after, first, body

    before, after, first, body = asyncio.run(run())
    assert after == before
    assert len(body.splitlines()) == len(first.splitlines())  # the exposition grew by no line
    assert "10001" not in body and "/random" not in body
    assert not re.search(r'model="m\d', body) and not re.search(r'version="l\d', body)
    labelled = [line for line in body.splitlines() if line.startswith("modelfn_requests_total{")]
    ok = 'model="iris",route="/v2/models/{name}/infer",status_class="2xx",version="1"'
    assert any(ok in line for line in labelled)
    found = [line for line in labelled if 'route="<unmatched>",status_class="4xx"' in line]
    assert found and float(found[0].rsplit(" ", 1)[1]) >= 1250  # the random paths, counted, not labelled


def test_serve_exposes_the_catalogue(store: str, tmp_path: Path) -> None:
    """Every metric of the catalogue that a server has is on `modelfn serve`'s /metrics: requests, errors by
    status class, latency, load time, the response cache, capture (shadow appears once traffic uses it)."""
    registry = _registry(store, tmp_path, response_cache_mb=1, capture=str(tmp_path / "capture"))
    app = create_app(registry)
    assert isinstance(app, ServerApp)

    async def run() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for _ in range(2):
                assert (await client.post("/v2/models/iris/infer", json=V2)).status_code == 200
            assert (await client.post("/v2/models/iris/infer", json={"inputs": 1})).status_code == 400
            assert app.capture is not None and app.capture.flush() == 2
            return (await client.get("/metrics")).text

    body = asyncio.run(run())
    app.close()
    print([line for line in body.splitlines() if line.startswith("modelfn_errors")])
    families = {line.split()[2].removesuffix("_total") for line in body.splitlines() if line.startswith("# TYPE ")}
    shadow = {name for name in METRICS if name.startswith("modelfn_shadow_")}
    assert set(METRICS) - shadow <= families
    errors = [line for line in body.splitlines() if line.startswith("modelfn_errors_total{")]
    assert [e for e in errors if 'route="/v2/models/{name}/infer",status_class="4xx"' in e and e.endswith(" 1.0")]
    assert "modelfn_cache_hits_total 1.0" in body and "modelfn_cache_misses_total 1.0" in body
    assert 'modelfn_capture_dropped_total{reason="overflow"} 0.0' in body
    assert 'modelfn_capture_written_total{model="iris"} 2.0' in body
    assert 'modelfn_model_load_seconds_count{model="iris",version="1"} 1.0' in body
    assert 'modelfn_http_responses_total{status_class="2xx"} 2.0' in body


def test_lambda_does_not_route_metrics(store: str, tmp_path: Path) -> None:
    """Lambda emits EMF; its HTTP API has no /metrics (nor the server-only docs assets)."""
    from modelfn.service.request import Request

    fn = ModelFunction(Settings(store=store, model="iris", cache_dir=tmp_path / "cache"))
    assert fn.service.handle(Request("GET", "/metrics")).status == 404
    assert fn.service.handle(Request("GET", "/docs/swagger-ui.css")).status == 404
