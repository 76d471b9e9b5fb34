"""Shared fixtures: moto's server on a free loopback port (real HTTP, not in-process mocks), the example models
published to it once per session, and `modelfn serve` running as a real process against it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import serve_process

from modelfn.registry.loader import model_cache

BUCKET = "test-models"
STORE = f"s3://{BUCKET}/models"


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedAWS]:
    """moto's server on 127.0.0.1:<free port>; this process and its children talk to it over HTTP."""
    saved = dict(os.environ)
    server = EmbeddedAWS("127.0.0.1", 0).start()
    os.environ.update(server.environ())
    os.environ["MODELFN_CACHE_DIR"] = str(tmp_path_factory.mktemp("modelfn-cache"))
    os.environ.pop("MODELFN_STORE", None)
    os.environ.pop("MODELFN_MODEL", None)
    os.environ.pop("MODELFN_VERSION", None)
    from modelfn.store.s3 import s3_client

    s3_client.cache_clear()
    yield server
    server.stop()
    s3_client.cache_clear()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example ONNX files, built once: iris.onnx, mlp.onnx (fp32), mlp_int8.onnx, ranker.onnx."""
    from modelfn_tools.examples import build_iris, build_mlp, build_ranker
    from modelfn_tools.quantize import quantize

    d = tmp_path_factory.mktemp("examples")
    build_iris(d / "iris.onnx")
    build_mlp(d / "mlp.onnx")
    quantize(d / "mlp.onnx", d / "mlp_int8.onnx")
    build_ranker(d / "ranker.onnx")
    return d


@pytest.fixture(scope="session")
def s3_store(aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> str:
    """s3://test-models/models with the examples published as `make demo` does: iris v1 (stable),
    mlp v1 fp32 (label fp32) and v2 int8 (labels int8, stable), ranker v1 (stable). Treat it as read-only."""
    from modelfn_tools.examples import publish_examples

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    publish_examples(STORE, tmp_path_factory.mktemp("publish"))
    return STORE


@pytest.fixture
def fresh_bucket(aws: EmbeddedAWS, request: pytest.FixtureRequest) -> str:
    """An empty bucket of this test's own: s3://<bucket>/models."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{name}-{int(time.time() * 1000) % 100000}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}/models"


@pytest.fixture(autouse=True)
def _clear_model_cache() -> Iterator[None]:
    model_cache.clear()
    yield
    model_cache.clear()


@pytest.fixture(scope="session")
def server(s3_store: str, aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`modelfn serve --store s3://...` as a real process on a free loopback port; yields its base URL."""
    with serve_process(["--store", s3_store], tmp_path_factory.mktemp("serve")) as base:
        yield base
