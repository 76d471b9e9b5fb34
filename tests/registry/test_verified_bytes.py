"""A version is loaded from the very bytes that were verified: the cached file is read once, hashed, and the session
is built from those bytes (external data included), so another process swapping the file between the check and the
load can never get its model served."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from modelfn.registry import ModelRegistry
from modelfn.registry.loader import ModelCache, bundle_id
from modelfn.settings import Settings
from modelfn.store import ModelRepository, open_store
from tests.registry.versions import affine, reference, save_external, write_version

X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=np.float32)
LOADS = 300

SWAPPER = textwrap.dedent(
    """
    import os, sys
    target, good, evil = sys.argv[1:4]
    good_bytes, evil_bytes = open(good, "rb").read(), open(evil, "rb").read()
    tmp = os.path.join(os.path.dirname(target), ".swap")
    print("ready", flush=True)
    swaps = 0
    while not os.path.exists(sys.argv[4]):
        for data in (evil_bytes, good_bytes):
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
                swaps += 1
            except OSError:  # the loader removed the folder's file or the folder in between: keep going
                pass
    print(swaps, flush=True)
    """
)


def models() -> tuple[object, object]:
    """Two models with one signature (y = x @ W + b, [-1, 3] -> [-1, 4]) and different weights."""
    rng = np.random.default_rng(3)
    good = affine(rng.normal(size=(3, 4)), rng.normal(size=4))
    evil = affine(rng.normal(size=(3, 4)), rng.normal(size=4))
    return good, evil


def swap_during_cold_loads(tmp_path: Path, relative: str, external: bool) -> tuple[int, int, int]:
    """Publish the good model, cache it, then cold-load it LOADS times while another process keeps replacing the
    cached `relative` file with the evil model's (and back). Returns (wrong answers, discarded copies, swaps)."""
    import onnx

    good, evil = models()
    root, cache_dir = tmp_path / "store", tmp_path / "cache"
    paths = {}
    for label, model in (("good", good), ("evil", evil)):
        folder = tmp_path / label
        if external:
            paths[label] = save_external(model, folder)  # type: ignore[arg-type]
        else:
            folder.mkdir()
            paths[label] = folder / "model.onnx"
            onnx.save_model(model, str(paths[label]))  # type: ignore[arg-type]
    files = {"weights.bin": paths["good"].parent / "weights.bin"} if external else None
    manifest = write_version(open_store(str(root)), "m", 1, paths["good"], files)
    expected, wrong_answer = reference(good, X), reference(evil, X)  # type: ignore[arg-type]
    assert not np.allclose(expected, wrong_answer)

    settings = Settings(cache_dir=cache_dir, warmup=False, intra_op_threads=1)
    ModelRegistry(ModelRepository(open_store(str(root))), settings, cache=ModelCache()).get("m", 1)  # warm disk
    target = cache_dir / "sha256" / bundle_id(manifest) / relative
    assert target.is_file()
    stop = tmp_path / "stop"
    swapper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SWAPPER,
            str(target),
            str(paths["good"].parent / relative),
            str(paths["evil"].parent / relative),
            str(stop),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    wrong = discards = 0
    try:
        assert swapper.stdout is not None
        assert swapper.stdout.readline().strip() == "ready"
        for _ in range(LOADS):
            cache = ModelCache()  # a cold process on the same disk
            model = ModelRegistry(ModelRepository(open_store(str(root))), settings, cache=cache).get("m", 1)
            if not np.allclose(model.predict({"x": X})["y"], expected, rtol=1e-6):
                wrong += 1
            discards += cache.stats["disk_discards"]
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=30)
    return wrong, discards, int(out.strip() or 0)


def test_a_cached_model_swapped_during_cold_loads_is_never_served(tmp_path: Path) -> None:
    wrong, discards, swaps = swap_during_cold_loads(tmp_path, "model.onnx", external=False)
    assert swaps > LOADS  # the swapper really raced the loads...
    assert discards > 0  # ...and the loads really saw its file (and threw it away)
    assert wrong == 0


def test_swapped_external_data_during_cold_loads_is_never_served(tmp_path: Path) -> None:
    wrong, discards, swaps = swap_during_cold_loads(tmp_path, "weights.bin", external=True)
    assert swaps > LOADS
    assert discards > 0
    assert wrong == 0
