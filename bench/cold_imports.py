"""What a cold start imports, by package: `python -X importtime` of the cold worker (bench/_cold_worker.py, the
whole run up to the first response, so imports made lazily by the first request count too), each module's own
(self) time summed per package (modelfn per subpackage), medians over repeats. Self times add up, so the table
reads as "where the import phase goes" without double counting.

`python -m bench.cold_imports [--old NAME=TREE ...] [--repeats N] [--out FILE]`: this tree's modelfn and the
minimal cold path, and with --old other checkouts' modelfn (e.g. `d6f2c00=DIR`, DIR holding `git archive d6f2c00`
unpacked), runs interleaved, written to bench/results/cold_imports.json and printed as a table."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import MODEL, RESULTS_DIR, ROOT, get_env, median


def package_of(module: str) -> str:
    """The group a module's self time is counted in: modelfn by subpackage, anything else by top-level name."""
    parts = module.split(".")
    if parts[0] == "modelfn" and len(parts) > 1:
        return f"modelfn.{parts[1]}"
    return parts[0]


def parse_importtime(stderr: str) -> dict[str, float]:
    """Self milliseconds per package from `-X importtime` lines (`import time: self | cumulative | name`)."""
    out: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _, name = line[len("import time:") :].split("|", 2)
        package = package_of(name.strip())
        if package != "bench":  # the worker's handler module: importing it is the baseline's init, not an import
            out[package] += int(self_us) / 1000
    return dict(out)


def importtime_run(kind: str, root: Path = ROOT) -> dict[str, float]:
    """One cold worker of `root`'s tree under -X importtime: self ms per package."""
    env = get_env()
    scratch = Path(tempfile.mkdtemp(prefix="modelfn-bench-imports-"))
    try:
        read_fd, write_fd = os.pipe()
        child = env.child_environ(
            BENCH_ROOT=str(root),
            MODELFN_STORE=env.store,
            MODELFN_MODEL=MODEL,
            MODELFN_CACHE_DIR=str(scratch),
            MODEL_BUCKET=env.bucket,
            MODEL_KEY=env.int8_key,
            BENCH_RESULT_FD=str(write_fd),
        )
        child["PYTHONPATH"] = os.pathsep.join((str(root / "layers" / "modelfn"), str(root)))
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", str(root / "bench" / "_cold_worker.py"), kind],
            env=child,
            cwd=root,
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
            timeout=300,
        )
        os.close(write_fd)
        os.close(read_fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cold worker {kind} ({root}) failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return parse_importtime(proc.stderr.decode(errors="replace"))


def by_package(variants: dict[str, tuple[str, Path]], repeats: int) -> dict[str, dict[str, float]]:
    """Median self ms per package for each variant (name -> (worker kind, tree)), runs interleaved."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (kind, root) in variants.items():
            runs[name].append(importtime_run(kind, root))
    out: dict[str, dict[str, float]] = {}
    for name, samples in runs.items():
        packages = {p for s in samples for p in s}
        med = {p: round(median([s.get(p, 0.0) for s in samples]), 1) for p in packages}
        med["(total)"] = round(median([sum(s.values()) for s in samples]), 1)
        out[name] = dict(sorted(med.items(), key=lambda kv: -kv[1]))
    return out


def table(result: dict[str, dict[str, float]], rows: int = 40) -> str:
    """Markdown: one row per package (the largest first, by the first variant), one column per variant."""
    names = list(result)
    packages: list[str] = []
    for name in names:
        for p in result[name]:
            if p not in packages:
                packages.append(p)
    packages.sort(key=lambda p: -max(result[n].get(p, 0.0) for n in names))
    lines = ["| package (self ms) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for p in packages[:rows]:
        lines.append(f"| {p} | " + " | ".join(f"{result[n].get(p, 0.0):.1f}" for n in names) + " |")
    return "\n".join(lines)


def run(repeats: int = 3, old: dict[str, Path] | None = None) -> dict[str, Any]:
    variants: dict[str, tuple[str, Path]] = {"modelfn": ("modelfn", ROOT)}
    for name, tree in (old or {}).items():
        variants[f"modelfn at {name}"] = ("modelfn", tree)
    variants["minimal cold path"] = ("minimal", ROOT)
    result = by_package(variants, repeats)
    return {"repeats": repeats, "self_ms_by_package": result, "table": table(result)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", action="append", default=[], help="NAME=DIR: another checkout, measured beside")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cold_imports.json")
    args = parser.parse_args()
    old = {name: Path(tree) for name, _, tree in (o.partition("=") for o in args.old)}
    result = run(args.repeats, old)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["table"])


if __name__ == "__main__":
    main()
