"""`modelfn serve` answers inference requests in an ASGI middleware ahead of FastAPI's router (the same
transport-neutral fast path as Lambda), and leaves them to the batching handlers when batching is on."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from modelfn.adapters.asgi import FastInference
from modelfn.http import create_app
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]


def _app(store: str, tmp_path: Path, batching: bool):
    return create_app(ModelRegistry.from_uri(store, Settings(cache_dir=tmp_path)), batching=batching)


def test_inference_skips_the_router_unless_batching(s3_store: str, tmp_path: Path) -> None:
    plain = _app(s3_store, tmp_path, batching=False)
    assert [m.cls for m in plain.user_middleware] == [FastInference]
    assert [m.cls for m in _app(s3_store, tmp_path, batching=True).user_middleware] == []
    routed: list[str] = []

    @plain.middleware("http")
    async def spy(request, call_next):
        response = await call_next(request)
        routed.append(getattr(request.scope.get("route"), "path", ""))
        return response

    with TestClient(plain) as client:
        r = client.post("/v1/models/iris/labels/stable:predict", json={"instances": [ROW]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == 0
        assert client.post("/predict?model=iris", json={"features": [1, 2]}).status_code == 400
        assert client.get("/v2/models/iris").status_code == 200
    # the middleware left Starlette's route template for outer middlewares (metrics) on both kinds of request
    assert routed == ["/v1/models/{name}/labels/{label}:predict", "/predict", "/v2/models/{name}"]
