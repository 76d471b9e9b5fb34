"""Fixtures shared by the HTTP API tests: onnxruntime's own answers for the published example artifacts, so every
served result is checked against the model itself, not against what the server answered last time."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest

# Tight enough that a wrong model, version or dtype cannot pass; loose enough for thread-count noise.
RTOL = 1e-5
ATOL = 1e-6


@dataclass
class Reference:
    """One local onnxruntime session per published (model, version), built from bytes whose sha256 matches the
    manifest the server verifies, so `run` is exactly the model the server should be running."""

    sessions: dict[tuple[str, int], ort.InferenceSession] = field(default_factory=dict)

    def run(
        self, model: str, version: int, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        session = self.sessions[(model, version)]
        names = list(outputs) if outputs else [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feed)), strict=True))

    @staticmethod
    def assert_same(actual: Any, expected: np.ndarray, same_dtype: bool = False) -> None:
        """Same shape (and dtype if asked); integers exactly, floats within RTOL/ATOL. `actual` may be the
        nested lists of a JSON answer."""
        if same_dtype:
            assert isinstance(actual, np.ndarray), type(actual)
            assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        actual = np.asarray(actual)
        assert actual.shape == expected.shape, (actual.shape, expected.shape)
        if np.issubdtype(expected.dtype, np.integer):
            np.testing.assert_array_equal(actual, expected)
        else:
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)

    @staticmethod
    def iris_rows(n: int, seed: int = 0) -> np.ndarray:
        """Plausible iris measurements (cm), FP32 [n, 4]."""
        rng = np.random.default_rng(seed)
        lo = np.array([4.3, 2.0, 1.0, 0.1], dtype=np.float32)
        hi = np.array([7.9, 4.4, 6.9, 2.5], dtype=np.float32)
        return (lo + rng.random((n, 4), dtype=np.float32) * (hi - lo)).astype(np.float32)

    @staticmethod
    def mlp_rows(n: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, 256)).astype(np.float32)

    @staticmethod
    def ranker_feed(n: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {
            "dense": rng.standard_normal((n, 4)).astype(np.float32),
            "item_ids": rng.integers(0, 100, size=(n, 3), dtype=np.int64),
        }


def _s3_location(store: str) -> tuple[str, str]:
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    return bucket, prefix


@pytest.fixture(scope="session")
def reference(s3_store: str, example_dir: Path) -> Reference:
    """iris v1, mlp v1 (fp32) and ranker v1 from example_dir; mlp v2 (int8) from the exact published bytes."""
    s3 = boto3.client("s3")
    bucket, prefix = _s3_location(s3_store)
    local = {("iris", 1): "iris.onnx", ("mlp", 1): "mlp.onnx", ("ranker", 1): "ranker.onnx"}
    ref = Reference()
    for model, version in [("iris", 1), ("mlp", 1), ("mlp", 2), ("ranker", 1)]:
        key = f"{prefix}/{model}/{version}"
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{key}/manifest.json")["Body"].read())
        if (model, version) in local:
            data = (example_dir / local[(model, version)]).read_bytes()
        else:
            data = s3.get_object(Bucket=bucket, Key=f"{key}/model.onnx")["Body"].read()
        assert hashlib.sha256(data).hexdigest() == manifest["sha256"], f"{model} v{version} is not the published one"
        if (model, version) == ("mlp", 2):
            assert manifest["quantization"]["weight_type"] == "int8"
        ref.sessions[(model, version)] = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return ref
