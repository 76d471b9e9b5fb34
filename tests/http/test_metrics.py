"""Request metrics are labelled only with what the service vouches for: a client that names thousands of different
versions, labels, models or paths adds no series (before: one series per version string, 12.9 MB of /metrics)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from modelfn_tools.publish import publish
from prometheus_client import REGISTRY

from modelfn.adapters.sagemaker import create_container_app
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]
V2 = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}


def _series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for metric in REGISTRY.collect()
        if metric.name.startswith("modelfn_request")
        for s in metric.samples
    }


async def _mistakes(client: httpx.AsyncClient, first: int, count: int) -> None:
    for i in range(first, first + count):
        await client.post(f"/v2/models/iris/versions/{10_000 + i}/infer", json=V2)
        await client.post(f"/v1/models/iris/labels/l{i}:predict", json={"instances": [ROW]})
        await client.post(f"/v2/models/m{i}/infer", json=V2)
        await client.get(f"/random/{i}")


def test_client_input_never_becomes_a_label(example_dir: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", store, "iris", labels=["stable"], progress=False)
    registry = ModelRegistry.from_uri(store, Settings(cache_dir=tmp_path / "cache"), ["iris"])
    app = create_container_app(registry, models=["iris"])

    async def run() -> tuple[set[Any], set[Any], str, str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.post("/v2/models/iris/infer", json=V2)).status_code == 200
            await _mistakes(client, 0, 20)  # every kind of mistake once, so their series exist
            await client.get("/metrics")  # and the exposition's own
            before, first = _series(), (await client.get("/metrics")).text
            await _mistakes(client, 20, 1000)
            after, body = _series(), (await client.get("/metrics")).text
            return before, after, first, body

    before, after, first, body = asyncio.run(run())
    assert after == before
    assert len(body.splitlines()) == len(first.splitlines())  # the exposition grew by no line
    assert "10001" not in body and "/random" not in body
    assert not re.search(r'model="m\d', body) and not re.search(r'version="l\d', body)
    labelled = [line for line in body.splitlines() if line.startswith("modelfn_requests_total{")]
    assert any('model="iris",route="/v2/models/{name}/infer",status="200",version="1"' in line for line in labelled)
