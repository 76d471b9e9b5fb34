"""Fixtures for the Lambda handler tests: quiet Powertools, a LambdaContext stand-in, a results bucket of the test's
own, ModelFunctions built directly against the published examples, and onnxruntime's answers for them."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from modelfn_tools.embedded import EmbeddedAWS

from modelfn.function import ModelFunction
from modelfn.hooks import Hooks
from modelfn.settings import Settings

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture(autouse=True)
def _quiet_powertools(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EMF lines, no X-Ray, warnings only: set before any ModelFunction (and its Logger) is built."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as `context`, as far as Powertools and Mangum read it."""

    function_name: str = "modelfn-iris"
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/modelfn-iris"
    log_stream_name: str = "2024/01/01/[$LATEST]0123456789abcdef"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


def new_bucket(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def results_bucket(aws: EmbeddedAWS) -> str:
    """An empty bucket of this test's own for MODELFN_RESULTS (s3://<it>/results)."""
    return new_bucket("results")


@pytest.fixture
def input_bucket(aws: EmbeddedAWS) -> str:
    """An empty bucket of this test's own for batch inputs (incoming/<model>/...) and large SQS requests."""
    return new_bucket("input")


MakeFunction = Callable[..., ModelFunction]


@pytest.fixture
def make_function(s3_store: str, results_bucket: str, tmp_path: Path) -> MakeFunction:
    """ModelFunction for a model of the published examples, as functions/<model>/app.py builds it but with
    explicit settings (results under s3://<results_bucket>/results)."""

    def make(model: str = "iris", hooks: Hooks | None = None, **overrides: Any) -> ModelFunction:
        values: dict[str, Any] = {
            "store": s3_store,
            "model": model,
            "results": f"s3://{results_bucket}/results",
            "input_prefix": f"incoming/{model}/",
            "cache_dir": tmp_path / "modelfn-cache",
        }
        values.update(overrides)
        return ModelFunction(Settings(**values), hooks or Hooks())

    return make


@dataclass
class IrisReference:
    """onnxruntime's own answers for iris, and plausible iris rows to ask about."""

    session: ort.InferenceSession

    @staticmethod
    def rows(n: int, seed: int = 0) -> np.ndarray:
        """Plausible iris measurements (cm), FP32 [n, 4]."""
        rng = np.random.default_rng(seed)
        lo = np.array([4.3, 2.0, 1.0, 0.1], dtype=np.float32)
        hi = np.array([7.9, 4.4, 6.9, 2.5], dtype=np.float32)
        return (lo + rng.random((n, 4), dtype=np.float32) * (hi - lo)).astype(np.float32)

    def run(self, x: Any) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        feed = {"float_input": np.asarray(x, dtype=np.float32)}
        return dict(zip(names, self.session.run(names, feed), strict=True))


@pytest.fixture(scope="session")
def iris_ref(s3_store: str, example_dir: Path) -> IrisReference:
    """onnxruntime on the iris artifact that the store serves as `stable` (v1), checked byte for byte against its
    published manifest."""
    bucket, _, prefix = s3_store.removeprefix("s3://").partition("/")
    manifest = json.loads(
        boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/iris/1/manifest.json")["Body"].read()
    )
    data = (example_dir / "iris.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    return IrisReference(ort.InferenceSession(data, providers=["CPUExecutionProvider"]))


class S3:
    """Reading back what the handlers wrote, straight from moto with boto3."""

    def __init__(self) -> None:
        self.client = boto3.client("s3")

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def uploads(self, bucket: str) -> list[dict[str, Any]]:
        return [dict(u) for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.fixture
def s3(aws: EmbeddedAWS) -> S3:
    return S3()
