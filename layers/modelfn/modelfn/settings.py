"""Runtime configuration: MODELFN_ variables (argument > environment > default), validated by pydantic.

A plain pydantic model that reads the environment itself: pydantic-settings did the same with about 100 ms of
imports on every cold start (its sources for dotenv, secrets directories, Azure, AWS and GCP). What it did that
modelfn relies on is kept: names are matched case-insensitively, unknown MODELFN_ variables are ignored, a dict
field takes JSON, and a value that does not validate is an error naming the variable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

MAX_ELEMENTS = 16_777_216
"""2**24 elements in all a request's tensors: 64 MiB as FP32, 128 MiB as FP64. The default body limit (6 MiB)
carries at most 6 Mi one-byte elements (binary UINT8) or 3 Mi JSON numbers, so no body it admits is refused; what
this stops is a few bytes of header declaring a shape of gigabytes, refused before anything is allocated, and it
still bounds a server that raises MODELFN_MAX_BODY_BYTES."""
MAX_JSON_DEPTH = 64
"""numpy's own bound on dimensions: no tensor's data nests deeper, so nothing servable is refused, and Python's
recursion limit (1000) stays far away from every walk over a request's values."""


PREFIX = "MODELFN_"


def _environment() -> dict[str, Any]:
    """The MODELFN_ variables that name a field, by field name; JSON decoded for dict fields."""
    found: dict[str, Any] = {}
    for key, raw in os.environ.items():
        upper = key.upper()
        if not upper.startswith(PREFIX):
            continue
        name = upper[len(PREFIX) :].lower()
        info = Settings.model_fields.get(name)
        if info is None:
            continue
        value: Any = raw
        if info.annotation is not None and "dict" in str(info.annotation):
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise ValueError(f"{key} must be a JSON object: {e}") from e
        found[name] = value
    return found


class Settings(BaseModel):
    """Everything a function or server reads from its environment. Built on demand, never at import: arguments
    given to the constructor win over MODELFN_ variables, which win over the defaults."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_environment(), **values})

    store: str | None = Field(default=None, description="Store URI: s3://bucket/prefix, file:///path or a path")
    model: str | None = Field(default=None, description="The function's own model")
    version: str | None = Field(default=None, description="Integer version or label; default stable, else highest")
    results: str | None = Field(default=None, description="Store URI prefix where batch handlers write")
    input_prefix: str = Field(default="incoming/", description="S3 key prefix the batch function scores objects under")
    cache_dir: Path = Field(
        default=Path("/tmp/modelfn"),
        description="Disk cache of artifacts, by sha256; private to this user (0700, owned), else a temporary one",
    )
    verify_key: Path | None = Field(
        default=None,
        description="Public key (PEM, EC P-256/384/521): every load verifies the version's OpenSSF model signature "
        "with it, and an unsigned or badly signed version is not served",
    )
    max_body_bytes: int = Field(default=6 * 1024 * 1024, gt=0, description="Larger request bodies get 413")
    max_elements: int = Field(
        default=MAX_ELEMENTS, gt=0, description="Requests whose tensors declare more elements in all get 413"
    )
    max_json_depth: int = Field(
        default=MAX_JSON_DEPTH,
        ge=1,
        le=512,
        description="How deeply the values of a request may nest where they are walked (tensor data, b64); deeper: 400",
    )
    label_ttl: float = Field(default=30.0, ge=0, description="Seconds a resolved label (and a failed load) is trusted")
    providers: str = Field(
        default="CPUExecutionProvider",
        description="Comma-separated onnxruntime execution providers in order of preference; CPU is always last",
    )
    intra_op_threads: int | None = Field(default=None, ge=1, description="Default: the CPUs this process may use")
    inter_op_threads: int | None = Field(default=None, ge=1)
    cuda_device: int = Field(default=0, ge=0, description="GPU the CUDA and TensorRT providers run on")
    trt_fp16: bool = Field(default=False, description="Let TensorRT build FP16 engines (faster; numerics change)")
    warmup: bool = Field(default=True, description="Run one inference at load time so the first request pays nothing")
    batching: bool = Field(default=False, description="Dynamic batching in long-running servers (never on Lambda)")
    max_batch_size: int = Field(default=32, ge=1, description="Rows one batched session.run may hold")
    max_batch_wait_ms: float = Field(default=2.0, ge=0, description="How long a batch waits to fill")
    requests_prefix: str | None = Field(
        default=None,
        description="s3://bucket/prefix an SQS message's request_uri may point under (default: MODELFN_RESULTS)",
    )
    max_loaded_versions: int = Field(
        default=8, ge=1, description="Model versions kept loaded per process; the least recently used is unloaded"
    )
    max_loaded_mb: float | None = Field(
        default=None, gt=0, description="Artifact megabytes kept loaded per process (LRU), besides the count bound"
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated API keys or sha256:<hex> digests of keys; when set, every route but the "
        "public ones needs one (Authorization: Bearer KEY or X-API-Key: KEY)",
    )
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="Requests per second per API key (per client address without keys), burst twice that; "
        "beyond it 429 with Retry-After. Per process (per execution environment on Lambda)",
    )
    max_concurrency: int = Field(
        default=256, ge=1, description="Requests a server works on at once (bodies still arriving count); then 503"
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a server waits for a request's whole body; then 408, connection closed"
    )
    keep_alive: int | None = Field(
        default=None,
        ge=1,
        description="Idle keep-alive seconds of server connections (default: 5 for modelfn serve, 75 in the container)",
    )
    response_cache_mb: float = Field(
        default=0.0, ge=0, description="In-process response cache, megabytes of results kept (LRU); 0: off"
    )
    response_cache_ttl: float = Field(default=300.0, gt=0, description="Seconds a cached response is served")
    response_cache_url: str | None = Field(
        default=None, description="redis://host:port/db: a response cache tier shared by all processes (optional)"
    )
    capture: str | None = Field(
        default=None, description="Where requests are captured: s3://bucket/prefix, a folder, or firehose://STREAM"
    )
    capture_percent: float = Field(default=100.0, ge=0, le=100, description="Share of requests captured")
    capture_flush_seconds: float = Field(
        default=60.0, gt=0, description="Captured records are written at least this often (and on a graceful stop)"
    )
    capture_buffer_mb: float = Field(
        default=4.0, gt=0, description="Captured records held in memory before a write; beyond twice this, dropped"
    )
    grpc_port: int | None = Field(
        default=None, ge=1, le=65535, description="The container's gRPC port (Open Inference Protocol); off when unset"
    )
    models_config: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per-model overrides of the fields above, JSON: {"mlp": {"providers": "...", "batching": true}}',
    )

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment, with explicit (non-None) arguments taking precedence."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    def for_model(self, name: str) -> Settings:
        """These settings with the model's own overrides from MODELFN_MODELS_CONFIG applied."""
        overrides = self.models_config.get(name)
        if not overrides:
            return self
        return self.model_copy(update=dict(self.model_validate({**self.model_dump(), **overrides}).model_dump()))

    @property
    def provider_list(self) -> list[str]:
        return [p.strip() for p in self.providers.split(",") if p.strip()]
