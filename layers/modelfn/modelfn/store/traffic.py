"""`<model>/traffic.json`: how requests that name no version are shared between versions (the contract's
"Traffic: split, sticky, shadow"). This module is the format only; routing lives in the runtime.

A target is a label (`"stable"`) or a version written as its integer (`"3"`), always a string key, so
`ModelRepository.resolve(name, target)` takes it as it is."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelfn.errors import InvalidInput, StoreError
from modelfn.store.layout import TRAFFIC, check_label, traffic_key

__all__ = [
    "TRAFFIC",
    "InvalidTraffic",
    "Shadow",
    "Traffic",
    "check_header",
    "check_target",
    "dump_traffic",
    "make_traffic",
    "parse_traffic",
    "target_version",
    "traffic_key",
]

_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]{1,128}$")
"""RFC 9110 `token` (a header field name), lower case: header names are case-insensitive, and the runtime
compares them lower-cased."""


class InvalidTraffic(StoreError):
    """traffic.json in the store is malformed (502, like any unreadable store object): the runtime logs it and
    keeps serving the default version rather than failing requests."""


def check_target(target: str) -> str:
    """A target as the canonical key: a version as its integer without leading zeros (`"3"`), else a label."""
    if target.isdigit():
        if not _VERSION.match(target):
            raise InvalidInput(f"invalid target {target!r}: a version is a positive integer without leading zeros")
        return target
    try:
        return check_label(target)
    except InvalidInput as e:
        raise InvalidInput(f"invalid target {target!r}: a version (positive integer) or a label ({e.message})") from e


def target_version(target: str) -> int | None:
    """The version a target names directly (`"3"` → 3), or None for a label."""
    return int(target) if target.isdigit() else None


def check_header(header: str) -> str:
    """A sticky header name, lower-cased; InvalidInput unless it is an HTTP token."""
    lowered = header.strip().lower()
    if not _TOKEN.match(lowered):
        raise InvalidInput(f"invalid sticky header {header!r}: an HTTP header name (letters, digits, '-', ...)")
    return lowered


def _as_value_error(check: Callable[[str], str], value: str) -> str:
    """`check(value)` with its InvalidInput as the ValueError pydantic collects (with the field's path)."""
    try:
        return check(value)
    except InvalidInput as e:
        raise ValueError(e.message) from e


class Shadow(BaseModel):
    """`percent` of split-routed requests are also scored by `target`; only the primary's answer is returned."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    target: str
    percent: int = Field(default=100, ge=0, le=100)

    @field_validator("target")
    @classmethod
    def _target(cls, target: str) -> str:
        return _as_value_error(check_target, target)


class Traffic(BaseModel):
    """The parsed traffic.json. An empty split means "the default version takes it all" (useful with a shadow
    alone); otherwise weights are non-negative integers, at least one positive, and a request's share of a target
    is its weight over their sum."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    split: Mapping[str, int] = Field(default_factory=dict)
    sticky: str | None = None
    shadow: Shadow | None = None

    @field_validator("split")
    @classmethod
    def _split(cls, split: Mapping[str, int]) -> Mapping[str, int]:
        checked: dict[str, int] = {}
        for target, weight in split.items():
            key = _as_value_error(check_target, target)
            if weight < 0:
                raise ValueError(f"weight {weight} of target {target!r} is negative")
            checked[key] = weight
        if checked and not any(checked.values()):
            raise ValueError("every weight of the split is 0: at least one must be positive")
        return dict(sorted(checked.items()))

    @field_validator("sticky")
    @classmethod
    def _sticky(cls, sticky: str | None) -> str | None:
        return None if sticky is None else _as_value_error(check_header, sticky)

    @property
    def targets(self) -> list[str]:
        """Every target named (split, then shadow), each once: what must exist for this traffic to be served."""
        named = [*self.split, *([self.shadow.target] if self.shadow else [])]
        return list(dict.fromkeys(named))

    @property
    def empty(self) -> bool:
        """Nothing configured: the same as no traffic.json."""
        return not self.split and self.shadow is None and self.sticky is None

    def to_json(self) -> dict[str, Any]:
        return {
            "split": dict(self.split),
            "sticky": self.sticky,
            "shadow": None if self.shadow is None else {"target": self.shadow.target, "percent": self.shadow.percent},
        }


def _first_error(e: ValidationError) -> str:
    """Pydantic's errors as one line each, naming the field path: `split.canary: ...`."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "traffic"
        message = str(err.get("ctx", {}).get("error", "")) or err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def make_traffic(raw: Any) -> Traffic:
    """A Traffic from its JSON form (a dict); InvalidInput naming what is wrong. Weights must be JSON integers
    (not strings, floats or booleans), and unknown keys are refused, so a typo never silently does nothing."""
    try:
        return Traffic.model_validate(raw)
    except ValidationError as e:
        raise InvalidInput(f"invalid traffic: {_first_error(e)}") from e


def parse_traffic(data: bytes | None, where: str) -> Traffic | None:
    """traffic.json's bytes as a Traffic; None (no file) or an empty configuration is no traffic. A malformed file
    is InvalidTraffic (a StoreError) naming `where` and the problem."""
    if data is None:
        return None
    try:
        traffic = Traffic.model_validate(json.loads(data))
    except ValidationError as e:
        raise InvalidTraffic(f"{where} is not a valid {TRAFFIC}: {_first_error(e)}") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidTraffic(f"{where} is not valid JSON: {e}") from e
    return None if traffic.empty else traffic


def dump_traffic(traffic: Traffic) -> bytes:
    return json.dumps(traffic.to_json(), indent=2, sort_keys=True).encode()
