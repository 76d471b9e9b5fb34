"""`python -m bench [--quick] [--only NAME,...] [--results-dir DIR] [--no-profile]`: every figure, side by side
with its baseline, in one run. Writes <results>/<name>.json per figure, summary.json, summary.md (the table:
figure, modelfn, baseline, ratio, target, met?), PNG charts, profiles of the figures that missed a target (full
runs), and the README's quoted block when the README has the markers; prints the table."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, ROOT, machine

FIGURES = (
    "warm_invoke",
    "cold_start",
    "large_request",
    "s3_batch",
    "server_throughput",
    "quantization",
    "auth_cost",
    "response_cache",
    "traffic_cost",
    "capture_cost",
    "grpc_vs_http",
    "spark_score",
)
EXTERNAL = ("batching",)  # figures other modules provide, run when present


def available() -> list[str]:
    names = list(FIGURES)
    for name in EXTERNAL:
        if importlib.util.find_spec(f"bench.{name}") is not None:
            names.append(name)
    return names


def run_figure(name: str, quick: bool, results_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "run"):
            result = dict(module.run(quick))
        else:  # a figure that only has a command line: it writes its own JSON (or prints it)
            proc = subprocess.run(
                [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            )
            path = results_dir / f"{name}.json"
            result = json.loads(path.read_text()) if path.exists() else json.loads(proc.stdout)
    except Exception:
        result = {"name": name, "error": traceback.format_exc()}
    result.setdefault("name", name)
    result.setdefault("summary", [])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def external_rows(name: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Summary rows of a figure written elsewhere, in this suite's shape when it uses another one."""
    keys = {"figure", "metric", "modelfn", "baseline", "ratio", "target", "met"}
    rows = [r for r in result.get("summary", []) if isinstance(r, dict)]
    if rows and all(keys <= set(r) for r in rows):
        return rows
    return [
        {
            "figure": name,
            "metric": f"see bench/results/{name}.json",
            "modelfn": None,
            "baseline": None,
            "baseline_name": "",
            "unit": "",
            "ratio": None,
            "target": "",
            "met": None,
        }
    ]


def profiles_for_missed(results: dict[str, dict[str, Any]], results_dir: Path) -> dict[str, str]:
    """For each figure with a missed target: its profile (saved in full) and the analysis that reads it."""
    notes: dict[str, str] = {}
    from bench import analysis

    for name, res in results.items():
        if not any(r.get("met") is False for r in res.get("summary", [])):
            continue
        text = ""
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "profile"):
            started = time.perf_counter()
            try:
                text = str(module.profile())
            except Exception:
                text = "profile failed:\n" + traceback.format_exc()
            (results_dir / f"{name}.profile.txt").write_text(text)
            print(f"  profiled {name} in {time.perf_counter() - started:.0f} s", flush=True)
        notes[name] = analysis.explain(name, res, text)
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(available())}")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles of missed targets")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild summary, notes and charts from the saved results"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    names = available()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown figure(s) {unknown}; choose from {names}")
        names = wanted
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        return report_only(results_dir, args.no_readme)
    meta: dict[str, Any] = {"quick": args.quick, "figures": names, "machine": machine()}
    print(f"modelfn bench ({'quick' if args.quick else 'full'}): {', '.join(names)}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"- {name} ...", flush=True)
        res = run_figure(name, args.quick, results_dir)
        if name in EXTERNAL:
            res["summary"] = external_rows(name, res)
        results[name] = res
        (results_dir / f"{name}.json").write_text(json.dumps(res, indent=2, default=str))
        status = "failed" if "error" in res else "done"
        print(f"  {status} in {res['seconds']:.0f} s", flush=True)
        if "error" in res:
            print(res["error"], file=sys.stderr, flush=True)
    notes: dict[str, str] = {}
    if not args.quick and not args.no_profile:
        notes = profiles_for_missed(results, results_dir)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_report(results_dir, meta, results, notes, readme=not args.no_readme and not args.quick)
    return 1 if any("error" in r for r in results.values()) else 0


def report_only(results_dir: Path, no_readme: bool) -> int:
    """Rebuild summary.md, summary.json, the notes and the charts from a previous run's files."""
    from bench import analysis

    meta = json.loads((results_dir / "summary.json").read_text())["meta"]
    results = {n: json.loads((results_dir / f"{n}.json").read_text()) for n in meta["figures"]}
    notes = {}
    for name, res in results.items():
        prof = results_dir / f"{name}.profile.txt"
        if prof.exists() and any(r.get("met") is False for r in res.get("summary", [])):
            notes[name] = analysis.explain(name, res, prof.read_text())
    write_report(results_dir, meta, results, notes, readme=not no_readme and not meta["quick"])
    return 0


def write_report(
    results_dir: Path, meta: dict[str, Any], results: dict[str, dict[str, Any]], notes: dict[str, str], readme: bool
) -> None:
    from bench import report

    for name, res in results.items():
        if "error" in res or (name in EXTERNAL and (results_dir / f"{name}.png").exists()):
            continue  # a figure written elsewhere draws its own chart
        with contextlib.suppress(Exception):
            report.chart(name, res, results_dir / f"{name}.png")
    rows = [r for res in results.values() for r in res.get("summary", [])]
    report.summary_chart(rows, results_dir / "summary.png")
    md = report.markdown(meta, results, notes)
    (results_dir / "summary.md").write_text(md)
    (results_dir / "summary.json").write_text(json.dumps({"meta": meta, "summary": rows}, indent=2, default=str))
    if readme and results_dir == RESULTS_DIR and set(results) >= set(FIGURES):
        extra = []
        if "batching" in results and "error" not in results["batching"]:  # its own table, from this run's figures
            from bench.batching import markdown as batching_table

            table_md = batching_table(results["batching"])
            (results_dir / "batching.md").write_text(table_md)
            extra.append(table_md.strip())
        report.update_readme(ROOT / "README.md", meta, rows, extra)
    print()
    print(report.header(meta))
    print()
    print(report.table(rows))
    print(f"\nresults: {results_dir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
