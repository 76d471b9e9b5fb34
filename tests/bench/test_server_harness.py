"""The server and batching figures' own arithmetic and plumbing, without load: the process-tree readings from
/proc, the taskset prefix, each peer's command line and request, the core's limit per round and the batching
cross-over. (The figures themselves run in `make bench`; they are never timed in tests.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import batching, peers, server_throughput
from bench import servers as srv
from bench.loadgen import pinned


def test_process_tree_cpu_and_rss() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
    try:
        assert child.pid in srv.descendants(os.getpid())
        deadline = time.monotonic() + 30  # on a loaded machine the child may still be starting its interpreter
        while srv.rss_mb(child.pid) <= 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.rss_mb(child.pid) > 1.0
        spent = srv.cpu_seconds(os.getpid())
        while srv.cpu_seconds(os.getpid()) <= spent and time.monotonic() < deadline:  # clock ticks are 10 ms
            sum(i * i for i in range(200_000))
        assert srv.cpu_seconds(os.getpid()) > spent
    finally:
        child.kill()
        child.wait()


def test_taskset_prefix() -> None:
    assert pinned(None) == []
    assert pinned(1) == (["taskset", "-c", "1"] if shutil.which("taskset") else [])


def test_each_peer_has_a_pinned_install_and_a_command(tmp_path: Path) -> None:
    class Env:
        workdir = tmp_path
        mlp_int8 = tmp_path / "mlp_int8.onnx"

    for name, peer in peers.PEERS.items():
        assert all("==" in p for p in peer.packages), peer.packages  # every version pinned
        argv, extra = peers.command(name, Env(), 18080)  # type: ignore[arg-type]
        assert argv[0].startswith(str(peers.PEERS_DIR / name / "bin"))
        assert "18080" in argv or name == "mlserver"
        assert extra["MODEL_PATH"] == str(Env.mlp_int8)
    settings = json.loads((tmp_path / "mlserver-18080" / "settings.json").read_text())
    assert settings["http_port"] == 18080
    model = json.loads((tmp_path / "mlserver-18080" / "mlp" / "model-settings.json").read_text())
    assert model["implementation"] == "peer_mlserver.OnnxMLP"
    v2 = json.loads(peers.request_body("v2", [0.5, 1.5]))
    assert v2["inputs"][0]["shape"] == [1, 2] and v2["inputs"][0]["data"] == [0.5, 1.5]
    assert json.loads(peers.request_body("bento", [0.5])) == {"features": [[0.5]]}


def test_peers_are_only_measured_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_PEERS", raising=False)
    assert not server_throughput.peers_wanted()
    monkeypatch.setenv("BENCH_PEERS", "0")
    assert not server_throughput.peers_wanted()
    monkeypatch.setenv("BENCH_PEERS", "1")
    assert server_throughput.peers_wanted()


def _round(rps: float) -> dict[str, Any]:
    return {"requests_per_second": rps}


def test_the_cores_limit_adds_the_model_and_codec_to_the_faster_trivial_app() -> None:
    points = {
        server_throughput.TRIVIAL_G: [_round(10_000.0), _round(8_000.0)],
        server_throughput.TRIVIAL_U: [_round(5_000.0), _round(10_000.0)],
    }
    floors = [{"session_run_us": 50.0, "codec_us": 50.0}] * 2
    # 100 µs of HTTP + 100 µs of model and codec: 5,000 req/s, whichever server was faster that round
    assert server_throughput._limit_per_round(points, floors) == pytest.approx([5_000.0, 5_000.0])


def _point(model: str, mode: str, vs_off: float) -> dict[str, Any]:
    return {"model": model, "mode": mode, "connections": 32, "rps": 100.0 * vs_off, "vs_off": vs_off}


def test_crossover_lies_between_the_costliest_loss_and_the_cheapest_win() -> None:
    costs = {"a": 10.0, "b": 80.0, "c": 400.0}
    gains = {"a": 0.6, "b": 0.9, "c": 2.0}
    result = {
        "models": {m: {"about": m} for m in costs},
        "adaptive": {
            m: {"costs": {"single_run_us": us, "saving_us": 1, "overhead_us": 1, "joined": m == "c"}}
            for m, us in costs.items()
        },
        "points": [_point(m, mode, gains[m] if mode == "always" else 1.0) for m in costs for mode in batching.MODES],
    }
    cross = batching.crossover(result)
    assert (cross["joining_loses_up_to_us"], cross["joining_wins_from_us"]) == (80.0, 400.0)
    assert [r["model"] for r in cross["models"]] == ["a", "b", "c"]


def test_the_batching_modes_are_the_serve_flags() -> None:
    from modelfn_tools.cli import build_parser

    for mode, flag in batching.FLAGS.items():
        a = build_parser().parse_args(["serve", flag])
        assert (a.batching, a.batching_always) == {"off": (False, False), "on": (True, False), "always": (None, True)}[
            mode
        ]
