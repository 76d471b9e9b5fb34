"""Which features a model has, and where each lives in its inputs: the unit that baselines and drift are measured
in. The contract's batch rules decide it: a single [N, K] input has K features named by the manifest's `features`;
otherwise every input is [N] or [N, 1] and is one feature of its own name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from modelfn.errors import InvalidInput
from modelfn.model.signature import TensorSpec

Kind = Literal["numeric", "category"]
CATEGORICAL = frozenset({"BYTES", "BOOL"})
"""Datatypes measured by their categories' frequencies; every other (a number) by histogram and KS."""


class Feature(BaseModel):
    """One feature: `column` is its index in a 2-D input's rows, None for an [N] input."""

    name: str
    input: str
    column: int | None
    kind: Kind


def features_of(specs: Sequence[TensorSpec], names: Sequence[str] | None) -> list[Feature]:
    """The features of a model with these inputs (`names`: a single [N, K] input's K column names)."""
    if len(specs) == 1 and len(specs[0].shape) == 2:
        spec = specs[0]
        if names is None:
            names = [spec.name] if spec.shape[1] == 1 else None
        if names is None:
            raise InvalidInput(
                f"input {spec.describe()} has unnamed features: publish with --features, or a baseline file with a "
                "header"
            )
        if spec.shape[1] not in (-1, len(names)):
            raise InvalidInput(f"{len(names)} feature names for input {spec.describe()}")
        return [Feature(name=n, input=spec.name, column=j, kind=_kind(spec)) for j, n in enumerate(names)]
    out = []
    for spec in specs:
        if len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1):
            out.append(
                Feature(name=spec.name, input=spec.name, column=None if len(spec.shape) == 1 else 0, kind=_kind(spec))
            )
        else:
            raise InvalidInput(
                "drift is measured on tabular features: one [N, K] input, or [N] and [N, 1] inputs; "
                f"this model has {[s.describe() for s in specs]}"
            )
    return out


def _kind(spec: TensorSpec) -> Kind:
    return "category" if spec.datatype in CATEGORICAL else "numeric"


def column(feature: Feature, tensor: Any) -> list[Any]:
    """The feature's values in one input's rows (an array or nested JSON lists, rows along the first axis)."""
    if feature.column is None:
        return list(tensor)
    return [row[feature.column] for row in tensor]


def numbers(values: Sequence[Any]) -> np.ndarray:
    """Numeric values as float64, a null (None, NaN) as NaN; a value that is not a number is an InvalidInput."""
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"expected numbers: {e}") from e


def categories(values: Sequence[Any]) -> list[str | None]:
    """Category values as text (booleans as true/false, as JSON writes them); a null, or an empty string (what an
    empty CSV field reads as), is None: missing, in the baseline and in captured requests alike."""
    return [None if v is None or v == "" else _text(v) for v in values]


def _text(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def split(features: Sequence[Feature], inputs: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every feature's values from one batch of inputs ({input name: rows})."""
    return {f.name: column(f, inputs[f.input]) for f in features if f.input in inputs}
