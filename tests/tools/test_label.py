"""`modelfn label` as real processes: concurrent moves of different labels all land (S3's conditional PUT on moto's
server, an flock'd compare-and-replace on a local folder), and `--delete` removes a label the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import manifest_key

TRIALS = 20
BATCH = 10  # trials run side by side (each on its own model), two racing processes per trial


@pytest.fixture(params=["s3", "local"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    uri: str = request.getfixturevalue("fresh_bucket")
    return uri


def _modelfn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelfn_tools.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _published(store_uri: str, names: list[str], versions: tuple[int, ...] = (1,)) -> ModelRepository:
    """Versions that `label` accepts (it checks only that the manifest exists; publishing is tested elsewhere)."""
    store = open_store(store_uri)
    for name in names:
        for v in versions:
            store.write_bytes(manifest_key(name, v), b"{}")
    return ModelRepository(store)


def test_concurrent_label_moves_all_land(store_uri: str) -> None:
    """Two `modelfn label` processes for different labels of one model, started together: on main, one update was
    lost in about half the trials (read-modify-write of labels.json). Each trial uses a fresh model, so both
    processes also race to create labels.json."""
    names = [f"m{i}" for i in range(TRIALS)]
    repo = _published(store_uri, names)
    for start in range(0, TRIALS, BATCH):
        batch = names[start : start + BATCH]
        procs = [_modelfn("label", "--store", store_uri, "--name", n, label, "1") for n in batch for label in "ab"]
        for proc in procs:
            rc, _out, err = _finish(proc)
            assert rc == 0, err
    lost = {n: repo.labels(n) for n in names if repo.labels(n) != {"a": 1, "b": 1}}
    assert lost == {}


def test_label_delete(store_uri: str) -> None:
    repo = _published(store_uri, ["iris"], (1, 2))
    for label, version in (("stable", "1"), ("canary", "2"), ("old", "1")):
        rc, _out, err = _finish(_modelfn("label", "--store", store_uri, "--name", "iris", label, version))
        assert rc == 0, err

    rc, out, err = _finish(_modelfn("label", "--store", store_uri, "--name", "iris", "--delete", "canary"))
    assert rc == 0, err
    assert json.loads(out) == {"name": "iris", "labels": {"old": 1, "stable": 1}}
    assert repo.labels("iris") == {"old": 1, "stable": 1}
    assert repo.resolve("iris", None) == 1

    rc, out, err = _finish(_modelfn("label", "--store", store_uri, "--name", "iris", "--delete", "canary"))
    assert (rc, out) == (2, "")
    assert err.strip() == f"modelfn label: model 'iris' has no label 'canary' in {repo.uri} (labels: old, stable)"
    assert "Traceback" not in err

    # a delete racing a move of another label: both land
    delete = _modelfn("label", "--store", store_uri, "--name", "iris", "--delete", "old")
    move = _modelfn("label", "--store", store_uri, "--name", "iris", "canary", "2")
    assert [_finish(p)[0] for p in (delete, move)] == [0, 0]
    assert repo.labels("iris") == {"canary": 2, "stable": 1}

    rc, out, err = _finish(_modelfn("label", "--store", store_uri, "--name", "iris", "--delete", "stable"))
    assert rc == 0, err
    rc, out, err = _finish(_modelfn("label", "--store", store_uri, "--name", "iris", "--delete", "canary"))
    assert rc == 0, err
    assert json.loads(out) == {"name": "iris", "labels": {}}
    assert repo.labels("iris") == {}
    assert repo.resolve("iris", None) == 2  # no stable label: the highest version


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delete", "stable", "canary", "1"], "not both"),
        (["--delete", "stable", "canary"], "not both"),
        ([], "give LABEL VERSION"),
        (["stable"], "give LABEL VERSION"),
        (["--delete", "1bad"], "invalid label"),
    ],
)
def test_label_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    store_uri = str(tmp_path / "store")
    repo = _published(store_uri, ["iris"])
    rc, out, err = _finish(_modelfn("label", "--store", store_uri, "--name", "iris", *args))
    assert (rc, out) == (2, "")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert repo.labels("iris") == {}
