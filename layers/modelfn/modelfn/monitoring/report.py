"""The drift report as one self-contained HTML page: a summary table and, per feature, its histogram in the
baseline's bins against the captured window's, drawn as inline SVG (no script, stylesheet, font or image is
fetched: it opens offline, from an email attachment or an S3 console download alike)."""

from __future__ import annotations

import math
from html import escape

from modelfn.monitoring.baseline import short
from modelfn.monitoring.drift import DriftReport, FeatureDrift

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 74
BASE_COLOR, CURRENT_COLOR, DRIFT_COLOR = "#9aa5b1", "#2b6cb0", "#c53030"
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 24px;
  color: #1a202c; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 0 0 6px; }
.meta { color: #4a5568; margin: 0 0 16px; }
table { border-collapse: collapse; margin-bottom: 20px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e2e8f0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.drifted td { color: #c53030; font-weight: 600; }
section { display: inline-block; vertical-align: top; margin: 0 16px 20px 0; padding: 12px; border: 1px solid #e2e8f0;
  border-radius: 6px; }
section.drifted { border-color: #c53030; }
.verdict { font-size: 13px; color: #4a5568; margin: 0 0 6px; }
svg text { font-size: 10px; fill: #2d3748; }
"""


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mean(x: float | None) -> str:
    return "–" if x is None else short(x)


def _pvalue(p: float | None) -> str:
    return "–" if p is None else (f"{p:.3g}" if p >= 1e-4 else "< 0.0001")


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def histogram_svg(f: FeatureDrift) -> str:
    """Baseline and window shares per bin, side by side, on one scale."""
    base, cur = _shares(f.baseline), _shares(f.current)
    highest = max([*base, *cur, 0.01])
    step = 0.05 if highest <= 0.3 else 0.1  # ticks at round shares, the axis ending on one
    ticks = math.ceil(highest / step - 1e-9)
    top = ticks * step
    n = len(f.bins)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / n
    bar = group * 0.38
    color = DRIFT_COLOR if f.drifted else CURRENT_COLOR
    parts = [
        f'<svg class="histogram" data-feature="{escape(f.name)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="histogram of {escape(f.name)}: baseline against captured">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#718096"/>',
    ]
    for k in range(ticks + 1):
        share = step * k
        y = TOP + plot_h - plot_h * share / top
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#edf2f7"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{share:.0%}</text>')
    for i, label in enumerate(f.bins):
        x0 = LEFT + i * group + group * 0.12
        for j, (share, fill) in enumerate(((base[i], BASE_COLOR), (cur[i], color))):
            h = plot_h * share / top
            parts.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{fill}"><title>{escape(label)}: {share:.1%}</title></rect>'
            )
        cx, cy = LEFT + (i + 0.5) * group, TOP + plot_h + 10
        shown = label if len(label) <= 18 else label[:17] + "…"
        parts.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" transform="rotate(-35 {cx:.1f} {cy:.1f})">'
            f"{escape(shown)}</text>"
        )
    x, y = WIDTH - RIGHT - 150, 12  # the legend, above the plot's top right corner
    parts += [
        f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{BASE_COLOR}"/>',
        f'<text x="{x + 14}" y="{y}">baseline</text>',
        f'<rect x="{x + 76}" y="{y - 9}" width="10" height="10" fill="{color}"/>',
        f'<text x="{x + 90}" y="{y}">captured</text>',
        "</svg>",
    ]
    return "".join(parts)


def _row(f: FeatureDrift) -> str:
    cells = [
        escape(f.name),
        f.kind,
        f"{f.count:,}",
        f"{f.nulls:,}",
        _fmt(f.psi),
        _fmt(f.ks_statistic),
        _pvalue(f.ks_pvalue),
        "DRIFT" if f.drifted else "ok",
    ]
    return f'<tr class="{"drifted" if f.drifted else "ok"}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _section(f: FeatureDrift) -> str:
    ks = "" if f.ks_statistic is None else f", KS D {_fmt(f.ks_statistic)} (p {_pvalue(f.ks_pvalue)})"
    means = "" if f.mean is None else f", mean {_mean(f.baseline_mean)} → {_mean(f.mean)}"
    return (
        f'<section class="{"drifted" if f.drifted else "ok"}" id="feature-{escape(f.name)}">'
        f"<h2>{escape(f.name)}</h2>"
        f'<p class="verdict">PSI {_fmt(f.psi)}{ks}{means}</p>{histogram_svg(f)}</section>'
    )


def render(report: DriftReport, capture: str = "") -> str:
    """The whole page for `report` (`capture`: where the window was read, shown in the header)."""
    window = f"{report.since or 'the beginning'} to {report.until or 'now'}"
    verdict = (
        f"{len(report.drifted)} feature(s) past PSI {report.threshold:g}: {', '.join(report.drifted)}"
        if report.drifted
        else f"no feature past PSI {report.threshold:g}"
    )
    head = "".join(f"<th>{h}</th>" for h in ("feature", "kind", "values", "nulls", "PSI", "KS D", "KS p", ""))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Drift: {escape(report.model)} v{report.version}</title><style>{STYLE}</style></head><body>"
        f"<h1>Drift of {escape(report.model)} version {report.version}</h1>"
        f'<p class="meta">{report.records:,} captured requests from {escape(window)}'
        f"{' in ' + escape(capture) if capture else ''}. {escape(verdict)}.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(_row(f) for f in report.features)}</tbody></table>"
        f"{''.join(_section(f) for f in report.features)}</body></html>"
    )
