"""Whether joining pays for a model version, measured once when its runner starts.

A joined run of n rows saves `n x t(1) - t(n)` of model time (t(n): one session.run of n rows), and costs the
batcher's own work: a round trip to the worker thread and a future resolved across it. Measured on one core, that
round trip is paid per request, not per batch: while a batch runs in the worker thread, the requests joined to it
wait and the event loop has less to do, and the thread and the loop hand the GIL and the core back and forth (always
joining, at 32 connections: the int8 MLP 256-1024x3-10, whose single-row run is ~60-100 µs, 0.74-0.86x batching
off; an fp32 256-256-256-10, ~10 µs, 0.6-0.8x; the fp32 1024-4096-4096-1024, tens of ms, several times faster). So
the batcher times both sides at start, on this machine, and joins only where the saving at a batch of `rows` rows
is at least `MARGIN` times `rows` such round trips; otherwise each request runs on the event loop as with batching
off (`Batcher.predict`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import example_inputs

MARGIN = 1.5
"""How much the saving must exceed the measured cost, for what the start-up measurement cannot see (the worker and
the loop contending under load). Fitted on one core (bench/batching.py, the cross-over table): the int8 MLP (saving
~0.5-1 ms at 16 rows against ~1 ms of round trips) lost when always joined, an fp32 256-1024-1024-10 (0.9 ms
against 0.6 ms) won 1.3x."""
BUDGET_S = 0.5
"""Time spent timing a model's runs (five of each at least): short next to a model's load."""
SAMPLE_ROWS = 16
"""The batch size judged: what 32 connections on one core gave the int8 MLP; capped by max_batch_size."""


@dataclass
class Costs:
    """Microseconds: one row alone, `rows` rows joined, a round trip to the worker thread (`batch_us`) and a future
    resolved for a waiting task (`request_us`)."""

    rows: int
    single_us: float
    joined_us: float
    batch_us: float = 0.0
    request_us: float = 0.0

    @property
    def saving_us(self) -> float:
        return self.rows * self.single_us - self.joined_us

    @property
    def overhead_us(self) -> float:
        """What joining `rows` requests costs: each pays a round trip to the worker thread and its future."""
        return self.rows * (self.batch_us + self.request_us)

    def pays(self) -> bool:
        return self.saving_us >= MARGIN * self.overhead_us

    def describe(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "single_run_us": round(self.single_us, 1),
            "joined_run_us": round(self.joined_us, 1),
            "saving_us": round(self.saving_us, 1),
            "overhead_us": round(self.overhead_us, 1),
            "joined": self.pays(),
        }


def _fastest_us(a: Callable[[], object], b: Callable[[], object], budget_s: float) -> tuple[float, float]:
    """The fastest call of `a` and of `b` in microseconds, called in turn (so a busy spell of the machine hits both
    alike) for about `budget_s`, at least 5 times each: a run's fastest time is its own cost, without the waits of
    other processes that a shared machine adds to some calls."""
    a(), b()  # warm: the first run of a shape allocates
    times: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + budget_s
    while len(times[0]) < 5 or (time.perf_counter() < deadline and len(times[0]) < 200):
        for fn, out in ((a, times[0]), (b, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return min(times[0]) * 1e6, min(times[1]) * 1e6


def sample_inputs(model: LoadedModel, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random normal floats (zeros elsewhere) shaped like `rows` rows of the model's inputs."""
    rng = np.random.default_rng(seed)
    feed = example_inputs(model.inputs, batch=rows)
    for name, arr in feed.items():
        if arr.dtype.kind == "f":
            feed[name] = rng.standard_normal(arr.shape).astype(arr.dtype)
    return feed


def run_costs(
    model: LoadedModel, rows: int, joined_run: Callable[[Mapping[str, np.ndarray], int], object], budget_s: float
) -> Costs:
    """t(1) through the model's own session (what a request alone runs) and t(rows) through `joined_run(feed,
    rows)` (the batch's session, which may be a rewritten graph); in the worker thread that runs the batches."""
    one = sample_inputs(model, 1)
    many = sample_inputs(model, rows)
    names = model.output_names
    single, joined = _fastest_us(lambda: model.session.run(names, one), lambda: joined_run(many, rows), budget_s)
    return Costs(rows, single, joined)


async def _wait(future: asyncio.Future[int]) -> int:
    return await future


async def loop_costs(executor: Executor, requests: int, rounds: int = 15) -> tuple[float, float]:
    """(per batch, per request) microseconds on the running loop: a round trip to the worker thread, and a future
    resolved for a parked task that then runs again, which is what a joined request adds to one run inline."""
    loop = asyncio.get_running_loop()
    hops = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await loop.run_in_executor(executor, int)
        hops.append(time.perf_counter() - t0)
    per_request = []
    for _ in range(rounds):
        futures: list[asyncio.Future[int]] = [loop.create_future() for _ in range(requests)]
        tasks = [loop.create_task(_wait(f)) for f in futures]
        await asyncio.sleep(0)  # every task parked on its future
        t0 = time.perf_counter()
        for f in futures:
            f.set_result(0)
        await asyncio.gather(*tasks)
        per_request.append((time.perf_counter() - t0) / requests)
    return statistics.median(hops) * 1e6, statistics.median(per_request) * 1e6
