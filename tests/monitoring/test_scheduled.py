"""The scheduled drift function on the EventBridge event in events/drift/schedule.json, against moto's S3: one
EMF line per feature (DriftPSI) and per model (DriftMaxPSI, DriftRecords), and a summary; a model that cannot be
checked does not stop the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modelfn_tools.publish import publish

from modelfn.errors import InvalidInput
from modelfn.monitoring.scheduled import handler
from tests.monitoring.synthetic import FEATURES, records, tabular_data, tabular_model, write_capture, write_csv

EVENT = Path(__file__).parents[2] / "events" / "drift" / "schedule.json"


def _emf(out: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [d for d in docs if "_aws" in d]


@pytest.fixture
def deployed(tmp_path: Path, fresh_bucket: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Models `steady` and `shifted` (one baseline), each with a day of captured requests in S3."""
    model, base = tabular_model(tmp_path / "m.onnx"), write_csv(tmp_path / "base.csv", tabular_data(3000, 1))
    capture = fresh_bucket.replace("/models", "/capture")
    for name in ("steady", "shifted", "idle"):
        publish(model, fresh_bucket, name, progress=False, baseline=base)
    write_capture(capture, records("steady", 1, {"x": tabular_data(1000, 2)}))
    write_capture(capture, records("shifted", 1, {"x": tabular_data(1000, 3, {"a": 2.0})}))
    monkeypatch.setenv("MODELFN_STORE", fresh_bucket)
    monkeypatch.setenv("MODELFN_CAPTURE", capture)
    monkeypatch.setenv("MODELFN_DRIFT_MODELS", "steady, shifted:1,idle,missing")
    return fresh_bucket, capture


def test_scheduled_event_emits_psi_per_feature_and_max_per_model(
    deployed: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    summary = handler(json.loads(EVENT.read_text()), None)
    docs = _emf(capsys.readouterr().out)
    assert summary["since"] == "2026-12-01T00:00:00+00:00" and summary["until"] == "2026-12-02T00:00:00+00:00"
    assert summary["drifted"] == ["shifted"] and summary["threshold"] == 0.2
    by_model = {m["model"]: m for m in summary["models"]}
    assert by_model["steady"]["status"] == "ok" and by_model["shifted"]["drifted"] == ["a"]
    assert by_model["idle"]["status"] == "no data" and by_model["missing"]["status"] == "error"

    per_feature = {(d["model"], d["feature"]): d["DriftPSI"] for d in docs if "DriftPSI" in d}
    assert set(per_feature) == {(m, f) for m in ("steady", "shifted") for f in FEATURES}
    assert per_feature[("shifted", "a")] > 0.2 and max(per_feature[("steady", f)] for f in FEATURES) < 0.1
    per_model = {d["model"]: d for d in docs if "feature" not in d}
    assert per_model["shifted"]["DriftMaxPSI"] == pytest.approx(max(per_feature[("shifted", f)] for f in FEATURES))
    assert per_model["steady"]["DriftRecords"] == 200 and per_model["idle"]["DriftRecords"] == 0
    assert "missing" not in per_model
    for d in docs:  # the EMF specification's shape, in the modelfn namespace
        (directive,) = d["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "modelfn" and isinstance(d["_aws"]["Timestamp"], int)
        assert directive["Dimensions"] == [["model", "feature"] if "feature" in d else ["model"]]
        assert all(m["Name"] in d and isinstance(d[m["Name"]], float | int) for m in directive["Metrics"])


def test_threshold_comes_from_the_environment(
    deployed: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFN_DRIFT_THRESHOLD", "100")
    assert handler(json.loads(EVENT.read_text()), None)["drifted"] == []
    monkeypatch.setenv("MODELFN_DRIFT_HOURS", "1")  # 23:00-00:00: nothing captured then
    statuses = {m["model"]: m["status"] for m in handler(json.loads(EVENT.read_text()), None)["models"]}
    assert statuses == {"steady": "no data", "shifted": "no data", "idle": "no data", "missing": "error"}


def test_a_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_STORE", "/tmp/store")
    monkeypatch.setenv("MODELFN_CAPTURE", "/tmp/capture")
    monkeypatch.delenv("MODELFN_DRIFT_MODELS", raising=False)
    with pytest.raises(InvalidInput, match="needs MODELFN_DRIFT_MODELS"):
        handler(json.loads(EVENT.read_text()), None)
