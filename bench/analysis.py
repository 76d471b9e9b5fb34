"""The closing notes for missed targets: where the time goes, read off this run's own figures and profile, and
what would close the gap. Numbers come from the run; the reading of them is written here, beside the code that
measures them, so a change in the package that moves the time shows up as a changed note."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

EXCERPT_LINES = 40
_NODE = re.compile(r"^(?P<lead>[^0-9]*?)(?P<time>\d+\.\d+) (?P<name>.+?)(?:  +(?P<where>\S.*))?$")


def breakdown(profile: str, root: str, depth: int = 2, min_share: float = 0.04) -> list[str]:
    """Markdown bullets for what a pyinstrument text tree spends under `root` (its children and grandchildren with
    at least min_share of root's time), so the notes follow the code as it is, not as it was."""
    nodes = []
    for line in profile.splitlines():
        m = _NODE.match(line)
        if m and ("─" in m.group("lead") or not m.group("lead").strip()):
            nodes.append((len(m.group("lead")), float(m.group("time")), m.group("name").strip(), m.group("where")))
    for i, (col, total, name, _) in enumerate(nodes):
        if name != root:
            continue
        out = []
        for ncol, t, n, where in nodes[i + 1 :]:
            if ncol <= col:
                break
            level = (ncol - col) // 3
            if level <= depth and total and t >= min_share * total:
                place = f" ({where})" if where and not where.startswith("<") else ""
                out.append(f"{'  ' * (level - 1)}- {n}{place}: {t:.2f} s, {100 * t / total:.0f}%")
        return out
    return []


def _excerpt(profile: str, lines: int = EXCERPT_LINES) -> str:
    kept = [ln for ln in profile.splitlines() if ln.strip()][:lines]
    return "```\n" + "\n".join(kept) + "\n```" if kept else "(no profile)"


def _warm_invoke(res: dict[str, Any], profile: str) -> str:
    r = res["results_us"]

    def p50(k: str) -> float:
        return float(r.get(k, {}).get("p50", float("nan")))

    full, bare = p50("modelfn"), p50("modelfn without its metrics and logs (the Lambda HTTP adapter and the service)")
    core, run = p50("modelfn core (decode, run, encode; no ASGI)"), p50("session.run alone")
    base, seed = p50("minimal handler"), p50("seed-style app")
    return f"""A warm invoke's p50, layer by layer (µs): session.run alone {run:.0f}; modelfn's protocol core
(orjson decode, value checks, run, encode) {core:.0f}; the Lambda HTTP adapter and the service (route table, target,
observers) {bare:.0f}; the real handler with its per-invoke EMF document and log context, {full:.0f}. The minimal
handler takes {base:.0f} and the seed-style app {seed:.0f}. modelfn's protocol work alone takes {core / base:.2f}× the
hand-written handler's time; the rest of the gap ({full - core:.0f} µs) is the adapter, the service's dispatch and its
observers (statistics, failure log) and the EMF document written on every invoke.

What would close it: fewer Python frames per invoke (about 160 calls per invoke in cProfile, 73 of them Python
functions: the adapter's event translation, target and model lookup, value checks, observers, EMF), e.g. a
precomputed per-route plan for the function's own model. Target ≤ 1.15× the minimal handler means
≤ {1.15 * base:.0f} µs here.

pyinstrument over modelfn's warm invokes (`bench/results/warm_invoke.profile.txt`):

{_excerpt(profile)}"""


def _cold_start(res: dict[str, Any], profile: str) -> str:
    med = res["medians_ms"]
    m, w, b = med["modelfn"], med["modelfn (warm disk cache)"], med["minimal cold path"]
    by_package = res.get("import_self_ms_by_package", {}).get("modelfn", {})
    costly = ", ".join(f"{pkg} {ms:.0f} ms" for pkg, ms in list(by_package.items())[:12] if pkg != "(total)") or "n/a"
    rows = "\n".join(
        f"| {label} | {m[k]:.0f} | {w[k]:.0f} | {b[k]:.0f} |"
        for label, k in (
            ("interpreter start", "interpreter"),
            ("imports", "imports"),
            ("fetch + init (S3 client, store reads, app set-up)", "fetch"),
            ("session creation", "session"),
            ("warm-up run", "warmup"),
            ("first request", "first_request"),
            ("**wall, spawn to first response**", "wall"),
        )
    )
    return f"""Medians (ms):

| phase | modelfn | modelfn, warm disk cache | minimal cold path |
|---|---:|---:|---:|
{rows}

A warm disk cache saves the artifact download only: the artifact is small, so the difference is imports and init,
not transfer.

Where it goes: the imports modelfn adds to onnxruntime + boto3 + numpy, then its init work before the first
request. `-X importtime` self time by package in this run (bench/cold_imports.py): {costly}.

What would close it: pydantic off the Lambda path (Settings, the manifest's and the signature's models parsed by
hand: pydantic and pydantic_core's import, its schema builds and its plugin scan over every installed distribution
are most of what modelfn imports beyond the baseline), and fewer S3 round trips before the first answer (labels,
manifest, artifact, then traffic.json on the first request, against the baseline's one get_object). Target ≤ 1.1×
means ≤ {1.1 * b["wall"]:.0f} ms here.

`python -X importtime` of one modelfn cold start, the costliest imports (`bench/results/cold_start.profile.txt`):

{_excerpt(profile)}"""


def _large_request(res: dict[str, Any], profile: str) -> str:
    ph = res["client_phases_ms"]
    return f"""Client phases (median ms): JSON encode {ph["json"]["encode_ms"]:.0f}, request + decode
{ph["json"]["request_ms"]:.0f}; binary encode {ph["binary"]["encode_ms"]:.1f}, request + decode
{ph["binary"]["request_ms"]:.0f}; the model's own run {res["model_run_ms_p50"]:.1f}.

py-spy over the server during JSON requests:

{_excerpt(profile)}"""


def _s3_batch(res: dict[str, Any], profile: str) -> str:
    r = res["results"]
    f = r["floor"]
    m, pd_, fl = (r[k]["rows_per_second"] for k in ("modelfn", "pandas", "floor"))
    reps = res["config"].get("repeats", 1)
    parse_s, run_s, parser = f["parse_seconds"], f["run_seconds"], f.get("parser", "pyarrow")
    model_rate = f["rows"] / run_s
    need = 3 * pd_
    reach = (
        f"3× pandas would be {need:,.0f} rows/s, above the floor's {fl:,.0f}: no implementation reaches it on this "
        "machine with this model, since pandas already parses in C and runs the same session."
        if need > fl
        else f"3× pandas is {need:,.0f} rows/s, under the floor's {fl:,.0f}."
    )
    parts = "\n".join(breakdown(profile, "score_object")) or "(no breakdown: see the profile)"
    mem = (r["modelfn"]["peak_rss_mb"], r["pandas"]["peak_rss_mb"])
    return f"""Rows/s (best of {reps} alternating runs each): modelfn {m:,.0f}, pandas {pd_:,.0f}, floor
{fl:,.0f} (the floor parses in {parse_s:.2f} s with {parser} and runs the session in {run_s:.2f} s for
{f["rows"]:,} rows; the model alone does {model_rate:,.0f} rows/s). {reach} 0.7× the floor is {0.7 * fl:,.0f} rows/s.
Peak RSS: modelfn {mem[0]:,.0f} MiB, pandas {mem[1]:,.0f} MiB.

Where modelfn's time goes, from the profile below (the S3 handler on a smaller file; score_object is the scoring
loop: read and parse a chunk, run it, format and write it):

{parts}

What would close the gap to the floor: whatever of parsing, formatting and S3 reading dominates above has to run at
C speed (the floor parses at {f["rows"] / parse_s:,.0f} rows/s with {parser}), and the stages have to overlap on the
two cores: parse the next chunk while onnxruntime, which releases the GIL, runs this one, and upload parts as
they fill, so that the total tends to the slowest stage rather than the sum.

pyinstrument over modelfn's S3 handler (`bench/results/s3_batch.profile.txt`):

{_excerpt(profile, 60)}"""


def _server_throughput(res: dict[str, Any], profile: str) -> str:
    r = res["results"]

    def rps(name: str) -> float:
        return float(r.get(name, {}).get("32", {}).get("requests_per_second", float("nan")))

    def at32(name: str) -> str:
        p = r.get(name, {}).get("32")
        return "n/a" if not p else f"{p['requests_per_second']:,.0f} req/s, p99 {p['latency_ms']['p99']:.1f} ms"

    lines = "\n".join(f"- {name}: {at32(name)}" for name in r)
    seed = rps("seed-style app (uvicorn)")
    plain, named = rps("modelfn serve"), rps("modelfn serve, /predict?model=mlp")
    one = rps("modelfn serve, MODELFN_INTRA_OP_THREADS=1, /predict?model=mlp")
    listing = (
        "`POST /predict` on `modelfn serve` (no default model) finds the only model by listing the store on every "
        "request (an S3 ListObjectsV2 through a worker thread; real S3 adds a round trip and a billed LIST per "
        "prediction): the profile below shows it as most of the server's busy time. Naming the model "
        f"(`/predict?model=mlp`) skips it: {plain:,.0f} → {named:,.0f} req/s."
        if plain < 0.7 * named
        else f"`POST /predict` as users call it and `/predict?model=mlp` are level ({plain:,.0f} and {named:,.0f} "
        "req/s): the plain route no longer pays a store round trip per request."
    )
    fix = (
        "resolve the plain route's model without listing the store (the model list cached for MODELFN_LABEL_TTL "
        "as labels are); "
        if plain < 0.7 * named
        else ""
    )
    threads = (
        f"One thread gave {one:,.0f} req/s against {named:,.0f} in this run: for single-row requests the second "
        "thread costs more than it gives."
        if one > 1.05 * named
        else f"One thread gave {one:,.0f} req/s against {named:,.0f} in this run: no gain here, so this is not "
        "where the gap is (it has gone both ways between runs on this shared machine)."
    )
    return f"""At 32 connections:
{lines}

Where the time goes, in order of size:

1. {listing}
2. onnxruntime's intra-op pool: modelfn sizes it to the usable CPUs (2 here), so its second thread (which spins
between runs) can compete with the event loop and the load generator on two cores. {threads}
3. What remains against the seed app ({seed:,.0f} req/s) is per-request Python in the same uvicorn + FastAPI stack;
2.5× the seed app would be {2.5 * seed:,.0f} req/s on two cores shared with the load generator.

What would close it: {fix}let dynamic batching use the cores (its rows above and the batching figure);
then trim per-request work on the hot routes (a plain ASGI route for /predict and /infer that skips FastAPI's
dependency and validation machinery).

py-spy over `modelfn serve` under 32 connections (`bench/results/server_throughput.profile.txt`):

{_excerpt(profile, 60)}"""


EXPLAIN: dict[str, Callable[[dict[str, Any], str], str]] = {
    "warm_invoke": _warm_invoke,
    "cold_start": _cold_start,
    "large_request": _large_request,
    "s3_batch": _s3_batch,
    "server_throughput": _server_throughput,
}


def explain(name: str, res: dict[str, Any], profile: str) -> str:
    fn = EXPLAIN.get(name)
    if fn is None:
        return _excerpt(profile) if profile else "No analysis for this figure."
    try:
        return fn(res, profile)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return f"(analysis unavailable: {e})\n\n{_excerpt(profile)}"
