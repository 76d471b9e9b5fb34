"""Store URIs through the real CLI: every malformed form is one line on stderr and exit 2 (no traceback, nothing
written anywhere), naming the forms that work; plain relative paths still mean local folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfn.store import ModelRepository, open_store

BAD = [
    "s3//bucket/x",  # on main: silently published to the local folder ./s3/bucket/x
    "s3:/bucket",  # on main: a traceback
    "s3:bucket/x",
    "s3://",
    "file://rel",  # on main: a traceback
    "file:rel",
    "gs://bucket/x",
]


def _start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelfn_tools.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or dict(os.environ),
    )


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_malformed_store_uris_are_refused(example_dir: Path, tmp_path: Path) -> None:
    iris = example_dir / "iris.onnx"
    runs = {("publish", uri): _start(tmp_path, "publish", str(iris), "--store", uri, "--name", "iris") for uri in BAD}
    for uri in ("s3//bucket/x", "file://rel"):
        runs["label", uri] = _start(tmp_path, "label", "--store", uri, "--name", "iris", "stable", "1")
        runs["models", uri] = _start(tmp_path, "models", "--store", uri)
    env = {**os.environ, "MODELFN_STORE": "s3//bucket/from-env"}
    runs["publish", "$MODELFN_STORE"] = _start(tmp_path, "publish", str(iris), "--name", "iris", env=env)
    for (command, uri), proc in runs.items():
        out, err = proc.communicate(timeout=120)
        assert (proc.returncode, out) == (2, ""), (command, uri, err)
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"modelfn {command}: ")
        if uri != "gs://bucket/x":
            assert "malformed" in err, err
        assert "s3://bucket/prefix, file:///abs/path, or a plain path" in err
    assert _files(tmp_path) == []  # nothing written: no ./s3/bucket/x, no ./rel


@pytest.mark.parametrize("uri", ["models", "./models"])
def test_relative_paths_are_local_folders(example_dir: Path, tmp_path: Path, uri: str) -> None:
    proc = _start(tmp_path, "publish", str(example_dir / "iris.onnx"), "--store", uri, "--name", "iris")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    folder = (tmp_path / "models").resolve()
    assert json.loads(out)["uri"] == f"{folder.as_uri()}/iris/1/model.onnx"
    assert ModelRepository(open_store(str(folder))).versions("iris") == [1]
