"""Reading profiles: py-spy's collapsed stacks into the tables the summary quotes."""

from __future__ import annotations

from typing import Any

IDLE = ("Condition.wait", "Queue.get", "select (selectors", "_worker (concurrent", "Event.wait", "sleep")


def collapse_report(path: Any, top: int = 25) -> str:
    """Turn py-spy's collapsed stacks into self-time and inclusive-time tables (the top frames)."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as fh:
        lines_in = fh.read().splitlines()
    for line in lines_in:
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(idle in leaf for idle in IDLE):  # threads parked waiting for work are not where time goes
            continue
        total += c
        self_t[leaf] = self_t.get(leaf, 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    if not total:
        return "no samples"
    lines = [f"{total} samples of busy threads (idle waits left out)", "", "self %   function (file:line)"]
    lines += [f"{100 * c / total:6.1f}   {f}" for f, c in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]]
    lines += ["", "inclusive %   function (file:line)"]
    lines += [f"{100 * c / total:6.1f}   {f}" for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)
