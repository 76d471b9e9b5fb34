"""Acceptance: every event in events/ runs through `modelfn invoke` (template.yaml, env.json, a fresh process per
invoke) against moto's server over HTTP, and gives the answer events/README.md promises."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from modelfn_tools.embedded import EmbeddedAWS

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
MODELS = "modelfn-models"
INPUT = "modelfn-input"
RESULTS = "modelfn-results"

FUNCTIONS = {
    "iris/http-api-v2.json": "IrisHttpFunction",
    "iris/rest-api-v1.json": "IrisHttpFunction",
    "iris/function-url.json": "IrisHttpFunction",
    "iris/alb.json": "IrisHttpFunction",
    "iris/sqs.json": "IrisBatchFunction",
    "iris/s3-put.json": "IrisBatchFunction",
    "iris/sfn-items.json": "IrisBatchFunction",
    "mlp/http-api-v2-binary.json": "MlpHttpFunction",
    "mlp/sqs.json": "MlpBatchFunction",
    "ranker/http-api-v2.json": "RankerHttpFunction",
    "ranker/sqs.json": "RankerBatchFunction",
    "drift/schedule.json": "DriftFunction",
}


@pytest.fixture(scope="module")
def sam_stack(aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The buckets env.json and the events name, the examples published, the batch inputs uploaded."""
    from modelfn_tools.examples import publish_examples

    s3 = boto3.client("s3")
    for bucket in (MODELS, INPUT, RESULTS):
        s3.create_bucket(Bucket=bucket)
    publish_examples(f"s3://{MODELS}/models", tmp_path_factory.mktemp("events-examples"))
    s3.upload_file(str(EVENTS / "data" / "iris.csv"), INPUT, "incoming/iris/batch=1/iris.csv")
    s3.upload_file(str(EVENTS / "data" / "iris-big.json"), INPUT, "requests/iris-big.json")
    env = dict(os.environ, MODELFN_CACHE_DIR=str(tmp_path_factory.mktemp("events-cache")))
    env.update({"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"})
    return env


def invoke(env: dict[str, str], rel: str) -> tuple[Any, str]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "modelfn_tools.cli", "invoke", FUNCTIONS[rel], "--event", str(EVENTS / rel)),
            *("--template", str(ROOT / "template.yaml"), "--env-vars", str(ROOT / "env.json")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPORT RequestId:" in proc.stderr and "Init Duration:" in proc.stderr
    return json.loads(proc.stdout), proc.stderr


def body(response: dict[str, Any]) -> Any:
    assert response["statusCode"] == 200, response
    raw = response["body"]
    return json.loads(base64.b64decode(raw) if response.get("isBase64Encoded") else raw)


def result_object(key: str) -> Any:
    return json.loads(boto3.client("s3").get_object(Bucket=RESULTS, Key=key)["Body"].read())


def test_every_event_is_covered() -> None:
    on_disk = {str(p.relative_to(EVENTS)) for p in EVENTS.glob("*/*.json") if p.parent.name != "data"}
    assert on_disk == set(FUNCTIONS)


def test_iris_http_events(sam_stack: dict[str, str]) -> None:
    v2 = body(invoke(sam_stack, "iris/http-api-v2.json")[0])
    assert v2["model_name"] == "iris"
    assert next(o for o in v2["outputs"] if o["name"] == "label")["data"] == [0, 2]
    tf = body(invoke(sam_stack, "iris/rest-api-v1.json")[0])
    assert [p["label"] for p in tf["predictions"]] == [0, 1, 2]
    plain = body(invoke(sam_stack, "iris/function-url.json")[0])
    assert [(p["label"], p["class"]) for p in plain["predictions"]] == [(0, "setosa"), (1, "versicolor")]
    meta = body(invoke(sam_stack, "iris/alb.json")[0])
    assert meta["name"] == "iris"
    assert meta["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]


def test_iris_sqs_event(sam_stack: dict[str, str]) -> None:
    answer, _ = invoke(sam_stack, "iris/sqs.json")
    assert answer == {"batchItemFailures": []}
    records = json.loads((EVENTS / "iris" / "sqs.json").read_text())["Records"]
    labels = []
    for record in records:
        result = result_object(f"results/iris/{record['messageId']}.json")
        if "outputs" in result and isinstance(result["outputs"], list):
            labels.append(next(o for o in result["outputs"] if o["name"] == "label")["data"])
        else:
            labels.append([p["label"] for p in result["predictions"]])
    assert labels[0] == [0] and labels[1] == [2, 1]
    assert sorted(np.bincount(labels[2]).tolist()) == [50, 50, 50]


def test_iris_s3_and_item_batch_events(sam_stack: dict[str, str]) -> None:
    answer, _ = invoke(sam_stack, "iris/s3-put.json")
    (result,) = answer["results"]
    assert (result["rows"], result["scored"], result["errors"]) == (22, 20, 2)
    s3 = boto3.client("s3")
    out = s3.get_object(Bucket=RESULTS, Key="results/iris/batch=1/iris.csv")["Body"].read().decode().splitlines()
    assert out[0] == "id,label,probabilities_0,probabilities_1,probabilities_2" and len(out) == 21
    errors = s3.get_object(Bucket=RESULTS, Key="results/iris/batch=1/iris.csv.errors.jsonl")["Body"].read()
    assert sorted(json.loads(line)["id"] for line in errors.decode().splitlines()) == ["15", "7"]
    items, _ = invoke(sam_stack, "iris/sfn-items.json")
    assert len(items["scored"]) == 20
    assert sorted(e["id"] for e in items["errors"]) == ["15", "7"]


def test_mlp_and_ranker_events(sam_stack: dict[str, str]) -> None:
    binary = body(invoke(sam_stack, "mlp/http-api-v2-binary.json")[0])
    probs = next(o for o in binary["outputs"] if o["name"] == "probabilities")
    assert probs["shape"] == [1, 10] and abs(sum(probs["data"]) - 1) < 1e-3
    assert invoke(sam_stack, "mlp/sqs.json")[0] == {"batchItemFailures": []}
    ranker = body(invoke(sam_stack, "ranker/http-api-v2.json")[0])
    assert len(ranker["outputs"]["score"]) == 2 and len(ranker["outputs"]["embedding"][0]) == 8
    assert invoke(sam_stack, "ranker/sqs.json")[0] == {"batchItemFailures": []}
    for model in ("mlp", "ranker"):
        listed = boto3.client("s3").list_objects_v2(Bucket=RESULTS, Prefix=f"results/{model}/")
        assert listed["KeyCount"] == 2


def test_drift_schedule_event(sam_stack: dict[str, str]) -> None:
    """The scheduled drift check of template.yaml's models over the day before the event's time: the examples are
    published without a baseline, which each model's summary names (tests/monitoring checks the metrics)."""
    answer, _ = invoke(sam_stack, "drift/schedule.json")
    assert (answer["since"], answer["until"]) == ("2026-12-01T00:00:00+00:00", "2026-12-02T00:00:00+00:00")
    assert [(m["model"], m["status"]) for m in answer["models"]] == [(m, "error") for m in ("iris", "mlp", "ranker")]
    assert all("has no baseline: publish it with --baseline" in m["reason"] for m in answer["models"])
