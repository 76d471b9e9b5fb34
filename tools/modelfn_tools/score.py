"""`modelfn score INPUT OUTPUT --store URI --name NAME [--version V]`: the S3 batch handler's scoring, on a local
or s3:// file, from a laptop or a CI job. The summary is printed on stdout as JSON; the exit status says whether
every row was scored, so a pipeline cannot take a partly scored file for a whole one:

- 0: every row was scored;
- 1 (ROWS_FAILED): some rows could not be; they are in OUTPUT.errors.jsonl, and stderr says how many;
- 2 (the CLI's status for any refused command): the file could not be scored at all (its format, a missing
  column, no header line, a quote never closed; or the model or store): stderr says why, no output is written.
"""

from __future__ import annotations

import sys
from typing import Any

from modelfn.errors import InvalidInput
from modelfn.registry import ModelRegistry
from modelfn.scoring import score_object
from modelfn.settings import Settings
from modelfn.store import split_uri

ROWS_FAILED = 1


def score(input_uri: str, output_uri: str, store: str | None, name: str, version: str | None) -> dict[str, Any]:
    settings = Settings.load(store=store)
    if not settings.store:
        raise SystemExit("modelfn score: no store given: pass --store URI or set MODELFN_STORE")
    model = ModelRegistry.from_uri(settings.store, settings, [name]).get(name, version)
    try:
        src, src_key = split_uri(input_uri)
        dest, dest_key = split_uri(output_uri)
    except ValueError as e:
        raise InvalidInput(str(e)) from e
    stats = score_object(model, src, src_key, dest, dest_key)
    return {"model": name, "version": model.version, **stats.summary()}


def exit_status(summary: dict[str, Any]) -> int:
    """0 when every row was scored; else ROWS_FAILED, with a summary on stderr."""
    if not summary["errors"]:
        return 0
    print(
        f"modelfn score: {summary['scored']:,} of {summary['rows']:,} rows scored, {summary['errors']:,} could not "
        f"be: see {summary['errors_output']}",
        file=sys.stderr,
    )
    return ROWS_FAILED
