"""How large a decoded request may be, checked by the codecs before numpy allocates anything: how many elements
a request's tensors hold in all (MODELFN_MAX_ELEMENTS: 413) and how deeply the values a codec walks may nest
(MODELFN_MAX_JSON_DEPTH: 400). Counts are Python ints, so a declared shape like [2**31, 2**31] cannot wrap."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from modelfn.errors import InvalidInput, PayloadTooLarge
from modelfn.settings import MAX_ELEMENTS, MAX_JSON_DEPTH, Settings


@dataclass(frozen=True)
class SizeLimits:
    """The two bounds, read once from the settings (a codec called without them applies the settings' defaults)."""

    max_elements: int = MAX_ELEMENTS
    max_json_depth: int = MAX_JSON_DEPTH
    may_hold_booleans: bool = True
    """False when the raw body has no JSON `true`/`false` token at all, so `coerce` need not look for a boolean
    among numbers (on the warm path that search is most of the value checks' cost)."""

    def for_body(self, body: bytes) -> SizeLimits:
        """These limits, noting whether `body` can hold a JSON boolean (a substring search at C speed)."""
        booleans = b"true" in body or b"false" in body
        if booleans == self.may_hold_booleans:
            return self
        other: SizeLimits | None = self.__dict__.get("_other")
        if other is None:  # built once per limits object and kept on it (hashing a dataclass per request costs more)
            other = replace(self, may_hold_booleans=booleans)
            object.__setattr__(self, "_other", other)
            object.__setattr__(other, "_other", self)
        return other

    @classmethod
    def from_settings(cls, settings: Settings) -> SizeLimits:
        return cls(settings.max_elements, settings.max_json_depth)

    def check_elements(self, count: int) -> None:
        """413 naming the count, when a request's tensors hold more elements in all than the limit."""
        if count > self.max_elements:
            raise PayloadTooLarge(
                f"the request's tensors hold {count} elements in all, over the limit of {self.max_elements}"
                " (MODELFN_MAX_ELEMENTS)"
            )

    def nested_elements(self, data: Any, where: str) -> int:
        """The elements of nested-list data, read along its first items (len × len of the first × ...): a walk as
        deep as the data, not as long, and exact for rectangular data, the only kind a tensor is made of (ragged
        data is refused). Nesting past the depth limit is a 400."""
        count, depth = 1, 0
        while isinstance(data, list):
            depth += 1
            if depth > self.max_json_depth:
                raise self.too_deep(where)
            count *= len(data)
            if not data:
                break
            data = data[0]
        return count

    def too_deep(self, where: str) -> InvalidInput:
        return InvalidInput(
            f"{where}: values nest more than {self.max_json_depth} levels deep (MODELFN_MAX_JSON_DEPTH)"
        )


DEFAULT = SizeLimits()
"""What a codec applies when its caller passes no settings (tests, tools)."""
