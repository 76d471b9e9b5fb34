"""The disk cache's directory is private to this process's user: created 0700, and an existing one that another
user owns or may write in is refused (a fresh private directory of this process is used instead), since whoever
can write there decides what the next cold load finds."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from modelfn_tools.publish import publish

from modelfn.registry import ModelRegistry
from modelfn.registry import cache_dir as cache_dir_module
from modelfn.registry.loader import ModelCache
from modelfn.settings import Settings
from modelfn.store import ModelRepository, open_store

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
NOBODY = 65534


@pytest.fixture
def store(tmp_path: Path, example_dir: Path) -> str:
    root = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", root, "iris", progress=False)
    return root


@pytest.fixture(autouse=True)
def _forget_fallbacks() -> Iterator[None]:
    """Each test sees directories afresh (the fallback chosen for a refused one is kept per process)."""
    cache_dir_module._fallbacks.clear()
    yield
    cache_dir_module._fallbacks.clear()


def load(store: str, cache_dir: Path) -> Path:
    """Load iris through a fresh cache; returns the folder its artifact was cached in."""
    settings = Settings(cache_dir=cache_dir, warmup=False)
    model = ModelRegistry(ModelRepository(open_store(store)), settings, cache=ModelCache()).get("iris", 1)
    assert model.predict({"float_input": ROW})["label"].tolist() == [0]
    return Path(model.metadata["artifact"]).parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def refused(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and f"{path} " in r.getMessage()]


def test_the_cache_directory_is_created_private(store: str, tmp_path: Path) -> None:
    wanted = tmp_path / "new" / "cache"
    assert load(store, wanted) == wanted
    assert mode(wanted) == 0o700
    assert wanted.stat().st_uid == os.geteuid()


def test_a_directory_only_readable_by_others_is_made_private(store: str, tmp_path: Path) -> None:
    wanted = tmp_path / "readable"
    wanted.mkdir(mode=0o755)
    wanted.chmod(0o755)
    assert load(store, wanted) == wanted
    assert mode(wanted) == 0o700


@pytest.mark.parametrize("mode_bits", [0o777, 0o770, 0o1777, 0o702])
def test_a_directory_others_may_write_is_refused(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode_bits: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode_bits)
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        used = load(store, shared)
        again = load(store, shared)
    assert used != shared and again == used  # one fallback per process, reused by every load
    assert not used.is_relative_to(shared)
    assert mode(used) == 0o700
    assert used.stat().st_uid == os.geteuid()
    assert list(shared.iterdir()) == []  # nothing was written where others could swap it
    [warning] = refused(caplog, shared)
    assert "is writable by group or others" in warning
    assert f"{mode_bits:04o}" in warning
    assert str(used) in warning


def foreign_directory(tmp_path: Path) -> Path:
    """A directory another user owns, writable by nobody else."""
    if os.geteuid() != 0:
        return Path("/usr")  # root's, mode 0755, on every Linux
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    return theirs


def test_a_directory_another_user_owns_is_refused(store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    theirs = foreign_directory(tmp_path)
    owner = theirs.stat().st_uid
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        used = load(store, theirs)
    assert used != theirs
    assert mode(used) == 0o700
    [warning] = refused(caplog, theirs)
    assert f"belongs to uid {owner}, not to this process's uid {os.geteuid()}" in warning
    if theirs.is_relative_to(tmp_path):
        assert list(theirs.iterdir()) == []


def test_a_symlink_is_refused_even_to_a_private_directory(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever made the link can point it elsewhere later."""
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        used = load(store, link)
    assert used not in (link, target)
    assert list(target.iterdir()) == []
    assert "is a symbolic link" in refused(caplog, link)[0]


def test_the_default_stays_tmp_modelfn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELFN_CACHE_DIR", raising=False)
    assert Settings().cache_dir == Path("/tmp/modelfn")
