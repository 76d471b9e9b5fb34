"""`modelfn traffic`: write a model's traffic.json (split, sticky header, shadow) with the store's conditional
write, refusing targets that do not exist, and show the traffic in effect with each target's version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelfn.errors import InvalidInput, ModelNotFound
from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import check_name, manifest_key
from modelfn.store.traffic import (
    InvalidTraffic,
    Traffic,
    check_target,
    dump_traffic,
    make_traffic,
    parse_traffic,
    target_version,
    traffic_key,
)

Change = Callable[[Traffic | None], Traffic]
"""The traffic to write, from the traffic there now (None: no traffic.json, or an empty one)."""


def parse_split(text: str) -> dict[str, int]:
    """`stable=90,canary=10` (targets are labels or versions) as {target: weight}; InvalidInput naming the part."""
    split: dict[str, int] = {}
    for part in text.split(","):
        target, sep, weight = part.partition("=")
        target = target.strip()
        if not sep or not weight.strip().isdigit():
            raise InvalidInput(f"invalid split part {part!r}: expected TARGET=WEIGHT, a non-negative integer weight")
        key = check_target(target)
        if key in split:
            raise InvalidInput(f"target {target!r} appears twice in the split")
        split[key] = int(weight)
    return split


def parse_shadow(text: str) -> dict[str, Any]:
    """`TARGET[:PERCENT]` (percent 0..100, default 100) as traffic.json's shadow object, checked."""
    target, sep, percent = text.partition(":")
    if sep and not percent.strip().isdigit():
        raise InvalidInput(f"invalid shadow {text!r}: expected TARGET or TARGET:PERCENT (an integer 0..100)")
    shadow = {"target": target.strip(), **({"percent": int(percent)} if sep else {})}
    make_traffic({"shadow": shadow})
    return shadow


def resolve_targets(repo: ModelRepository, name: str, traffic: Traffic | None) -> dict[str, int]:
    """{target: version} for every target of `traffic`; ModelNotFound for a label that is not set or a version
    that is not published (a target that does not exist would take its share of requests to a 404)."""
    if traffic is None:
        return {}
    labels = repo.labels(name)
    versions: dict[str, int] = {}
    for target in traffic.targets:
        version = target_version(target)
        if version is None:
            if target not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise ModelNotFound(f"model {name!r} has no label {target!r} (labels: {known})")
            version = labels[target]
        if not repo.store.exists(manifest_key(name, version)):
            raise ModelNotFound(f"model {name!r} has no published version {version} (target {target!r})")
        versions[target] = version
    return versions


def in_effect(repo: ModelRepository, name: str, traffic: Traffic | None) -> dict[str, Any]:
    """What `modelfn traffic` prints: the traffic as stored and each target's version now."""
    shown = (traffic or Traffic()).to_json()
    return {"name": name, **shown, "versions": resolve_targets(repo, name, traffic)}


def change_traffic(
    repo: ModelRepository, name: str, change: Change, *, replace: bool = False, check_targets: bool = True
) -> Traffic | None:
    """Apply `change` to traffic.json with the store's conditional write (a change based on a stale read is
    retried on a fresh one), after checking that every target of the result exists (unless `check_targets` is
    off: a change that only removes targets, such as a rollback, must not fail on one that vanished). Returns what
    was written (None: no traffic). A malformed traffic.json is not merged into: only `replace` (change gets None)
    writes over it."""
    key = traffic_key(check_name(name))
    where = f"the traffic of model {name!r}"

    def apply(current: bytes | None) -> bytes:
        try:
            now = None if replace else parse_traffic(current, where)
        except InvalidTraffic as e:
            raise InvalidTraffic(f"{e.message}; replace it with `modelfn traffic --clear ...`") from e
        new = change(now)
        if check_targets:
            resolve_targets(repo, name, new)
        return dump_traffic(new)

    return parse_traffic(repo.store.update(key, apply), where)


def set_traffic(
    store_uri: str,
    name: str,
    *,
    split: dict[str, int] | None = None,
    sticky: str | None = None,
    shadow: dict[str, Any] | None = None,
    clear: bool = False,
) -> dict[str, Any]:
    """Set the given parts of the traffic, keeping the others (with `clear`: starting from none). With nothing
    given, only shows the traffic in effect."""
    repo = ModelRepository(open_store(store_uri))
    check_name(name)
    if not clear and split is None and sticky is None and shadow is None:
        return in_effect(repo, name, repo.traffic(name))

    def change(now: Traffic | None) -> Traffic:
        raw = (now or Traffic()).to_json()
        if split is not None:
            raw["split"] = split
        if sticky is not None:
            raw["sticky"] = sticky
        if shadow is not None:
            raw["shadow"] = shadow
        return make_traffic(raw)

    return in_effect(repo, name, change_traffic(repo, name, change, replace=clear))
