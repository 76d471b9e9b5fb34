"""Per-model pre- and post-processing hooks, the only code a per-model function usually adds."""

from __future__ import annotations

from dataclasses import dataclass

from modelfn.protocols.plain import Postprocess, Preprocess


@dataclass(frozen=True)
class Hooks:
    """`preprocess(features, model)` turns the plain route's `features` into named input arrays (e.g. tokenizing
    text); `postprocess(rows, model)` rewrites its answer rows (e.g. adding class names)."""

    preprocess: Preprocess | None = None
    postprocess: Postprocess | None = None
