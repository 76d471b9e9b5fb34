"""`modelfn rollout`: move a model's traffic from its `stable` version to a new one step by step (a split in
traffic.json), watching CloudWatch, and roll back at once when a named alarm is in ALARM (or the new version's
server-error rate passes a bound).

Rolling back clears the split and never touches a label, so `stable` serves everything again within
MODELFN_LABEL_TTL. Promotion (the last step, 100 %) points `stable` at the new version, then clears the split.

The store holds the record: `<model>/rollout.json` is the latest rollout (its lease, state and events), written
with the store's conditional write, so a second rollout of the same model is refused while one holds the lease;
`<model>/rollouts/<id>.json` keeps each rollout's record after it. A rollout that dies without rolling back (the
process killed) leaves its split and a lease that lapses `interval` + LEASE_MARGIN seconds after its last step;
a later rollout may then take over its split."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from modelfn.errors import InvalidInput, ModelfnError, ModelNotFound, PublishError, StoreError
from modelfn.observability import NAMESPACE
from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import check_name, manifest_key
from modelfn.store.traffic import Traffic
from modelfn.telemetry.names import REQUESTS
from modelfn_tools.publish import set_label
from modelfn_tools.traffic import change_traffic

STABLE = "stable"
LEASE_MARGIN = 120.0
"""Seconds a rollout's lease outlives its current step's interval: time to poll, write and roll back."""
POLL = 5.0
"""Seconds between CloudWatch polls within an interval (shorter intervals poll at their end)."""
Status = Literal["running", "succeeded", "rolled_back", "failed"]
Emit = Callable[[dict[str, Any]], None]


class MonitorError(ModelfnError):
    """CloudWatch could not be read: the rollout cannot tell whether it is safe (502, like an unreadable store)."""

    status = 502


class LeaseLost(PublishError):
    """Another rollout took this one's lapsed lease: it owns the split now, so this one stops without touching it."""


class RolloutRecord(BaseModel):
    """One rollout as the store keeps it (rollout.json, rollouts/<id>.json)."""

    id: str
    name: str
    from_version: int = Field(alias="from")
    to: int
    steps: list[int]
    interval: float
    alarms: list[str]
    max_error_rate: float | None = None
    status: Status = "running"
    percent: int = 0
    split: dict[str, int] = Field(default_factory=dict)
    lease_until: float = 0.0
    started_at: str
    reason: str | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)

    def dump(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()


def rollout_key(name: str) -> str:
    return f"{name}/rollout.json"


def history_key(name: str, rollout_id: str) -> str:
    return f"{name}/rollouts/{rollout_id}.json"


def parse_steps(text: str) -> list[int]:
    """`10,50,100`: percentages of traffic for the new version, increasing, ending at 100."""
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError as e:
        raise InvalidInput(f"invalid steps {text!r}: comma-separated integer percentages, e.g. 10,50,100") from e
    if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
        raise InvalidInput(f"invalid steps {text!r}: increasing percentages in 1..100, the last 100")
    return steps


def _record(name: str, data: bytes | None) -> RolloutRecord | None:
    if data is None:
        return None
    try:
        return RolloutRecord.model_validate_json(data)
    except ValidationError as e:
        raise StoreError(f"the rollout record of model {name!r} ({rollout_key(name)}) is malformed: {e}") from e


# ---- CloudWatch -------------------------------------------------------------------------------------------------
@contextmanager
def _cloudwatch(doing: str) -> Iterator[None]:
    """botocore's errors as MonitorError, saying what could not be done."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as e:
        raise MonitorError(f"could not {doing} in CloudWatch: {e}") from e


@dataclass
class Monitor:
    """The signals a rollout watches: named CloudWatch alarms (metric or composite), and optionally the new
    version's share of 5xx answers in the `Requests` metric the functions emit (namespace modelfn, dimensions
    model, version, route, status_class), summed over every route since the rollout started."""

    name: str
    version: int
    alarms: list[str]
    max_error_rate: float | None = None
    min_requests: int = 20
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    counts: tuple[float, float] | None = None
    """(5xx answers, all answers) at the last check, with a bound."""
    _client: Any = None

    def judged(self) -> dict[str, Any]:
        """What the error-rate bound saw at the last check, for the record: a bound that never had
        `min_requests` to judge (too little traffic, or no `Requests` metric emitted) must not pass unnoticed."""
        if self.counts is None:
            return {}
        errors, total = self.counts
        return {"errors_5xx": errors, "requests": total, "error_rate_judged": total >= self.min_requests}

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("cloudwatch")  # AWS_ENDPOINT_URL and the region from the environment
        return self._client

    def alarm_states(self) -> dict[str, tuple[str, str]]:
        """{alarm name: (state, reason)} of the named alarms that exist."""
        if not self.alarms:
            return {}
        found: dict[str, tuple[str, str]] = {}
        with _cloudwatch("describe the alarms"):
            pages = self.client.get_paginator("describe_alarms").paginate(
                AlarmNames=self.alarms, AlarmTypes=["MetricAlarm", "CompositeAlarm"]
            )
            for page in pages:
                for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                    found[alarm["AlarmName"]] = (alarm["StateValue"], alarm.get("StateReason", ""))
        return found

    def verify(self) -> None:
        """Before anything moves: every named alarm exists (a typo would otherwise never fire)."""
        missing = sorted(set(self.alarms) - set(self.alarm_states()))
        if missing:
            raise InvalidInput(f"no CloudWatch alarm named {', '.join(map(repr, missing))}")

    def _sum(self, extra: dict[str, str]) -> float:
        """Sum of `Requests` of this model version (and `extra` dimensions) since the rollout began, over every
        other dimension's values (routes, status classes)."""
        dims = [{"Name": "model", "Value": self.name}, {"Name": "version", "Value": str(self.version)}]
        dims += [{"Name": k, "Value": v} for k, v in extra.items()]
        metrics = [
            m
            for page in self.client.get_paginator("list_metrics").paginate(
                Namespace=NAMESPACE, MetricName=REQUESTS.emf_name, Dimensions=dims
            )
            for m in page["Metrics"]
        ]
        total = 0.0
        for start in range(0, len(metrics), 500):  # get_metric_data takes 500 queries at most
            queries = [
                {"Id": f"m{i}", "MetricStat": {"Metric": m, "Period": 60, "Stat": "Sum"}}
                for i, m in enumerate(metrics[start : start + 500])
            ]
            result = self.client.get_metric_data(
                MetricDataQueries=queries,
                StartTime=self.since.replace(second=0, microsecond=0),
                EndTime=datetime.now(UTC) + timedelta(minutes=1),
            )
            total += sum(sum(r["Values"]) for r in result["MetricDataResults"])
        return total

    def error_rate(self) -> tuple[float, float] | None:
        """(5xx answers, all answers) of the new version, or None without a bound to check."""
        if self.max_error_rate is None:
            return None
        with _cloudwatch("read the Requests metric"):
            return self._sum({"status_class": "5xx"}), self._sum({})

    def check(self) -> str | None:
        """Why to roll back now, or None."""
        states = self.alarm_states()
        for alarm in self.alarms:
            if alarm not in states:
                return f"alarm {alarm!r} no longer exists"
            state, why = states[alarm]
            if state == "ALARM":
                return f"alarm {alarm!r} is in ALARM: {why}".rstrip(": ")
        counts = self.counts = self.error_rate()
        if counts is not None and self.max_error_rate is not None:
            errors, total = counts
            if total >= self.min_requests and errors / total > self.max_error_rate:
                return (
                    f"version {self.version} answered {errors:.0f} of {total:.0f} requests with a 5xx "
                    f"({errors / total:.2%} > {self.max_error_rate:.2%})"
                )
        return None


# ---- the rollout --------------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """One rollout in progress: it owns the model's split while it holds the lease in rollout.json."""

    repo: ModelRepository
    record: RolloutRecord
    monitor: Monitor
    emit: Emit

    @property
    def name(self) -> str:
        return self.record.name

    def _event(self, event: str, **facts: Any) -> None:
        entry = {"event": event, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), **facts}
        self.record.events.append(entry)
        self.emit({"name": self.name, "rollout": self.record.id, **entry})

    def save(self) -> None:
        """Write the record: rollout.json only while this rollout still holds it, then its history copy."""

        def ours(current: bytes | None) -> bytes:
            now = _record(self.name, current)
            if now is None or now.id != self.record.id:
                taken = now.id if now else "none"
                raise LeaseLost(f"rollout {self.record.id} of model {self.name!r} lost its lease to {taken}")
            return self.record.dump()

        self.repo.store.update(rollout_key(self.name), ours)
        self.repo.store.write_bytes(history_key(self.name, self.record.id), self.record.dump())

    def _split(self, percent: int) -> None:
        """Renew the lease (proving it is still ours), then give the new version `percent` of the traffic."""
        split = {STABLE: 100 - percent, str(self.record.to): percent}
        self.record.percent, self.record.split = percent, split
        self.record.lease_until = time.time() + self.record.interval + LEASE_MARGIN
        self._event("step", percent=percent, split=split, **self.monitor.judged())
        self.save()
        change_traffic(self.repo, self.name, lambda now: _with_split(now, split))

    def watch(self, seconds: float) -> str | None:
        """Poll the monitor every POLL seconds and at the end of `seconds`; the reason to roll back, or None."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left > 0:
                time.sleep(min(POLL, left))
            reason = self.monitor.check()
            if reason is not None or left <= POLL:
                return reason

    def promote(self) -> None:
        """The last step: `stable` at the new version, then no split (it would send everything there anyway)."""
        set_label(self.repo.uri, self.name, STABLE, self.record.to)
        change_traffic(self.repo, self.name, lambda now: _with_split(now, {}), check_targets=False)
        self.record.percent, self.record.split = 100, {}
        self.finish("succeeded", None)

    def roll_back(self, reason: str, status: Status = "rolled_back") -> None:
        """Clear the split (labels are left as they are: `stable` never moved) and record why."""
        change_traffic(self.repo, self.name, lambda now: _with_split(now, {}), check_targets=False)
        self.record.split = {}
        self.finish(status, reason)

    def finish(self, status: Status, reason: str | None) -> None:
        self.record.status, self.record.reason, self.record.lease_until = status, reason, 0.0
        self._event(status, reason=reason, labels=self.repo.labels(self.name), **self.monitor.judged())
        self.save()

    def run(self) -> bool:
        """Step through; True when promoted, False when rolled back. On an error (CloudWatch or the store
        unreachable, an interrupt) it rolls back, records it as failed and raises."""
        try:
            for percent in self.record.steps:  # the last is 100
                reason = self.monitor.check()
                if reason is None and percent < 100:
                    self._split(percent)
                    reason = self.watch(self.record.interval)
                if reason is not None:
                    self.roll_back(reason)
                    return False
            self.promote()
            return True
        except LeaseLost:
            raise  # the split is another rollout's now: leave it alone
        except BaseException as e:
            self._fail(e)
            raise

    def _fail(self, error: BaseException) -> None:
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else _message(error)
        try:
            self.roll_back(f"rolled back on an error: {why}", "failed")
        except Exception as e:  # the store itself may be what failed: say so, keep the first error
            self.emit({"name": self.name, "rollout": self.record.id, "event": "failed", "reason": f"{why}; {e}"})


def _message(error: BaseException) -> str:
    return error.message if isinstance(error, ModelfnError) else f"{type(error).__name__}: {error}"


def _with_split(now: Traffic | None, split: dict[str, int]) -> Traffic:
    """The traffic with this split, its sticky header and shadow kept."""
    base = now or Traffic()
    return Traffic(split=split, sticky=base.sticky, shadow=base.shadow)


def _acquire(repo: ModelRepository, record: RolloutRecord) -> None:
    """Take the model's rollout lease with a conditional write: refused while another rollout holds it, or while
    traffic.json has a split that is not a lapsed rollout's own (an experiment someone set up)."""
    name = record.name

    def take(current: bytes | None) -> bytes:
        previous = _record(name, current)
        running = previous is not None and previous.status == "running"
        if previous is not None and running and previous.lease_until > time.time():
            raise PublishError(
                f"rollout {previous.id} of model {name!r} to version {previous.to} is in progress "
                f"(at {previous.percent} %); wait for it to finish"
            )
        traffic = repo.traffic(name)
        lapsed = previous.split if previous is not None and running else None
        if traffic is not None and traffic.split and dict(traffic.split) != lapsed:
            raise PublishError(
                f"model {name!r} already has a traffic split ({json.dumps(dict(traffic.split))}): remove it with "
                "`modelfn traffic --clear` (or set the traffic without it) before a rollout"
            )
        return record.dump()

    repo.store.update(rollout_key(name), take)


def start(
    store_uri: str,
    name: str,
    to: int,
    steps: list[int],
    interval: float,
    monitor: Monitor,
    emit: Emit,
) -> Rollout:
    """Check everything that can be refused, then take the lease: nothing has moved if this raises."""
    check_name(name)
    if interval < 0:
        raise InvalidInput(f"invalid interval {interval}: seconds, not negative")
    repo = ModelRepository(open_store(store_uri))
    if not repo.store.exists(manifest_key(name, to)):
        raise ModelNotFound(f"model {name!r} has no published version {to}")
    labels = repo.labels(name)
    if STABLE not in labels:
        raise InvalidInput(f"model {name!r} has no label {STABLE!r}: point it at the version serving now first")
    if labels[STABLE] == to:
        raise InvalidInput(f"version {to} of model {name!r} is already {STABLE!r}")
    monitor.verify()
    started = datetime.now(UTC)
    record = RolloutRecord.model_validate(
        {
            "id": started.strftime("%Y%m%dT%H%M%S%fZ"),
            "name": name,
            "from": labels[STABLE],
            "to": to,
            "steps": steps,
            "interval": interval,
            "alarms": monitor.alarms,
            "max_error_rate": monitor.max_error_rate,
            "lease_until": time.time() + interval + LEASE_MARGIN,
            "started_at": started.isoformat(timespec="seconds"),
        }
    )
    monitor.since = started
    _acquire(repo, record)
    rollout = Rollout(repo, record, monitor, emit)
    rollout._event("start", **{"from": record.from_version, "to": to, "steps": steps, "alarms": monitor.alarms})
    rollout.save()
    return rollout


def print_event(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)
