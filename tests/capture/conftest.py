"""Capture tests: the iris example published to a folder store, and captured records read back from a folder or
S3 as the drift command reads them (gzip JSON Lines)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelfn_tools.publish import publish

from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]


def v2(rows: int = 1) -> dict[str, Any]:
    return {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [rows, 4], "data": ROW * rows}]}


@pytest.fixture
def store(example_dir: Path, tmp_path: Path) -> str:
    where = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", where, "iris", progress=False)
    return where


def registry(store: str, tmp_path: Path, **settings: Any) -> ModelRegistry:
    return ModelRegistry.from_uri(store, Settings(cache_dir=tmp_path / "cache", **settings), ["iris"])


def lines(blob: bytes) -> list[dict[str, Any]]:
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def read_folder(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Records by object path (relative to the capture folder)."""
    return {str(p.relative_to(root)): lines(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def read_s3(uri: str) -> dict[str, list[dict[str, Any]]]:
    """Records by object key under an s3://bucket/prefix."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    return {k: lines(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys}


def records(objects: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for found in objects.values() for r in found]
