"""Which columns of a table feed which model input: the contract's "Batch" rules, decided once per file.

- A single 2-D input [N, K] takes K feature columns: by the names `LoadedModel.features` records (the manifest's
  `features`), else by position, every column but `id` in order, as batch scoring always did. [N, 1] is this case.
- Otherwise every input must be [N] or [N, 1], and each takes the column of its own name.
- Where names are known, other columns are ignored (`id` passes through) and a file that lacks a needed column
  fails as a whole, naming it. Where they are not, an unnamed first column (pandas' index, as `df.to_csv(path)`
  writes it) and pandas' `__index_level_N__` columns (`df.to_parquet`) are not features.
- A header that is all numbers is refused where it would otherwise be taken as names: where the needed names are
  missing from it, or, by position, where its column count matches the model's (except pandas' default names
  0..K-1). Such a file has no header: its first row would be lost as names, or its columns bound by chance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import TensorSpec
from modelfn.scoring.values import FLOATS, is_number

ID = "id"
_PANDAS_INDEX = re.compile(r"__index_level_\d+__\Z")


@dataclass(frozen=True)
class Feed:
    """One model input and the columns it takes: `names` (None: by position) and the shape of one row."""

    spec: TensorSpec
    names: tuple[str, ...] | None
    tail: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Column:
    """A feed bound to a file: the positions of its columns in each record, and their names for messages."""

    feed: Feed
    positions: tuple[int, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Binding:
    """A layout bound to one file's header."""

    width: int
    id_index: int | None
    columns: tuple[Column, ...]

    @property
    def positions(self) -> list[int]:
        return [p for c in self.columns for p in c.positions]


@dataclass(frozen=True)
class Layout:
    model: str
    feeds: tuple[Feed, ...]

    @classmethod
    def of(cls, model: LoadedModel) -> Layout:
        specs = model.inputs
        if len(specs) == 1 and len(specs[0].shape) == 2:
            spec = specs[0]
            names = tuple(model.features) if model.features else None
            if names is not None and spec.shape[1] not in (-1, len(names)):
                raise InvalidInput(
                    f"model {model.name!r} version {model.version} records {len(names)} feature names for input "
                    f"{spec.describe()}"
                )
            width = len(names) if names is not None else spec.shape[1]
            return cls(model.name, (Feed(spec, names, (width,)),))
        feeds = []
        for spec in specs:
            if len(spec.shape) == 1:
                feeds.append(Feed(spec, (spec.name,), ()))
            elif len(spec.shape) == 2 and spec.shape[1] == 1:
                feeds.append(Feed(spec, (spec.name,), (1,)))
            else:
                raise InvalidInput(
                    f"batch scoring feeds one [N, K] input, or [N] and [N, 1] inputs from the columns of their names; "
                    f"model {model.name!r} has {[s.describe() for s in specs]}"
                )
        return cls(model.name, tuple(feeds))

    @property
    def by_name(self) -> bool:
        return self.feeds[0].names is not None

    @property
    def floats(self) -> bool:
        """Every input takes floating-point numbers (what the CSV reader's numpy fast path parses)."""
        return all(f.spec.datatype in FLOATS for f in self.feeds)

    @property
    def needed(self) -> list[str]:
        return [n for f in self.feeds for n in f.names or ()]

    def bind(self, header: Sequence[str], text: bool = False) -> Binding:
        """The columns each input takes from a file with this header (`text`: a CSV header line, which may be
        a first row of data when the file has no header)."""
        names = [h.strip() for h in header]
        id_index = names.index(ID) if ID in names else None
        if self.by_name:
            self._check_names(names, text)
            columns = tuple(
                Column(f, tuple(names.index(n) for n in f.names or ()), tuple(f"column {n!r}" for n in f.names or ()))
                for f in self.feeds
            )
            return Binding(len(names), id_index, columns)
        return Binding(len(names), id_index, (self._by_position(self.feeds[0], names, id_index, text),))

    def _check_names(self, names: list[str], text: bool) -> None:
        missing = [n for n in self.needed if n not in names]
        if missing and text and _numbers(names):
            raise InvalidInput(_headerless(names, self.needed))
        if missing:
            raise InvalidInput(
                f"missing column(s) {missing}: model {self.model!r} takes {self.needed}; the file has {names}"
            )
        twice = sorted({n for n in self.needed if names.count(n) > 1})
        if twice:
            raise InvalidInput(f"column(s) {twice} appear more than once in the header: which one to score is unclear")

    def _by_position(self, feed: Feed, names: list[str], id_index: int | None, text: bool) -> Column:
        positions = [
            i for i, n in enumerate(names) if i != id_index and not (i == 0 and n == "") and not _PANDAS_INDEX.match(n)
        ]
        width = feed.spec.shape[1]
        if not positions:
            raise InvalidInput(f"the file has no feature columns, only {names}")
        if text and width == len(positions) and _numbers(names) and names != [str(i) for i in range(width)]:
            raise InvalidInput(_headerless(names, []))
        if width not in (-1, len(positions)):
            raise InvalidInput(
                f"the file has {len(positions)} feature column(s) {[names[i] for i in positions]}, but model "
                f"{self.model!r} input {feed.spec.describe()} takes {width}; publish it with --features to take "
                "columns by name"
            )
        return Column(feed, tuple(positions), tuple(f"column {names[i]!r}" for i in positions))


def _numbers(names: list[str]) -> bool:
    return bool(names) and all(is_number(n) for n in names)


def _headerless(names: list[str], needed: list[str]) -> str:
    first = ",".join(names)
    shown = first if len(first) <= 80 else first[:77] + "..."
    wanted = f" ({', '.join(needed)})" if needed else ""
    return (
        f"the first line ({shown}) is all numbers: it looks like data, but a CSV file needs a header line naming "
        f"its columns{wanted}"
    )
