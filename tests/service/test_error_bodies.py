"""Error bodies name the model, the version and the reason, never where things are: no bucket, no store prefix or
folder, no cache directory, no endpoint. Those go to the log, for the operator. Swept over the service (what the
Lambda adapters and `modelfn serve` alike answer) on an S3 store and a local one, for every way a request can
fail to find or load a model: unknown model, version and label, a corrupted artifact, an unloadable one, a graph
whose data lies outside its folder, and the store down."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from modelfn_tools.embedded import EmbeddedAWS

from modelfn.registry import ModelRegistry
from modelfn.registry.loader import ModelCache
from modelfn.service.dispatch import Service
from modelfn.service.request import Request
from modelfn.settings import Settings
from modelfn.store import ModelRepository, ObjectStore, open_store
from modelfn.store.s3 import S3Store
from tests.registry.versions import SIGNATURE, affine, save_external, write_labels, write_version

PREFIX = "hidden-prefix-7f3a"
ROW = [5.1, 3.5, 1.4, 0.2]
V2 = json.dumps({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}).encode()
TF = json.dumps({"instances": [ROW]}).encode()
PLAIN = json.dumps({"features": [ROW]}).encode()


@dataclass
class Case:
    method: str
    path: str
    status: int
    reason: str
    body: bytes = b""
    query: str = ""


def infer(path: str, status: int, reason: str) -> list[Case]:
    """The same failure through v2 and TF Serving inference and the model's metadata or status route."""
    tf = path.replace("/v2/models/", "/v1/models/")
    return [
        Case("POST", f"{path}/infer", status, reason, V2),
        Case("POST", f"{tf}:predict", status, reason, TF),
        Case("GET", path, status, reason),
    ]


CASES = {
    "unknown model": [
        *infer("/v2/models/ghost", 404, "model 'ghost' not found"),
        Case("POST", "/predict", 404, "model 'ghost' not found", PLAIN, "model=ghost"),
    ],
    "unknown version": infer("/v2/models/iris/versions/99", 404, "model 'iris' has no version 99"),
    "unknown label": [
        Case("POST", "/v1/models/iris/labels/beta:predict", 404, "model 'iris' has no label 'beta'", TF),
        Case("GET", "/v1/models/iris/labels/beta", 404, "model 'iris' has no label 'beta'"),
    ],
    "corrupted artifact": [
        *infer("/v2/models/iris/versions/2", 503, "model 'iris' version 2: sha256 mismatch in model.onnx"),
        Case("GET", "/v2/models/iris/versions/2/ready", 503, "model 'iris' version 2: sha256 mismatch"),
    ],
    "unloadable artifact": [
        *infer("/v2/models/iris/versions/3", 503, "model 'iris' version 3 failed to load"),
        Case("GET", "/v2/models/iris/versions/3/ready", 503, "model 'iris' version 3 failed to load"),
    ],
    "data outside its folder": [Case("GET", "/v2/models/ext/versions/1", 503, "model 'ext' version 1 failed to load")],
}
STORE_DOWN = [
    *infer("/v2/models/iris", 502, "the store could not read 'iris/labels.json'"),
    Case("POST", "/v2/models/iris/versions/1/infer", 502, "the store could not read 'iris/1/manifest.json'", V2),
    Case("POST", "/predict", 502, "the store could not list its root", PLAIN),
    Case("GET", "/v2/health/ready", 502, "the store could not list its root"),
]


def quick_client(endpoint: str) -> object:
    """Gives up at once when the store is down (no retries), so the sweep stays fast."""
    config = Config(connect_timeout=0.5, read_timeout=0.5, retries={"mode": "standard", "max_attempts": 1})
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def fill(store: ObjectStore, example_dir: Path, tmp_path: Path) -> None:
    """iris 1 (stable) good; iris 2 whose store bytes are another model; iris 3 whose bytes match its manifest but
    are no ONNX; ext 1 whose graph names its data by '../weights.bin'."""
    iris = example_dir / "iris.onnx"
    write_version(store, "iris", 1, iris)
    write_version(store, "iris", 2, iris)
    store.upload_file("iris/2/model.onnx", example_dir / "ranker.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf model " * 20)
    write_version(store, "iris", 3, garbage, signature=SIGNATURE)
    write_labels(store, "iris", {"stable": 1})
    import numpy as np
    import onnx

    path = save_external(affine(np.eye(3, 4), np.zeros(4)), tmp_path / "ext" / "inner")
    graph = onnx.load(str(path), load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save_model(graph, str(path))
    write_version(store, "ext", 1, path, {"weights.bin": path.parent / "weights.bin"}, signature=SIGNATURE)


@pytest.fixture
def own_aws() -> Iterator[EmbeddedAWS]:
    server = EmbeddedAWS("127.0.0.1", 0).start()
    yield server
    server.stop()


def service(store: ObjectStore, cache_dir: Path) -> Service:
    settings = Settings(cache_dir=cache_dir, warmup=False, label_ttl=60)
    return Service(ModelRegistry(ModelRepository(store), settings, cache=ModelCache()))


def sweep(svc: Service, cases: list[Case], secrets: list[str]) -> list[str]:
    """Every case answered with its status and reason, and no secret in any body; returns the error messages."""
    errors = []
    for case in cases:
        r = svc.handle(Request(case.method, case.path, case.query, {"content-type": "application/json"}, case.body))
        what = f"{case.method} {case.path}"
        assert r.status == case.status, (what, r.body)
        error = json.loads(r.body)["error"]
        assert case.reason in error, (what, error)
        for secret in secrets:
            assert secret not in r.body.decode(), (what, secret, error)
        errors.append(error)
    return errors


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_no_error_body_names_the_bucket_prefix_endpoint_or_cache_dir(
    own_aws: EmbeddedAWS, example_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = f"secret-bucket-{int(time.time() * 1000) % 10**8}"
    client = quick_client(own_aws.endpoint)
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    store = S3Store(bucket, PREFIX, client=client)
    fill(store, example_dir, tmp_path)
    cache_dir = tmp_path / "cache-dir-5e1c"
    secrets = [bucket, PREFIX, str(cache_dir), "cache-dir-5e1c", own_aws.endpoint, f":{own_aws.port}"]

    with caplog.at_level(logging.DEBUG, logger="modelfn"):
        svc = service(store, cache_dir)
        sweep(svc, [case for cases in CASES.values() for case in cases], secrets)
        assert svc.handle(Request("POST", "/v2/models/iris/infer", body=V2)).status == 200  # the rest serves
        own_aws.stop()
        errors = sweep(service(store, cache_dir), STORE_DOWN, secrets)
    log = logged(caplog)
    assert f"s3://{bucket}/{PREFIX}/iris/2/model.onnx" in log  # where the corrupted bytes are
    assert str(cache_dir) in log  # which cached version would not load
    assert f"s3://{bucket}/{PREFIX}/iris/labels.json" in log and own_aws.endpoint in log  # what did not answer
    assert all("EndpointConnectionError" in e for e in errors)


def test_no_error_body_names_the_local_store_folder_or_cache_dir(
    example_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "secret-store-root-9b2d"
    store = open_store(str(root))
    fill(store, example_dir, tmp_path)
    cache_dir = tmp_path / "cache-dir-5e1c"
    secrets = [str(root), "secret-store-root-9b2d", str(cache_dir), "cache-dir-5e1c"]
    with caplog.at_level(logging.DEBUG, logger="modelfn"):
        sweep(service(store, cache_dir), [case for cases in CASES.values() for case in cases], secrets)
    assert str(root) in logged(caplog)
