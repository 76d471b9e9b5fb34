"""Wire formats only: decode a request into named numpy arrays, encode outputs back. No I/O, no framework."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelfn.errors import InvalidInput


def split_rows(results: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Batch-major outputs as one {output: value} dict per row (TF `predictions`, plain `/predict`). Values stay
    numpy (rows of arrays, scalars), which the JSON writer emits in their own precision: a float32 as 0.1, not
    as the double 0.10000000149011612."""
    items = list(results.items())
    count = items[0][1].shape[0] if items and items[0][1].ndim else -1
    shared = count >= 0
    for _, a in items:  # plain loops: on the warm path comprehensions' own calls cost more than one row's work
        shared = shared and a.ndim > 0 and a.shape[0] == count
    if not shared:
        raise InvalidInput("the model's outputs do not share a batch dimension; ask for whole tensors instead")
    rows: list[dict[str, Any]] = []
    for i in range(count):
        row = {}
        for name, a in items:
            row[name] = a[i]
        rows.append(row)
    return rows


def request_id(rid: Any) -> str | None:
    """A request's optional `id` (None: none), echoed in its answer: a string or a number. Anything else is refused
    rather than shown back as Python would print it (a list nested 1,000 deep cannot even be printed)."""
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int | float):
        raise InvalidInput(f"'id' must be a string, got {type(rid).__name__}")
    return str(rid)
