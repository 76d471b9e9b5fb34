"""`<model>/traffic.json`: how requests that name no version are shared between versions (the contract's
"Traffic: split, sticky, shadow"). This module is the format only; routing lives in the runtime.

A target is a label (`"stable"`) or a version written as its integer (`"3"`), always a string key, so
`ModelRepository.resolve(name, target)` takes it as it is."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelfn.errors import InvalidInput, StoreError
from modelfn.store.fields import Check, Fields, Invalid, integer, mapping_of, nullable, refuse, text
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


def _checked(check: Callable[[str], str]) -> Check[str]:
    """A string passed through `check`, its InvalidInput as the problem of the field."""

    def checked(value: Any) -> str:
        try:
            return check(text(value))
        except InvalidInput as e:
            raise refuse(e.message) from e

    return checked


_TARGET = _checked(check_target)
_STICKY = nullable(_checked(check_header))
_PERCENT = integer(low=0, high=100)
_WEIGHTS = mapping_of(integer())


def _split(value: Any) -> dict[str, int]:
    """Targets as canonical keys (sorted), weights non-negative integers, at least one positive."""
    weights = _WEIGHTS(value)
    checked: dict[str, int] = {}
    for target, weight in weights.items():
        key = _TARGET(target)
        if weight < 0:
            raise refuse(f"weight {weight} of target {target!r} is negative")
        checked[key] = weight
    if checked and not any(checked.values()):
        raise refuse("every weight of the split is 0: at least one must be positive")
    return dict(sorted(checked.items()))


def _shadow(value: Any) -> Shadow:
    """A Shadow as it is, or from its JSON object (unknown keys refused)."""
    if isinstance(value, Shadow):
        return value
    read = Fields(value, strict=True)
    target, percent = read.get("target", _TARGET), read.get("percent", _PERCENT, 100)
    read.done()
    return Shadow(target=target, percent=percent)


_SHADOW = nullable(_shadow)


def _canonical(raw: Any, strict: bool) -> tuple[dict[str, int], str | None, Shadow | None]:
    """Traffic's fields checked and canonical, from traffic.json's object or a Traffic's own fields."""
    read = Fields(raw, strict=strict)
    split: dict[str, int] = read.get("split", _split, {})
    sticky = read.get("sticky", _STICKY, None)
    shadow = read.get("shadow", _SHADOW, None)
    read.done()
    return split, sticky, shadow


@dataclass(frozen=True, kw_only=True)
class Shadow:
    """`percent` of split-routed requests are also scored by `target`; only the primary's answer is returned."""

    target: str
    percent: int = 100

    def __post_init__(self) -> None:
        """Checked however built (traffic.json, the CLI, a rollout): fields.Invalid naming the field."""
        read = Fields({"target": self.target, "percent": self.percent})
        read.get("target", _TARGET)
        read.get("percent", _PERCENT)
        read.done()


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """The parsed traffic.json. An empty split means "the default version takes it all" (useful with a shadow
    alone); otherwise weights are non-negative integers, at least one positive, and a request's share of a target
    is its weight over their sum. Checked and made canonical however built (sorted targets, a lower-case sticky
    header); a problem is fields.Invalid naming the field. Plain dataclasses: a cold start with a traffic.json
    should not pay for a validation library."""

    split: Mapping[str, int] = field(default_factory=dict)
    sticky: str | None = None
    shadow: Shadow | None = None

    def __post_init__(self) -> None:
        split, sticky, shadow = _canonical({"split": self.split, "sticky": self.sticky, "shadow": self.shadow}, False)
        object.__setattr__(self, "split", split)  # frozen: the canonical values replace the given ones
        object.__setattr__(self, "sticky", sticky)
        object.__setattr__(self, "shadow", shadow)

    @classmethod
    def from_json(cls, raw: Any) -> Traffic:
        """From traffic.json's object: unknown keys are refused, so a typo never silently does nothing."""
        split, sticky, shadow = _canonical(raw, strict=True)
        return cls(split=split, sticky=sticky, shadow=shadow)

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


def make_traffic(raw: Any) -> Traffic:
    """A Traffic from its JSON form (a dict); InvalidInput naming what is wrong. Weights must be JSON integers
    (not strings, floats or booleans), and unknown keys are refused, so a typo never silently does nothing."""
    try:
        return Traffic.from_json(raw)
    except Invalid as e:
        raise InvalidInput(f"invalid traffic: {e.describe('traffic')}") from e


def parse_traffic(data: bytes | None, where: str) -> Traffic | None:
    """traffic.json's bytes as a Traffic; None (no file) or an empty configuration is no traffic. A malformed file
    is InvalidTraffic (a StoreError) naming `where` and the problem."""
    if data is None:
        return None
    try:
        traffic = Traffic.from_json(json.loads(data))
    except Invalid as e:
        raise InvalidTraffic(f"{where} is not a valid {TRAFFIC}: {e.describe('traffic')}") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidTraffic(f"{where} is not valid JSON: {e}") from e
    return None if traffic.empty else traffic


def dump_traffic(traffic: Traffic) -> bytes:
    return json.dumps(traffic.to_json(), indent=2, sort_keys=True).encode()
