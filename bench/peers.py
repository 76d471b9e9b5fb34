"""Peer model servers for `make bench PEERS=1`: KServe, MLServer and BentoML, each in a virtual environment of its
own under bench/.peers/ (git-ignored; pinned versions from PyPI, the same onnxruntime and numpy as modelfn's), each
serving the same int8 MLP through onnxruntime from a small server file in bench/baselines/.

    .venv/bin/python -m bench.peers install        # create or update the environments (idempotent)

`start(name, env, cpu)` runs one as a process of its own on a free loopback port (pinned with taskset to `cpu` when
given) and returns it with its base URL, the path it answers inferences on and the body it expects for the one-row
request every server gets (`bench.server_throughput`)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchEnv

PEERS_DIR = ROOT / "bench" / ".peers"
ORT = "onnxruntime==1.32.0"
NUMPY = "numpy==2.4.6"


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    packages: tuple[str, ...]
    argv: tuple[str, ...]  # {bin} (the environment's bin folder), {port}, {model}, {root}, {workdir} filled in
    ready: str
    infer: str
    body: str  # "v2" (KServe v2 JSON) or "bento" ({"features": [[...]]})


PEERS = {
    "kserve": Peer(
        "kserve",
        "KServe 0.21.0",
        ("kserve==0.21.0", ORT, NUMPY),
        ("{bin}/python", "{root}/bench/baselines/peer_kserve.py", "--http_port", "{port}", "--model", "{model}"),
        "/v2/models/mlp/ready",
        "/v2/models/mlp/infer",
        "v2",
    ),
    "mlserver": Peer(
        "mlserver",
        "MLServer 1.7.1",
        ("mlserver==1.7.1", ORT, NUMPY),
        ("{bin}/mlserver", "start", "{workdir}"),
        "/v2/models/mlp/ready",
        "/v2/models/mlp/infer",
        "v2",
    ),
    "bentoml": Peer(
        "bentoml",
        "BentoML 1.4.40",
        ("bentoml==1.4.40", ORT, NUMPY),
        ("{bin}/bentoml", "serve", "peer_bentoml:MLP", "--port", "{port}", "--host", "127.0.0.1"),
        "/readyz",
        "/predict",
        "bento",
    ),
}


def python(name: str) -> Path:
    return PEERS_DIR / name / "bin" / "python"


def install(names: list[str] | None = None) -> dict[str, str]:
    """Create each peer's environment and install its pinned packages; what was installed, by name."""
    done = {}
    for name in names or list(PEERS):
        peer = PEERS[name]
        home = PEERS_DIR / name
        stamp = home / ".installed"
        wanted = " ".join(peer.packages)
        if not (stamp.exists() and stamp.read_text() == wanted):
            venv.EnvBuilder(with_pip=True, clear=stamp.exists()).create(home)
            pip = [str(python(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            subprocess.run([*pip, *peer.packages], check=True)
            stamp.write_text(wanted)
        done[name] = wanted
    return done


def installed(name: str) -> bool:
    stamp = PEERS_DIR / name / ".installed"
    return stamp.exists() and stamp.read_text() == " ".join(PEERS[name].packages)


def _mlserver_dir(env: BenchEnv, port: int) -> Path:
    """MLServer reads its settings from a folder: the server's and the model's, with our onnxruntime runtime."""
    root = env.workdir / f"mlserver-{port}"
    (root / "mlp").mkdir(parents=True, exist_ok=True)
    settings = {"http_port": port, "grpc_port": 0, "metrics_port": 0, "host": "127.0.0.1", "parallel_workers": 0}
    (root / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "mlp",
        "implementation": "peer_mlserver.OnnxMLP",
        "parameters": {"uri": str(env.mlp_int8)},
    }
    (root / "mlp" / "model-settings.json").write_text(json.dumps(model))
    return root


def command(name: str, env: BenchEnv, port: int) -> tuple[list[str], dict[str, str]]:
    """The peer's argv and extra environment for one run on `port`."""
    peer = PEERS[name]
    fill = {"bin": str(PEERS_DIR / name / "bin"), "port": str(port), "model": str(env.mlp_int8), "root": str(ROOT)}
    fill["workdir"] = ""
    if name == "mlserver":
        fill["workdir"] = str(_mlserver_dir(env, port))
    argv = [a.format(**fill) for a in peer.argv]
    extra = {"PYTHONPATH": str(ROOT / "bench" / "baselines"), "MODEL_PATH": str(env.mlp_int8)}
    return argv, extra


def request_body(kind: str, features: list[float]) -> str:
    if kind == "bento":
        return json.dumps({"features": [features]})
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, len(features)], "data": features}]}
    )


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] != ["install"]:
        print(__doc__)
        return 2
    for name, what in install(args[1:] or None).items():
        print(f"{name}: {what} in {PEERS_DIR / name}")
    return 0


def describe() -> dict[str, Any]:
    return {n: {"label": p.label, "packages": list(p.packages), "installed": installed(n)} for n, p in PEERS.items()}


if __name__ == "__main__":
    sys.exit(main())
