"""Dynamic batching for long-running servers: concurrent requests for the same model version become one
`session.run`.

How a request goes through it (`Batcher.predict`):

1. It is validated on its own first (requested outputs, `signature.validate_inputs`), so a bad request fails alone
   with its own 400 and never reaches a batch.
2. It gets a join key: the dtypes and non-batch dims of its inputs and the outputs it asks for. Only requests with
   equal keys are joined, and only when every input and requested output has a variable leading (batch)
   dimension. A request that cannot be joined, or has more rows than `max_batch_size`, runs alone.
3. Each model version has one runner: a queue drained by one asyncio task into one worker thread (onnxruntime
   releases the GIL, so the event loop keeps serving while a batch runs). While the worker is busy the queue
   keeps filling. When it is free, the group whose oldest request has waited longest runs as soon as it holds
   `max_batch_size` rows, or `max_batch_wait_ms` after that oldest request arrived, or at once when no other
   request is on its way (the app counts requests between their arrival and `predict` with `arriving()`), so a
   lone client never waits for company. (Sending a request that finds the runner idle straight to the worker,
   skipping the queue, saves ~20 us at one connection but measured ~35% fewer requests/s at 32: it splits the
   requests arriving together into a run of one and a run of the rest.)
4. Joined inputs are concatenated along the batch axis, run once, and the outputs are split back by each
   request's row count; every future gets the rows of its own request. If the joined run raises (or an output
   cannot be split), every member runs again alone, so only the culprit fails.

Whether a version's requests are joined as they are, through the per-request quantization rewrite of a dynamically
quantized graph, or never, is its `Plan` (`plan.py`; the rewrite and its trade-off in `rewrite.py`). What the
batcher did is recorded in `stats.py`.

Per-model settings come from `settings.for_model(name)` (`batching`, `max_batch_size`, `max_batch_wait_ms` in
MODELFN_MODELS_CONFIG). The Lambda path never creates a batcher: one environment serves one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfn.batching.costs import BUDGET_S, SAMPLE_ROWS, Costs, loop_costs, run_costs
from modelfn.batching.plan import Plan, cached_artifact, make_plan
from modelfn.batching.rewrite import SEGMENTS
from modelfn.batching.stats import BatchStats, batch_stats, prometheus_metrics
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import validate_inputs
from modelfn.settings import Settings

log = logging.getLogger("modelfn")

_ALONE = object()
"""Marker in a join key: the request never joins another."""


@dataclass(eq=False)
class _Item:
    model: LoadedModel
    feed: dict[str, np.ndarray]
    names: list[str]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    arrived: float


@dataclass(eq=False)
class _Runner:
    """One model version: its queue, the task draining it, and the single worker thread that runs its batches."""

    name: str
    version: int
    max_rows: int
    wait_s: float
    executor: ThreadPoolExecutor
    plan: Plan | None = None
    loop: asyncio.AbstractEventLoop | None = None
    pending: dict[Any, deque[_Item]] = field(default_factory=dict)
    rows: dict[Any, int] = field(default_factory=dict)
    wake: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None
    state: str = "idle"  # the drain task: idle (nothing queued), waiting (filling `filling`), busy
    filling: Any = None
    inline: bool = False  # joining does not pay (costs.py): requests run on the event loop, as with batching off
    costs: Costs | None = None


class Batcher:
    """Joins concurrent requests for the same model version into one session.run (see the module docstring).

    `default` is whether models without a `batching` entry in MODELFN_MODELS_CONFIG are batched (default:
    settings.batching); `artifact` finds a loaded model's verified .onnx file (default: the model cache's);
    `adaptive` joins only the versions for which joining measured worth it at start (`costs.py`), the others run
    each request on the event loop; without it every joinable version is joined."""

    def __init__(
        self,
        settings: Settings,
        default: bool | None = None,
        artifact: Callable[[LoadedModel], Path | None] | None = None,
        stats: BatchStats | None = None,
        adaptive: bool = True,
    ) -> None:
        self.settings = settings
        self.adaptive = adaptive
        self.default = settings.batching if default is None else default
        self.artifact = artifact or cached_artifact(settings)
        self.stats = stats or batch_stats
        self.metrics = prometheus_metrics()
        self.incoming = 0
        self._runners: dict[tuple[str, int, str], _Runner] = {}
        self._enabled: dict[str, bool] = {}
        self._inline: set[str] = set()  # names whose every known version runs on the loop: served as batching off

    # -- configuration
    def enabled(self, name: str) -> bool:
        """Whether requests for model `name` go through the batcher: configured so, and not every version of it
        found not worth joining (those take the server's batching-off path, at its cost exactly)."""
        if name in self._inline:
            return False
        known = self._enabled.get(name)
        if known is None:
            override = self.settings.models_config.get(name) or {}
            known = bool(self.settings.for_model(name).batching) if "batching" in override else self.default
            self._enabled[name] = known
        return known

    @staticmethod
    def wanted(settings: Settings, batching: bool | None) -> bool:
        """Whether an app should have a batcher: the explicit choice, else settings.batching or any model's."""
        if batching is not None:
            return batching
        return settings.batching or any(bool(cfg.get("batching")) for cfg in settings.models_config.values())

    # -- request side
    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Count a request from its arrival until it calls `predict`, so waiting batches know company is coming."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1
            if self.incoming == 0:
                loop = asyncio.get_running_loop()
                for runner in self._runners.values():
                    if runner.state == "waiting" and runner.wake is not None and runner.loop is loop:
                        runner.wake.set()

    async def predict(
        self, model: LoadedModel, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """What `model.predict(inputs, outputs)` returns, computed in the model's worker thread, possibly joined
        with other requests. Raises this request's own InvalidInput before anything is queued. Where joining
        does not pay (`_Runner.inline`), a request of up to max_batch_size rows runs here, on the event loop."""
        runner = self._runner(model)
        if runner.inline and (rows := _rows(inputs)) <= runner.max_rows:
            result = model.predict(inputs, outputs)
            self._record(runner, rows, 1)
            return result
        names = list(outputs) if outputs else model.output_names
        unknown = [n for n in names if n not in model.output_names]
        if unknown:
            raise InvalidInput(f"unknown output(s) {unknown}; the model has {model.output_names}")
        feed = validate_inputs(model.inputs, inputs)
        loop = asyncio.get_running_loop()
        if runner.loop is not loop:
            self._start(runner, loop)
        rows, key = self._key(model, feed, names, runner)
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        item = _Item(model, feed, names, rows, future, loop.time())
        if key is _ALONE:
            key = (_ALONE, id(item))
        group = runner.pending.get(key)
        if group is None:
            runner.pending[key] = deque([item])
            runner.rows[key] = rows
        else:
            group.append(item)
            runner.rows[key] += rows
        if runner.state == "idle" or (
            runner.state == "waiting" and (self.incoming == 0 or runner.rows.get(runner.filling, 0) >= runner.max_rows)
        ):
            assert runner.wake is not None
            runner.wake.set()
        return await future

    def _key(self, model: LoadedModel, feed: dict[str, np.ndarray], names: list[str], runner: _Runner) -> Any:
        """(rows, join key); the key is _ALONE when the request must not be joined."""
        rows = -1
        parts = []
        for spec in model.inputs:
            arr = feed[spec.name]
            if not spec.shape or spec.shape[0] != -1 or arr.ndim == 0:
                return 0, _ALONE
            if rows not in (-1, arr.shape[0]):
                return 0, _ALONE
            rows = arr.shape[0]
            parts.append((spec.name, arr.dtype.str, arr.shape[1:]))
        specs = {o.name: o for o in model.outputs}
        if any(not specs[n].shape or specs[n].shape[0] != -1 for n in names):
            return max(rows, 0), _ALONE
        if rows <= 0 or rows > runner.max_rows or not self.enabled(model.name):
            return max(rows, 0), _ALONE
        plan = runner.plan
        if plan is not None and plan.mode == "alone":
            return rows, _ALONE
        return rows, (tuple(parts), tuple(names))

    # -- runner side
    def _runner(self, model: LoadedModel) -> _Runner:
        key = (model.name, model.version, model.sha256)
        runner = self._runners.get(key)
        if runner is None:
            cfg = self.settings.for_model(model.name)
            runner = _Runner(
                name=model.name,
                version=model.version,
                max_rows=cfg.max_batch_size,
                wait_s=cfg.max_batch_wait_ms / 1000.0,
                executor=ThreadPoolExecutor(1, thread_name_prefix=f"modelfn-batch-{model.name}-v{model.version}"),
            )
            self._runners[key] = runner
            self._inline.discard(model.name)  # a version not yet measured goes through the batcher first
        return runner

    def _start(self, runner: _Runner, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)bind a runner to the running loop: its queue and task live there."""
        runner.loop = loop
        runner.pending = {}
        runner.rows = {}
        runner.wake = asyncio.Event()
        runner.state, runner.filling = "idle", None
        runner.task = loop.create_task(self._drain(runner), name=f"modelfn-batcher-{runner.name}-v{runner.version}")

    async def _drain(self, runner: _Runner) -> None:
        loop = asyncio.get_running_loop()
        wake = runner.wake
        assert wake is not None
        while True:
            if not runner.pending:
                runner.state = "idle"
                wake.clear()
                await wake.wait()
                continue
            runner.state = "busy"
            batch: list[_Item] = []
            try:
                if runner.plan is None:
                    model = next(iter(runner.pending.values()))[0].model
                    runner.plan, runner.costs = await loop.run_in_executor(runner.executor, self._prepare, model)
                    self._requeue_alone(runner)
                    await self._decide(runner)
                # the group whose oldest request has waited longest goes next (no group starves another)
                key = min(runner.pending, key=lambda k: runner.pending[k][0].arrived)
                group = runner.pending[key]
                if key[0] is not _ALONE:
                    await self._fill(runner, key, group[0].arrived + runner.wait_s)
                self._take(runner, key, batch)
                if not batch:
                    continue
                results = await loop.run_in_executor(runner.executor, self._run, runner, batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never leave a request hanging: fail this batch, keep draining
                log.exception("batcher for model %r version %d failed", runner.name, runner.version)
                results = [e] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    @staticmethod
    def _take(runner: _Runner, key: Any, batch: list[_Item]) -> None:
        """Move the group's oldest requests into `batch`, up to max_batch_size rows (at least one request), skipping
        those whose client went away; a group left empty is dropped."""
        group = runner.pending[key]
        rows = taken = 0
        while group and (not batch or rows + group[0].rows <= runner.max_rows):
            item = group.popleft()
            taken += item.rows
            if item.future.done():  # the client went away
                continue
            batch.append(item)
            rows += item.rows
        runner.rows[key] -= taken
        if not group:
            del runner.pending[key]
            del runner.rows[key]

    async def _fill(self, runner: _Runner, key: Any, deadline: float) -> None:
        """Wait until the group is full, nobody else is on the way, or the deadline. Woken only by what can end
        the wait (predict, arriving() and one timer), so a waiting batch costs no work per arriving request."""
        loop = asyncio.get_running_loop()
        wake = runner.wake
        assert wake is not None
        if runner.rows[key] >= runner.max_rows or self.incoming == 0 or loop.time() >= deadline:
            return
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            wake.set()

        timer = loop.call_at(deadline, expire)
        runner.state, runner.filling = "waiting", key
        try:
            while not expired and runner.rows[key] < runner.max_rows and self.incoming > 0:
                wake.clear()
                await wake.wait()
        finally:
            timer.cancel()
            runner.state, runner.filling = "busy", None

    def _requeue_alone(self, runner: _Runner) -> None:
        """Once a plan says `alone`, split the groups queued before it was known."""
        if runner.plan is None or runner.plan.mode != "alone":
            return
        pending: dict[Any, deque[_Item]] = {}
        rows: dict[Any, int] = {}
        for group in runner.pending.values():
            for item in group:
                key = (_ALONE, id(item))
                pending[key] = deque([item])
                rows[key] = item.rows
        runner.pending, runner.rows = pending, rows

    def _prepare(self, model: LoadedModel) -> tuple[Plan, Costs | None]:
        """The version's plan and, when adaptive and it may join, the model-time side of its costs."""
        try:
            plan = make_plan(model, self.artifact(model), self.settings)
        except Exception as e:
            plan = Plan("alone", f"could not prepare batching: {type(e).__name__}: {e}")
        log.info("batching model %r version %d: %s %s", model.name, model.version, plan.mode, plan.reason)
        if not self.adaptive or plan.mode == "alone":
            return plan, None
        rows = max(2, min(SAMPLE_ROWS, self.settings.for_model(model.name).max_batch_size))
        names = model.output_names

        def joined_run(feed: Mapping[str, np.ndarray], n: int) -> object:
            session, full = _session_feed(plan, model, dict(feed), [1] * n)
            return session.run(names, full)

        try:
            costs = run_costs(model, rows, joined_run, BUDGET_S)
        except Exception as e:  # a model zeros or noise cannot run: keep joining as configured
            log.info("model %r version %d: batching costs not measured (%s)", model.name, model.version, e)
            return plan, None
        return plan, costs

    async def _decide(self, runner: _Runner) -> None:
        """Adaptive: run on the event loop where nothing is joined (plan `alone`) or joining costs more than it
        saves (the loop side of the costs measured here, on the loop the requests run on)."""
        if not self.adaptive:
            return
        costs = runner.costs
        if costs is not None:
            costs.batch_us, costs.request_us = await loop_costs(runner.executor, costs.rows)
        runner.inline = (runner.plan is not None and runner.plan.mode == "alone") or (
            costs is not None and not costs.pays()
        )
        if all(r.inline for r in self._runners.values() if r.name == runner.name):
            self._inline.add(runner.name)
        log.info(
            "batching model %r version %d: %s %s",
            runner.name,
            runner.version,
            "each request on the event loop" if runner.inline else "joined",
            costs.describe() if costs else "",
        )

    # -- worker thread
    def _run(self, runner: _Runner, batch: list[_Item]) -> list[dict[str, np.ndarray] | BaseException]:
        if len(batch) == 1:
            return [self._alone(runner, batch[0])]
        plan = runner.plan
        model = batch[0].model
        names = batch[0].names
        total = sum(item.rows for item in batch)
        joined = {name: np.concatenate([item.feed[name] for item in batch]) for name in batch[0].feed}
        session, feed = _session_feed(plan, model, joined, [item.rows for item in batch])
        try:
            outputs = [np.asarray(r) for r in session.run(names, feed)]
            if any(o.ndim == 0 or o.shape[0] != total for o in outputs):
                raise ValueError("an output does not keep the batch dimension")
        except Exception as e:
            log.info("model %r version %d: joined run of %d requests failed (%s); running them one by one",
                     model.name, model.version, len(batch), e)  # fmt: skip
            self.stats.fallback()
            return [self._alone(runner, item) for item in batch]
        self._record(runner, total, len(batch))
        results: list[dict[str, np.ndarray] | BaseException] = []
        start = 0
        for item in batch:
            end = start + item.rows
            results.append({name: out[start:end] for name, out in zip(names, outputs, strict=True)})
            start = end
        return results

    def _alone(self, runner: _Runner, item: _Item) -> dict[str, np.ndarray] | BaseException:
        try:
            result = item.model.predict(item.feed, item.names)
        except Exception as e:
            return e
        self._record(runner, item.rows, 1)
        return result

    def _record(self, runner: _Runner, rows: int, requests: int) -> None:
        self.stats.record(rows, requests)
        if self.metrics is not None:
            labels = (runner.name, str(runner.version))
            self.metrics[0].labels(*labels).observe(rows)
            self.metrics[1].labels(*labels).inc()

    # -- introspection and shutdown
    def snapshot(self) -> dict[str, Any]:
        models = {
            f"{name}/{version}": {
                **(runner.plan.describe() if runner.plan else {"mode": "pending"}),
                "inline": runner.inline,
                **({"costs": runner.costs.describe()} if runner.costs else {}),
                "enabled": self.enabled(name),
                "max_batch_size": runner.max_rows,
                "max_batch_wait_ms": runner.wait_s * 1000.0,
                "queued": sum(len(g) for g in runner.pending.values()),
            }
            for (name, version, _), runner in self._runners.items()
        }
        return {
            "default": self.default,
            "max_batch_size": self.settings.max_batch_size,
            "max_batch_wait_ms": self.settings.max_batch_wait_ms,
            **self.stats.snapshot(),
            "models": models,
        }

    def close(self) -> None:
        for runner in self._runners.values():
            if runner.task is not None and runner.loop is not None and not runner.loop.is_closed():
                runner.loop.call_soon_threadsafe(runner.task.cancel)
            runner.executor.shutdown(wait=False, cancel_futures=True)
        self._runners.clear()


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    """A request's row count as its first input's leading dimension (1 for a scalar, 0 without inputs)."""
    first = next(iter(inputs.values()), None)
    if first is None:
        return 0
    shape = np.shape(first)
    return int(shape[0]) if shape else 1


def _session_feed(
    plan: Plan | None, model: LoadedModel, joined: dict[str, np.ndarray], counts: Sequence[int]
) -> tuple[Any, dict[str, np.ndarray]]:
    """The session a joined batch runs on and its feed: the model's own, or with a `segments` plan the rewritten
    graph's, fed each row's request index too."""
    if plan is not None and plan.mode == "segments":
        joined[SEGMENTS] = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        return plan.session, joined
    return model.session, joined
