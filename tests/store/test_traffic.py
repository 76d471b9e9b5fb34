"""traffic.json: its format (targets, weights, sticky header, shadow), its errors, and reading it from a store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from modelfn.errors import InvalidInput, StoreError
from modelfn.store import ModelRepository, open_store
from modelfn.store.fields import Invalid
from modelfn.store.traffic import (
    InvalidTraffic,
    Shadow,
    Traffic,
    check_target,
    dump_traffic,
    make_traffic,
    parse_traffic,
    target_version,
    traffic_key,
)

EXAMPLE = {"split": {"stable": 90, "canary": 10}, "sticky": "X-User-Id", "shadow": {"target": "3", "percent": 25}}


def test_contract_example_parses_and_round_trips() -> None:
    traffic = parse_traffic(json.dumps(EXAMPLE).encode(), "t")
    assert traffic == Traffic(
        split={"canary": 10, "stable": 90}, sticky="x-user-id", shadow=Shadow(target="3", percent=25)
    )
    assert traffic.targets == ["canary", "stable", "3"]
    assert parse_traffic(dump_traffic(traffic), "t") == traffic
    assert json.loads(dump_traffic(traffic))["sticky"] == "x-user-id"


def test_targets_are_versions_or_labels() -> None:
    assert check_target("3") == "3"
    assert target_version("3") == 3
    assert target_version("stable") is None
    for bad in ("0", "03", "-1", "1.5", "has space", "", "9" * 30):
        with pytest.raises(InvalidInput, match="invalid target"):
            check_target(bad)


def test_shadow_percent_defaults_to_all() -> None:
    traffic = make_traffic({"shadow": {"target": "candidate"}})
    assert traffic.shadow == Shadow(target="candidate", percent=100)
    assert traffic.split == {}
    assert traffic.targets == ["candidate"]


def test_traffic_is_immutable() -> None:
    traffic = make_traffic(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        traffic.sticky = "other"  # type: ignore[misc]


def test_traffic_built_in_code_is_checked_and_canonical() -> None:
    """As a rollout or the CLI builds it: the same rules as traffic.json, the same canonical form."""
    traffic = Traffic(split={"stable": 90, "canary": 10}, sticky="X-User-Id")
    assert list(traffic.split) == ["canary", "stable"] and traffic.sticky == "x-user-id"
    assert traffic == make_traffic({"split": {"canary": 10, "stable": 90}, "sticky": "x-user-id"})
    with pytest.raises(Invalid, match=r"split: weight -1 of target 'a' is negative"):
        Traffic(split={"a": -1})
    with pytest.raises(Invalid, match=r"percent: expected an integer from 0 to 100, got a number 101"):
        Shadow(target="c", percent=101)
    with pytest.raises(Invalid, match="leading zeros"):
        Shadow(target="03")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"split": {"stable": -1, "canary": 2}}, "negative"),
        ({"split": {"stable": 0, "canary": 0}}, "at least one must be positive"),
        ({"split": {"stable": 1.5}}, "split.stable"),
        ({"split": {"stable": "90"}}, "split.stable"),
        ({"split": {"stable": True}}, "split.stable"),
        ({"split": {"no good": 1}}, "invalid target 'no good'"),
        ({"split": {"007": 1}}, "leading zeros"),
        ({"split": ["stable"]}, "split"),
        ({"sticky": "x user"}, "invalid sticky header"),
        ({"sticky": "x-user:id"}, "invalid sticky header"),
        ({"sticky": 3}, "sticky"),
        ({"shadow": {"target": "candidate", "percent": 101}}, "shadow.percent"),
        ({"shadow": {"target": "candidate", "percent": -1}}, "shadow.percent"),
        ({"shadow": {"percent": 5}}, "shadow.target"),
        ({"shadow": {"target": "c", "pct": 5}}, "shadow.pct"),
        ({"splitt": {"stable": 1}}, "splitt"),
        ([1, 2], "traffic"),
    ],
)
def test_malformed_traffic_is_a_store_error_naming_the_problem(raw: object, problem: str) -> None:
    with pytest.raises(InvalidTraffic, match=r"the traffic of model 'm' is not a valid traffic\.json: ") as caught:
        parse_traffic(json.dumps(raw).encode(), "the traffic of model 'm'")
    assert problem in caught.value.message
    assert isinstance(caught.value, StoreError)
    assert caught.value.status == 502
    with pytest.raises(InvalidInput, match="invalid traffic"):
        make_traffic(raw)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b""])
def test_bytes_that_are_not_json_are_invalid_traffic(data: bytes) -> None:
    with pytest.raises(InvalidTraffic, match="is not valid JSON"):
        parse_traffic(data, "here")


def test_absent_or_empty_is_no_traffic() -> None:
    assert parse_traffic(None, "t") is None
    assert parse_traffic(b"{}", "t") is None
    assert parse_traffic(b'{"split": {}, "sticky": null, "shadow": null}', "t") is None


def test_repository_reads_traffic(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(str(tmp_path / "store"))
    repo = ModelRepository(store)
    assert repo.traffic("iris") is None
    assert traffic_key("iris") == "iris/traffic.json"
    store.write_bytes(traffic_key("iris"), json.dumps(EXAMPLE).encode())
    assert repo.traffic("iris") == make_traffic(EXAMPLE)

    store.write_bytes(traffic_key("iris"), b'{"split": {"stable": -5}}')
    with pytest.raises(InvalidTraffic, match=r"the traffic of model 'iris'.*negative"):
        repo.traffic("iris")
    assert "traffic.json" in caplog.text  # the location goes to the log, not the message
    with pytest.raises(InvalidInput, match="invalid model name"):
        repo.traffic("../x")
