"""Runtime configuration: pydantic settings with the MODELFN_ prefix (argument > environment > default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a function or server reads from its environment. Built on demand, never at import."""

    model_config = SettingsConfigDict(env_prefix="MODELFN_", extra="ignore", populate_by_name=True)

    store: str | None = Field(default=None, description="Store URI: s3://bucket/prefix, file:///path or a path")
    model: str | None = Field(default=None, description="The function's own model")
    version: str | None = Field(default=None, description="Integer version or label; default stable, else highest")
    results: str | None = Field(default=None, description="Store URI prefix where batch handlers write")
    cache_dir: Path = Field(default=Path("/tmp/modelfn"), description="Disk cache of artifacts, by sha256")
    max_body_bytes: int = Field(default=6 * 1024 * 1024, gt=0, description="Larger request bodies get 413")
    label_ttl: float = Field(default=30.0, ge=0, description="Seconds a resolved label (and a failed load) is trusted")
    providers: str = Field(
        default="CPUExecutionProvider",
        description="Comma-separated onnxruntime execution providers in order of preference; CPU is always last",
    )
    intra_op_threads: int | None = Field(default=None, ge=1, description="Default: the CPUs this process may use")
    inter_op_threads: int | None = Field(default=None, ge=1)
    warmup: bool = Field(default=True, description="Run one inference at load time so the first request pays nothing")

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment, with explicit (non-None) arguments taking precedence."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    @property
    def provider_list(self) -> list[str]:
        return [p.strip() for p in self.providers.split(",") if p.strip()]
