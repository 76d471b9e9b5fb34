"""/docs works offline on servers: the page loads its script, style and icon from modelfn's own routes, which are
public and served from the `server` extra's swagger-ui-bundle; a CDN appears only as the fallback Lambda uses."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from modelfn_tools.publish import publish

from modelfn.http import create_app
from modelfn.http.openapi import ASSETS, FALLBACK
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings


def test_docs_page_loads_only_assets_the_server_serves(example_dir: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", store, "iris", progress=False)
    keyed = Settings(cache_dir=tmp_path / "cache", api_keys="secret")  # the page and its files need no key
    client = TestClient(create_app(ModelRegistry.from_uri(store, keyed, ["iris"])))
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    loaded = re.findall(r'(?<![.\w])(?:src|href|url)\s*[=:]\s*"([^"]+)"', page.text)
    assert sorted(loaded) == sorted(["./openapi.json", *(f"./docs/{name}" for name in ASSETS)])
    outside = set(re.findall(r"https?://[^\s'\"]+", page.text))
    assert outside <= {f"{FALLBACK}/swagger-ui.css", f"{FALLBACK}/swagger-ui-bundle.js"}  # onerror only
    for name, content_type in ASSETS.items():
        asset = client.get(f"/docs/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"] == content_type and len(asset.content) > 500
    assert b"SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").content
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs/index.html").status_code == 401  # only the listed files are public
    assert client.get("/metrics").status_code == 401  # not public
