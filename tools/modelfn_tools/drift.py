"""`modelfn drift --store URI --name NAME [--version V] --capture URI [--since T] [--until T | --hours N]
[--threshold PSI] [--html REPORT.html] [--json]`: the captured requests of one model version in a time window
against the baseline published with it, per feature (`modelfn.monitoring.drift`). A table on stdout (JSON with
--json), the HTML report with --html. Exit status, so a pipeline can gate on it:

- 0: no feature's PSI passes the threshold;
- 3 (DRIFTED): at least one does (they are named on stderr);
- 2 (the CLI's status for any refused command): no baseline, no captured requests in the window, a bad store,
  capture URI or option: stderr says which.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from modelfn.monitoring.captured import Window
from modelfn.monitoring.check import DriftRun, check
from modelfn.monitoring.report import render

DRIFTED = 3


def _num(x: float | None, width: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.3f}"


def table(run: DriftRun) -> str:
    r = run.report
    name_w = max([7, *(len(f.name) for f in r.features)])
    lines = [
        f"{r.model} v{r.version}: {r.records:,} requests ({run.captured.rows:,} rows), threshold PSI {r.threshold:g}",
        f"{'feature':<{name_w}}  {'kind':<8}  {'values':>9}  {'nulls':>7}  {'PSI':>7}  {'KS D':>6}  {'KS p':>9}",
    ]
    for f in r.features:
        p = f"{'-':>9}" if f.ks_pvalue is None else f"{f.ks_pvalue:>9.3g}"
        lines.append(
            f"{f.name:<{name_w}}  {f.kind:<8}  {f.count:>9,}  {f.nulls:>7,}  {_num(f.psi, 7)}  "
            f"{_num(f.ks_statistic, 6)}  {p}  {'DRIFT' if f.drifted else 'ok'}"
        )
    return "\n".join(lines)


def write_html(run: DriftRun, path: Path) -> None:
    path.write_text(render(run.report, run.capture), encoding="utf-8")


def exit_status(run: DriftRun) -> int:
    """0 when no feature drifted; else DRIFTED, naming them on stderr."""
    drifted = run.report.drifted
    if not drifted:
        return 0
    print(
        f"modelfn drift: {len(drifted)} feature(s) past PSI {run.report.threshold:g}: {', '.join(drifted)}",
        file=sys.stderr,
    )
    return DRIFTED


def main(
    store: str,
    name: str,
    version: str | None,
    capture: str,
    window: Window,
    threshold: float,
    html: str | None,
    as_json: bool,
) -> int:
    result = check(store, name, version, capture, window, threshold)
    if html:
        write_html(result, Path(html))
    print(json.dumps(result.summary(), indent=2) if as_json else table(result))
    return exit_status(result)
