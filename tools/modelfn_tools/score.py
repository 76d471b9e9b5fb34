"""`modelfn score INPUT OUTPUT --store URI --name NAME [--version V]`: the S3 batch handler's scoring, on a local
or s3:// file, from a laptop or a CI job."""

from __future__ import annotations

from typing import Any

from modelfn.registry import ModelRegistry
from modelfn.scoring import score_object
from modelfn.settings import Settings
from modelfn.store import split_uri


def score(input_uri: str, output_uri: str, store: str | None, name: str, version: str | None) -> dict[str, Any]:
    settings = Settings.load(store=store)
    if not settings.store:
        raise SystemExit("modelfn score: no store given: pass --store URI or set MODELFN_STORE")
    model = ModelRegistry.from_uri(settings.store, settings, [name]).get(name, version)
    src, src_key = split_uri(input_uri)
    dest, dest_key = split_uri(output_uri)
    stats = score_object(model, src, src_key, dest, dest_key)
    return {"model": name, "version": model.version, **stats.summary()}
