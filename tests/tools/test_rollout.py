"""`modelfn rollout` against moto's server over HTTP (S3 for the store, CloudWatch for alarms and metrics): it steps
the split through to 100 % and promotes, rolls back at once on an alarm or an error-rate bound with the store left
consistent, refuses what cannot be rolled out, and lets only one rollout of a model run at a time."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from modelfn_tools.cli import main
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.rollout import (
    LeaseLost,
    Monitor,
    MonitorError,
    RolloutRecord,
    history_key,
    print_event,
    rollout_key,
    start,
)

from modelfn.errors import PublishError
from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import dump_labels, labels_key, manifest_key
from modelfn.store.traffic import Traffic, make_traffic, traffic_key

INTERVAL = "0.2"


@pytest.fixture
def cloudwatch(aws: EmbeddedAWS) -> Any:
    return boto3.client("cloudwatch")


@pytest.fixture
def alarm(cloudwatch: Any, request: pytest.FixtureRequest) -> str:
    """An alarm of this test's own (moto's CloudWatch is shared by the session), in state OK."""
    name = f"errors-{request.node.name}-{time.time_ns()}"
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        Namespace="modelfn",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="quiet")
    return name


def _model(store_uri: str, name: str = "iris") -> ModelRepository:
    """Versions 1..3 (a manifest is all a rollout checks; publishing is tested elsewhere), stable→1."""
    store = open_store(store_uri)
    for v in (1, 2, 3):
        store.write_bytes(manifest_key(name, v), b"{}")
    store.write_bytes(labels_key(name), dump_labels({"stable": 1}))
    return ModelRepository(store)


def _record(repo: ModelRepository, name: str = "iris") -> RolloutRecord:
    record = RolloutRecord.model_validate_json(repo.store.read_bytes(rollout_key(name)))
    assert RolloutRecord.model_validate_json(repo.store.read_bytes(history_key(name, record.id))) == record
    return record


class Watching(Monitor):
    """The real CloudWatch monitor, which also notes the traffic in the store at every poll and can act then."""

    def __init__(self, repo: ModelRepository, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repo = repo
        self.seen: list[Traffic | None] = []
        self.on_poll: Any = None

    def check(self) -> str | None:
        self.seen.append(self.repo.traffic(self.name))
        if self.on_poll is not None:
            self.on_poll(self)
        return super().check()


def test_steps_through_to_100_and_promotes(fresh_bucket: str, alarm: str, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _model(fresh_bucket)
    repo.store.write_bytes(traffic_key("iris"), b'{"sticky": "x-user-id"}')  # kept through the rollout
    monitor = Watching(repo, "iris", 2, [alarm])
    rollout = start(fresh_bucket, "iris", 2, [10, 50, 100], 0.2, monitor, print_event)
    assert rollout.run() is True

    splits = [dict(t.split) if t else {} for t in monitor.seen]
    assert {"stable": 90, "2": 10} in splits
    assert {"stable": 50, "2": 50} in splits
    assert splits.index({"stable": 90, "2": 10}) < splits.index({"stable": 50, "2": 50})
    assert all(t is not None and t.sticky == "x-user-id" for t in monitor.seen)

    assert repo.labels("iris") == {"stable": 2}
    assert repo.traffic("iris") == make_traffic({"sticky": "x-user-id"})  # split cleared, the rest kept
    record = _record(repo)
    assert (record.status, record.from_version, record.to, record.split, record.reason) == ("succeeded", 1, 2, {}, None)
    assert [e["event"] for e in record.events] == ["start", "step", "step", "succeeded"]

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e.get("percent")) for e in lines] == [
        ("start", None),
        ("step", 10),
        ("step", 50),
        ("succeeded", None),
    ]
    assert lines[-1]["labels"] == {"stable": 2}


def test_rolls_back_at_once_on_an_alarm(fresh_bucket: str, alarm: str, cloudwatch: Any) -> None:
    """The alarm goes off during the first step: the split is cleared at the next poll, `stable` never moved,
    and the record says why."""
    repo = _model(fresh_bucket)
    monitor = Watching(repo, "iris", 2, [alarm])

    def fire(m: Watching) -> None:
        if m.seen[-1] is not None and m.seen[-1].split:
            cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx above 1")

    monitor.on_poll = fire
    events: list[dict[str, Any]] = []
    rollout = start(fresh_bucket, "iris", 2, [10, 50, 100], 0.2, monitor, events.append)
    assert rollout.run() is False

    splits = [dict(t.split) for t in monitor.seen if t is not None]
    assert splits == [{"stable": 90, "2": 10}]  # never reached 50
    assert repo.labels("iris") == {"stable": 1}
    assert repo.traffic("iris") is None
    record = _record(repo)
    assert record.status == "rolled_back"
    assert record.reason == f"alarm {alarm!r} is in ALARM: 5xx above 1"
    assert [e["event"] for e in events] == ["start", "step", "rolled_back"]
    assert events[-1]["labels"] == {"stable": 1}


def test_cli_alarm_already_in_alarm_moves_nothing(
    fresh_bucket: str, alarm: str, cloudwatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _model(fresh_bucket)
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="latency")
    rc = main(
        ["rollout", "--store", fresh_bucket, "--name", "iris", "--to", "2", "--interval", INTERVAL, "--alarm", alarm]
    )
    assert rc == 1
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (last["event"], last["reason"]) == ("rolled_back", f"alarm {alarm!r} is in ALARM: latency")
    assert repo.labels("iris") == {"stable": 1}
    assert repo.traffic("iris") is None
    assert _record(repo).status == "rolled_back"


def test_rolls_back_on_the_new_versions_error_rate(fresh_bucket: str, cloudwatch: Any) -> None:
    """The bound reads `Requests` by model, version and status_class (as the functions emit it), across routes;
    another version's errors do not count."""
    name = f"m{time.time_ns()}"
    repo = _model(fresh_bucket, name)
    now = datetime.now(UTC)

    def requests(version: int, route: str, status: str, count: float) -> dict[str, Any]:
        dims = {"model": name, "version": str(version), "route": route, "status_class": status}
        return {
            "MetricName": "Requests",
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            "Value": count,
            "Unit": "Count",
            "Timestamp": now,
        }

    data = [requests(1, "/v2/models/{m}/infer", "5xx", 500), requests(2, "/v2/models/{m}/infer", "2xx", 90)]
    cloudwatch.put_metric_data(Namespace="modelfn", MetricData=data)
    monitor = Monitor(name, 2, [], max_error_rate=0.05, min_requests=50)
    assert monitor.check() is None  # version 1's errors are not version 2's

    cloudwatch.put_metric_data(Namespace="modelfn", MetricData=[requests(2, "/invocations", "5xx", 10)])
    assert monitor.check() == "version 2 answered 10 of 100 requests with a 5xx (10.00% > 5.00%)"
    assert Monitor(name, 2, [], max_error_rate=0.05, min_requests=101).check() is None  # too few to judge

    bound = ["--max-error-rate", "0.05", "--min-requests", "50"]
    rc = main(["rollout", "--store", fresh_bucket, "--name", name, "--to", "2", "--interval", INTERVAL, *bound])
    assert rc == 1
    assert repo.labels(name) == {"stable": 1}
    record = _record(repo, name)
    assert record.reason == "version 2 answered 10 of 100 requests with a 5xx (10.00% > 5.00%)"
    assert record.events[-1]["error_rate_judged"] is True


def test_a_bound_that_never_saw_enough_requests_says_so(fresh_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No `Requests` metric for the version: the rollout goes through, and its record says the bound was not judged."""
    name = f"m{time.time_ns()}"
    repo = _model(fresh_bucket, name)
    bound = ["--max-error-rate", "0.05", "--steps", "50,100"]
    assert main(["rollout", "--store", fresh_bucket, "--name", name, "--to", "2", "--interval", INTERVAL, *bound]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (last["event"], last["requests"], last["error_rate_judged"]) == ("succeeded", 0, False)
    assert _record(repo, name).events[-1]["error_rate_judged"] is False


def test_an_error_mid_rollout_rolls_back_and_is_recorded(fresh_bucket: str, alarm: str) -> None:
    repo = _model(fresh_bucket)
    monitor = Watching(repo, "iris", 2, [alarm])
    unreachable = boto3.client(
        "cloudwatch", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1})
    )

    def cut(m: Watching) -> None:
        if m.seen[-1] is not None:
            m._client = unreachable

    monitor.on_poll = cut
    rollout = start(fresh_bucket, "iris", 2, [10, 100], 0.2, monitor, lambda event: None)
    with pytest.raises(MonitorError, match="could not describe the alarms in CloudWatch"):
        rollout.run()
    assert repo.labels("iris") == {"stable": 1}
    assert repo.traffic("iris") is None
    record = _record(repo)
    assert record.status == "failed"
    assert record.reason is not None
    assert record.reason.startswith("rolled back on an error: could not describe the alarms")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--to", "9"], "model 'iris' has no published version 9"),
        (["--to", "1"], "version 1 of model 'iris' is already 'stable'"),
        (["--to", "2", "--alarm", "no-such-alarm"], "no CloudWatch alarm named 'no-such-alarm'"),
        (["--to", "2", "--steps", "50,10,100"], "invalid steps '50,10,100'"),
        (["--to", "2", "--steps", "10,50"], "the last 100"),
        (["--to", "2", "--steps", "ten"], "comma-separated integer percentages"),
        (["--to", "2", "--max-error-rate", "5"], "is not a fraction in 0..1"),
    ],
)
def test_refused_before_anything_moves(
    fresh_bucket: str, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    repo = _model(fresh_bucket)
    rc = main(["rollout", "--store", fresh_bucket, "--name", "iris", "--interval", INTERVAL, *args])
    assert rc == 2
    assert problem in capsys.readouterr().err
    assert not repo.store.exists(rollout_key("iris"))
    assert repo.traffic("iris") is None
    assert repo.labels("iris") == {"stable": 1}


def test_refused_without_a_stable_label_or_over_a_split(fresh_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _model(fresh_bucket)
    assert main(["traffic", "--store", fresh_bucket, "--name", "iris", "--split", "stable=50,3=50"]) == 0
    rc = main(["rollout", "--store", fresh_bucket, "--name", "iris", "--to", "2", "--interval", INTERVAL])
    assert rc == 2
    assert "already has a traffic split" in capsys.readouterr().err
    assert repo.traffic("iris") == make_traffic({"split": {"stable": 50, "3": 50}})

    repo.store.write_bytes(labels_key("iris"), dump_labels({"canary": 1}))
    rc = main(["rollout", "--store", fresh_bucket, "--name", "iris", "--to", "2", "--interval", INTERVAL])
    assert rc == 2
    assert "has no label 'stable'" in capsys.readouterr().err


def test_a_second_rollout_is_refused_while_one_holds_the_lease(fresh_bucket: str, alarm: str) -> None:
    repo = _model(fresh_bucket)
    first = start(fresh_bucket, "iris", 2, [10, 100], 0.2, Monitor("iris", 2, [alarm]), lambda event: None)
    with pytest.raises(PublishError, match=r"rollout \S+ of model 'iris' to version 2 is in progress"):
        start(fresh_bucket, "iris", 3, [100], 0.2, Monitor("iris", 3, [alarm]), lambda event: None)
    assert first.run() is True
    assert repo.labels("iris") == {"stable": 2}

    second = start(fresh_bucket, "iris", 3, [100], 0.2, Monitor("iris", 3, [alarm]), lambda event: None)
    assert second.run() is True
    assert repo.labels("iris") == {"stable": 3}
    assert _record(repo).id == second.record.id
    history = RolloutRecord.model_validate_json(repo.store.read_bytes(history_key("iris", first.record.id)))
    assert (history.status, history.to) == ("succeeded", 2)


def test_a_lapsed_rollout_is_taken_over(fresh_bucket: str, alarm: str) -> None:
    """A rollout whose process died mid-step leaves its split and a lease that lapses; the next rollout takes
    over (its split too), and the dead one, if it ever wakes, cannot write over it."""
    repo = _model(fresh_bucket)
    dead = start(fresh_bucket, "iris", 2, [10, 100], 0.2, Monitor("iris", 2, [alarm]), lambda event: None)
    dead._split(10)
    dead.record.lease_until = time.time() - 1  # as if its interval and margin had passed
    dead.save()
    assert repo.traffic("iris") == make_traffic({"split": {"stable": 90, "2": 10}})

    taker = start(fresh_bucket, "iris", 3, [50, 100], 0.2, Monitor("iris", 3, [alarm]), lambda event: None)
    with pytest.raises(LeaseLost, match="lost its lease"):
        dead.save()
    assert taker.run() is True
    assert repo.labels("iris") == {"stable": 3}
    assert repo.traffic("iris") is None
