"""`modelfn traffic`: writes traffic.json (on S3 through moto's server, and on a local folder), keeps the parts not
given, refuses targets that do not exist, prints the traffic in effect; `label --delete` respects it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from modelfn_tools.cli import main

from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import dump_labels, labels_key, manifest_key
from modelfn.store.traffic import make_traffic, traffic_key


@pytest.fixture(params=["s3", "local"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    uri: str = request.getfixturevalue("fresh_bucket")
    return uri


def _model(store_uri: str, name: str = "iris") -> ModelRepository:
    """Versions 1..3 (a manifest is all `traffic` checks; publishing is tested elsewhere), stable→1, canary→2."""
    store = open_store(store_uri)
    for v in (1, 2, 3):
        store.write_bytes(manifest_key(name, v), b"{}")
    store.write_bytes(labels_key(name), dump_labels({"stable": 1, "canary": 2}))
    return ModelRepository(store)


def _traffic(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object] | str]:
    rc = main(["traffic", *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if rc == 0 else err


def test_set_split_then_sticky_then_shadow_keeps_the_rest(store_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _model(store_uri)
    base = ["--store", store_uri, "--name", "iris"]

    rc, shown = _traffic(capsys, *base, "--split", "stable=90,canary=10")
    assert rc == 0
    assert shown == {
        "name": "iris",
        "split": {"canary": 10, "stable": 90},
        "sticky": None,
        "shadow": None,
        "versions": {"canary": 2, "stable": 1},
    }
    assert repo.traffic("iris") == make_traffic({"split": {"stable": 90, "canary": 10}})

    rc, shown = _traffic(capsys, *base, "--sticky", "X-User-Id")
    assert rc == 0
    rc, shown = _traffic(capsys, *base, "--shadow", "3:25")
    assert rc == 0
    expected = {"split": {"stable": 90, "canary": 10}, "sticky": "x-user-id", "shadow": {"target": "3", "percent": 25}}
    assert repo.traffic("iris") == make_traffic(expected)
    assert isinstance(shown, dict)
    assert shown["versions"] == {"canary": 2, "stable": 1, "3": 3}

    rc, shown = _traffic(capsys, *base)  # nothing given: shows, writes nothing
    assert rc == 0
    assert isinstance(shown, dict)
    assert shown["shadow"] == {"target": "3", "percent": 25}

    rc, shown = _traffic(capsys, *base, "--clear", "--split", "2=1")
    assert rc == 0
    assert repo.traffic("iris") == make_traffic({"split": {"2": 1}})

    rc, shown = _traffic(capsys, *base, "--clear")
    assert rc == 0
    assert shown == {"name": "iris", "split": {}, "sticky": None, "shadow": None, "versions": {}}
    assert repo.traffic("iris") is None


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--split", "stable=90,beta=10"], "has no label 'beta' (labels: canary, stable)"),
        (["--split", "stable=90,7=10"], "has no published version 7"),
        (["--shadow", "beta"], "has no label 'beta'"),
        (["--split", "stable=90,canary"], "invalid split part 'canary'"),
        (["--split", "stable=-5"], "invalid split part 'stable=-5'"),
        (["--split", "stable=0"], "at least one must be positive"),
        (["--split", "stable=1,stable=2"], "appears twice"),
        (["--split", "no good=1"], "invalid target 'no good'"),
        (["--sticky", "x user"], "invalid sticky header"),
        (["--shadow", "canary:150"], "shadow.percent"),
        (["--shadow", "canary:half"], "expected TARGET or TARGET:PERCENT"),
    ],
)
def test_refused_with_a_clear_message_and_nothing_written(
    store_uri: str, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    repo = _model(store_uri)
    base = ["--store", store_uri, "--name", "iris"]
    assert _traffic(capsys, *base, "--split", "stable=1")[0] == 0
    rc, err = _traffic(capsys, *base, *args)
    assert rc == 2
    assert problem in str(err)
    assert str(err).startswith("modelfn traffic: ")
    assert repo.traffic("iris") == make_traffic({"split": {"stable": 1}})


def test_malformed_traffic_is_not_merged_into_but_can_be_replaced(
    store_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _model(store_uri)
    repo.store.write_bytes(traffic_key("iris"), b'{"split": {"stable": "ninety"}}')
    base = ["--store", store_uri, "--name", "iris"]
    rc, err = _traffic(capsys, *base, "--sticky", "x-user-id")
    assert rc == 2
    assert "is not a valid traffic.json: split.stable" in str(err)
    assert "--clear" in str(err)
    assert main(["label", *base, "--delete", "canary"]) == 2  # it cannot tell whether the traffic uses the label
    assert "is not a valid traffic.json" in capsys.readouterr().err
    assert repo.labels("iris") == {"stable": 1, "canary": 2}
    rc, _shown = _traffic(capsys, *base, "--clear", "--sticky", "x-user-id")
    assert rc == 0
    assert repo.traffic("iris") == make_traffic({"sticky": "x-user-id"})


def test_label_delete_refuses_a_label_the_traffic_uses(store_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _model(store_uri)
    base = ["--store", store_uri, "--name", "iris"]
    assert _traffic(capsys, *base, "--split", "stable=50,3=50", "--shadow", "canary")[0] == 0
    for label in ("stable", "canary"):
        assert main(["label", *base, "--delete", label]) == 2
        assert f"label {label!r} of model 'iris' is a target of its traffic" in capsys.readouterr().err
    assert repo.labels("iris") == {"stable": 1, "canary": 2}

    assert _traffic(capsys, *base, "--clear", "--split", "stable=1")[0] == 0
    assert main(["label", *base, "--delete", "canary"]) == 0
    capsys.readouterr()
    assert repo.labels("iris") == {"stable": 1}


def test_concurrent_traffic_changes_all_land(fresh_bucket: str) -> None:
    """`modelfn traffic` processes changing different parts of one traffic.json at once (S3 conditional PUTs on
    moto's server): each change lands, none is written over by a stale read."""
    names = [f"m{i}" for i in range(2)]
    repo = _model(fresh_bucket, names[0])
    for name in names[1:]:
        _model(fresh_bucket, name)
    parts = (["--split", "stable=3,canary=1"], ["--sticky", "x-user"], ["--shadow", "3:10"])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "modelfn_tools.cli", "traffic", "--store", fresh_bucket, "--name", name, *part],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for name in names
        for part in parts
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    expected = make_traffic(
        {"split": {"stable": 3, "canary": 1}, "sticky": "x-user", "shadow": {"target": "3", "percent": 10}}
    )
    assert {name: repo.traffic(name) for name in names} == dict.fromkeys(names, expected)
