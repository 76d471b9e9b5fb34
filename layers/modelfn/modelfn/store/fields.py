"""Reading the store's small JSON documents (manifest.json, traffic.json) into typed values with plain checks.

A validation library would cost every Lambda cold start its import and model building (about 100 ms); these
documents need only a few rules: types (an int is an int, never a bool or a string), bounds, a pattern. Every
problem is collected with the path of its field (`files.0.sha256: ...`), so one refusal names all of them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast

from modelfn import jsonio

T = TypeVar("T")
Check = Callable[[Any], T]
"""Turns one JSON value into a typed one, or raises Invalid (its paths relative to that value)."""


class _Required:
    """The default of a field that has none."""


REQUIRED: Final = _Required()


class Invalid(ValueError):
    """A document (or one value of it) does not validate: `problems` are (path, why), a path being the dotted
    keys and indexes from the value checked ("" for that value itself)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__(self.describe())

    def describe(self, root: str = "") -> str:
        """Each problem as `path: why`, `root` naming the document itself; `; `-joined."""
        return "; ".join(f"{path or root}: {why}" if path or root else why for path, why in self.problems)


def got(value: Any) -> str:
    """A JSON value as a refusal shows it: its JSON name, with the value when short."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    kind = "a string" if isinstance(value, str) else "a number"
    return f"{kind} {jsonio.shown(value)}"


def refuse(why: str) -> Invalid:
    """A problem with the value being checked itself."""
    return Invalid([("", why)])


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise refuse(f"expected a string, got {got(value)}")
    return value


def integer(low: int | None = None, high: int | None = None) -> Check[int]:
    """A JSON integer within low..high (`high` only with `low`): a boolean, a float (even 2.0) or a string is
    refused."""
    bounds = "" if low is None else f" >= {low}" if high is None else f" from {low} to {high}"

    def check(value: Any) -> int:
        if type(value) is not int or (low is not None and value < low) or (high is not None and value > high):
            raise refuse(f"expected an integer{bounds}, got {got(value)}")
        return value

    return check


def matching(pattern: str, what: str) -> Check[str]:
    """A string matching `pattern`, described as `what`."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.match(value):
            raise refuse(f"expected {what}, got {got(value)}")
        return value

    return check


def nullable(check: Check[T]) -> Check[T | None]:
    return lambda value: None if value is None else check(value)


def list_of(check: Check[T]) -> Check[list[T]]:
    """A JSON list whose items each pass `check`; the problems name their index."""

    def checked(value: Any) -> list[T]:
        if not isinstance(value, list):
            raise refuse(f"expected a list, got {got(value)}")
        problems: list[tuple[str, str]] = []
        items = [_read(item, check, str(i), problems) for i, item in enumerate(value)]
        if problems:
            raise Invalid(problems)
        return items

    return checked


def mapping_of(check: Check[T]) -> Check[dict[str, T]]:
    """A JSON object whose values each pass `check`; the problems name their key."""

    def checked(value: Any) -> dict[str, T]:
        if not isinstance(value, Mapping):
            raise refuse(f"expected an object, got {got(value)}")
        problems: list[tuple[str, str]] = []
        items = {str(k): _read(v, check, str(k), problems) for k, v in value.items()}
        if problems:
            raise Invalid(problems)
        return items

    return checked


def _read(value: Any, check: Check[T], path: str, problems: list[tuple[str, str]]) -> T:
    """`check(value)`, or its problems (under `path`) recorded and a placeholder returned: the caller raises them
    all before any value is used."""
    try:
        return check(value)
    except Invalid as e:
        problems.extend((f"{path}.{p}" if p else path, why) for p, why in e.problems)
        return cast(T, None)


class Fields:
    """One JSON object read field by field. Problems are collected; `done()` raises them together. `strict`:
    keys never asked for are refused too (a typo must not silently do nothing), else they are ignored."""

    def __init__(self, raw: Any, strict: bool = False) -> None:
        if not isinstance(raw, Mapping):
            raise refuse(f"expected a JSON object, got {got(raw)}")
        self.raw: Mapping[Any, Any] = raw
        self.strict = strict
        self.problems: list[tuple[str, str]] = []
        self._asked: set[str] = set()

    def get(self, key: str, check: Check[T], default: T | _Required = REQUIRED) -> T:
        """The field checked; `default` when absent (a problem when there is none)."""
        self._asked.add(key)
        if key not in self.raw:
            if isinstance(default, _Required):
                self.problems.append((key, "required"))
                return cast(T, None)
            return default
        return _read(self.raw[key], check, key, self.problems)

    def done(self) -> None:
        if self.strict:
            known = ", ".join(sorted(self._asked))
            self.problems += [(str(k), f"unknown key (known: {known})") for k in self.raw if k not in self._asked]
        if self.problems:
            raise Invalid(self.problems)
