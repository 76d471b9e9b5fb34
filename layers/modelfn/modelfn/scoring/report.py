"""Rows that could not be scored, logged: one structured line (JSON, logger "modelfn") per row with the model,
version, input, row and reason, so an operator sees why without opening the errors file; past `limit` rows of one
file, one summary line with the count instead, so that a bad file cannot flood the logs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from modelfn import jsonio
from modelfn.model.loaded import LoadedModel
from modelfn.telemetry.failures import log_failure

log = logging.getLogger("modelfn")
LOGGED_ROWS = 100


class FailureLog:
    def __init__(self, model: LoadedModel, source: str, limit: int = LOGGED_ROWS) -> None:
        self.fields: dict[str, Any] = {"model": model.name, "version": model.version, "input": source}
        self.limit = limit
        self.count = 0

    def add(self, errors: Sequence[dict[str, Any]]) -> None:
        f = self.fields
        for e in errors[: max(self.limit - self.count, 0)]:
            log_failure("row_not_scored", f["model"], f["version"], e["error"], input=f["input"], row=e["row"])
        self.count += len(errors)

    def close(self) -> None:
        if self.count > self.limit:
            self._line(
                {"event": "rows_not_scored", **self.fields, "rows": self.count, "not_logged": self.count - self.limit}
            )

    @staticmethod
    def _line(fields: dict[str, Any]) -> None:
        log.warning("%s", jsonio.dumps(fields).decode())
