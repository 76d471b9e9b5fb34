"""The summary: a Markdown table (figure, modelfn, baseline, ratio, target, met?), PNG charts (matplotlib, Agg),
and the README's quoted block between `<!-- bench:start -->` and `<!-- bench:end -->` when the README has them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import describe_machine

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _num(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _met(v: bool | None) -> str:
    return {True: "✅ met", False: "❌ missed", None: "—"}[v]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| figure | metric | modelfn | baseline | ratio | target | met? |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        unit = r.get("unit", "")
        ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.2f}×"
        if r.get("ratio_label", "").startswith("speed-up") and r.get("ratio") is not None:
            ratio += " faster"
        lines.append(
            f"| {r['figure']} | {r['metric']} | {_num(r.get('modelfn'))} {unit} | "
            f"{_num(r.get('baseline'))} {unit} ({r.get('baseline_name', '')}) | {ratio} | {r.get('target', '')} | "
            f"{_met(r.get('met'))} |"
        )
    return "\n".join(lines)


def header(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    v = m["versions"]
    mode = "quick (smoke test: figures are indicative only)" if meta["quick"] else "full"
    return (
        f"Run {m['date']} on {describe_machine(m)} ({m['os']}); onnxruntime {v.get('onnxruntime')}, numpy "
        f"{v.get('numpy')}, fastapi {v.get('fastapi')}, mangum {v.get('mangum')}, uvicorn {v.get('uvicorn')}, "
        f"pandas {v.get('pandas')}, torch {v.get('torch')}; load generator {m.get('wrk') or 'python-asyncio'}. "
        f"Mode: {mode}; `make bench` took {meta['seconds']:.0f} s; load average at start "
        f"{m['load_average']}, at end {meta.get('load_average_end')}."
    )


def markdown(meta: dict[str, Any], results: dict[str, dict[str, Any]], notes: dict[str, str]) -> str:
    rows = [r for res in results.values() for r in res.get("summary", [])]
    parts = [
        "# modelfn benchmarks",
        "",
        header(meta),
        "",
        "Every figure runs side by side with its baseline in the same run. Ratios are the headline; absolute times "
        "depend on the machine (and on what else runs on it). Targets are the issue's; a missed target is shown "
        "as missed, with where the time goes below.",
        "",
        table(rows),
        "",
    ]
    failed = {k: v for k, v in results.items() if "error" in v}
    if failed:
        parts += ["## Figures that failed to run", ""]
        parts += [f"- **{k}**: `{v['error'].strip().splitlines()[-1]}`" for k, v in failed.items()]
        parts.append("")
    parts += ["## Figures", ""]
    for name, res in results.items():
        if "error" in res:
            continue
        parts += [f"### {res.get('title', name)}", ""]
        parts += [f"- {k}: {v}" for k, v in (res.get("config") or {}).items()]
        for key in ("answers_agree", "outputs_agree"):
            if key in res:
                parts.append(f"- {key.replace('_', ' ')}: {res[key]}")
        parts += [f"- took {res.get('seconds', 0):.0f} s; raw figures in `bench/results/{name}.json`", ""]
    if notes:
        parts += ["## Where the time goes", ""]
        for name, text in notes.items():
            parts += [f"### {results.get(name, {}).get('title', name)}", "", text.strip(), ""]
    return "\n".join(parts)


def update_readme(readme: Path, meta: dict[str, Any], rows: list[dict[str, Any]], extra: Sequence[str] = ()) -> bool:
    """Replace the block between the markers (if the README has them) with the date, the machine, the table and
    any extra sections (the batching on/off table)."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = "\n".join(
        [
            START,
            "",
            header(meta),
            "",
            table(rows),
            "",
            *[part for section in extra for part in (section, "")],
            "Full notes, profiles and charts: `bench/results/` (`make bench` rewrites them).",
            "",
            END,
        ]
    )
    readme.write_text(head + block + tail)
    return True


# ---- charts ---------------------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {"modelfn": "#2a7ab9", "baseline": "#b0b0b0", "other": "#e0a030", "floor": "#555555"}


def _bars(ax: Any, labels: list[str], values: list[float], title: str, unit: str, log: bool = False) -> None:
    colors = [COLORS["modelfn"] if lbl.startswith("modelfn") else COLORS["baseline"] for lbl in labels]
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, rotation=15, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    if log:
        ax.set_yscale("log")
    for b, v in zip(bars, values, strict=True):
        ax.annotate(_num(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)


def chart_warm_invoke(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    r = res["results_us"]
    names = list(r)
    _bars(axes[0], names, [r[n]["p50"] for n in names], "p50 (µs)", "µs")
    _bars(axes[1], names, [r[n]["p99"] for n in names], "p99 (µs)", "µs", log=True)


def chart_cold_start(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    med = res["medians_ms"]
    names = list(med)
    phases = ["interpreter", "imports", "fetch", "session", "warmup", "first_request"]
    bottom = [0.0] * len(names)
    cmap = _plt().get_cmap("tab10")
    for i, ph in enumerate(phases):
        vals = [med[n].get(ph, 0.0) for n in names]
        label = {"fetch": "fetch + init", "first_request": "first request"}.get(ph, ph)
        axes[0].bar(range(len(names)), vals, bottom=bottom, label=label, color=cmap(i))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[0].set_xticks(range(len(names)), names, rotation=10, fontsize=8)
    axes[0].set_ylabel("ms (medians per phase)")
    axes[0].set_title("Cold start by phase", fontsize=10)
    axes[0].legend(fontsize=7)
    _bars(axes[1], names, [med[n]["wall"] for n in names], "Fresh process → first response (median)", "ms")


def chart_large_request(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    r = res["results_ms"]
    _bars(
        axes[0],
        ["modelfn binary", "JSON tensors"],
        [r["binary"]["p50"], r["json"]["p50"]],
        "p50 end to end",
        "ms",
        True,
    )
    axes[0].axhline(res["model_run_ms_p50"], color="k", ls="--", lw=1)
    axes[0].annotate("model's own run", (0.5, res["model_run_ms_p50"]), fontsize=7)
    cfg = res["config"]
    _bars(
        axes[1],
        ["modelfn binary", "JSON tensors"],
        [cfg["binary_request_bytes"] / 2**20, cfg["json_request_bytes"] / 2**20],
        "Request body",
        "MiB",
    )


def chart_s3_batch(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    r = res["results"]
    names = ["modelfn", "pandas", "floor"]
    labels = ["modelfn S3 handler", "pandas batch", "floor (parse + run)"]
    _bars(axes[0], labels, [r[n]["rows_per_second"] for n in names], f"{res['config']['rows']:,} rows", "rows/s")
    _bars(axes[1], labels, [r[n]["peak_rss_mb"] for n in names], "Peak RSS", "MiB")


def chart_server_throughput(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    for name, points in res["results"].items():
        cs = sorted(int(c) for c in points)
        style = "-o" if name.startswith("modelfn") else "--s"
        axes[0].plot(cs, [points[str(c)]["requests_per_second"] for c in cs], style, label=name)
        axes[1].plot(cs, [points[str(c)]["latency_ms"]["p99"] for c in cs], style, label=name)
    for ax, title, unit in ((axes[0], "Throughput", "req/s"), (axes[1], "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 8, 32], ["1", "8", "32"])
        ax.set_xlabel("connections")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")


def chart_quantization(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    s = res["size_bytes"]
    lat = res["latency_ms"]
    tp = res["throughput_sentences_per_second"]
    variants = list(s)
    _bars(axes[0], [f"modelfn {v}" for v in variants], [s[v] / 2**20 for v in variants], "Model size", "MiB")
    _bars(axes[1], [f"modelfn {v}" for v in variants], [tp[v] for v in variants], "Batches of 32", "sentences/s")
    axes[1].text(
        0.02,
        0.95,
        "p50 one sentence: " + ", ".join(f"{v} {lat[v]['p50']:.1f} ms" for v in variants),
        transform=axes[1].transAxes,
        fontsize=7,
        va="top",
    )


def chart_generic(res: dict[str, Any], ax_fig: Any) -> None:
    _fig, axes = ax_fig
    rows = [r for r in res.get("summary", []) if r.get("ratio") is not None]
    _bars(axes[0], [r["metric"][:30] for r in rows], [r["ratio"] for r in rows], "modelfn / baseline", "×")
    axes[1].axis("off")


CHARTS: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "warm_invoke": chart_warm_invoke,
    "cold_start": chart_cold_start,
    "large_request": chart_large_request,
    "s3_batch": chart_s3_batch,
    "server_throughput": chart_server_throughput,
    "quantization": chart_quantization,
}


def chart(name: str, res: dict[str, Any], path: Path) -> Path | None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        CHARTS.get(name, chart_generic)(res, (fig, axes))
        fig.suptitle(res.get("title", name), fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    finally:
        plt.close(fig)
    return path


def summary_chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Every targeted ratio against its target: the headline picture."""
    targeted = [r for r in rows if r.get("met") is not None]
    if not targeted:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(targeted) + 1.2))
    labels, ratios, colors, goals = [], [], [], []
    for r in targeted:
        labels.append(f"{r['figure']}: {r['metric']}"[:70])
        ratios.append(r["ratio"])
        colors.append("#3a9a4a" if r["met"] else "#c8453a")
        goal = None
        with contextlib.suppress(ValueError, IndexError):
            goal = float(r["target"].split("≤")[-1].split("≥")[-1].split("×")[0].strip())
        goals.append(goal)
    y = range(len(targeted))
    ax.barh(list(y), ratios, color=colors)
    for i, g in enumerate(goals):
        if g is not None:
            ax.plot([g, g], [i - 0.4, i + 0.4], color="k", lw=2)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio (black tick: target; green met, red missed)")
    ax.set_title("modelfn against its baselines", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
