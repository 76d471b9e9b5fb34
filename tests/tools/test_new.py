"""`modelfn new` on a fresh clone (the repository's committed files extracted to a temporary folder): the model is
published to the store `make demo` uses (moto's server over HTTP here), its function and events are written, its
block is added to template.yaml (a short diff that cfn-lint finds clean), and `modelfn invoke` answers each new
event with onnxruntime's predictions. What it refuses, it refuses before changing anything."""

from __future__ import annotations

import difflib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.invoke_nested import flatten
from onnx import TensorProto, helper

from tests.infra.test_template import cfn_lint, parse, translate

ROOT = Path(__file__).resolve().parents[2]
NAME = "fraud-score"


def fresh_clone(dest: Path) -> Path:
    """The committed files only, as `git clone` gives them (no venv, no build output, nothing uncommitted)."""
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def linear_model(path: Path) -> Path:
    """scores[N, 2] = x[N, 3] @ W + b: a model with a single input, so /predict applies."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [0.5, -1.0, 2.0, 0.25, -0.75, 1.5])
    b = helper.make_tensor("B", TensorProto.FLOAT, [2], [0.1, -0.2])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["scores"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def modelfn(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "modelfn_tools.cli", *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)


def invoke(repo: Path, function: str, event: str) -> Any:
    p = modelfn(repo, "invoke", function, "--event", event, "--env-vars", "env.json")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout)


def expected(model: Path, tensors: list[dict[str, Any]]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (x,) = tensors
    return np.asarray(session.run(None, {"x": np.asarray(x["data"], np.float32).reshape(x["shape"])})[0])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return fresh_clone(tmp_path / "repo")


@pytest.fixture
def demo_store(aws: EmbeddedAWS) -> None:
    """The buckets env.json names: the dev store (`make demo`'s) and the results bucket."""
    for bucket in ("modelfn-models", "modelfn-results"):
        boto3.client("s3").create_bucket(Bucket=bucket)


def test_new_model_is_published_scaffolded_deployed_and_invocable(repo: Path, demo_store: None, tmp_path: Path) -> None:
    model = linear_model(tmp_path / "fraud.onnx")
    before = (repo / "template.yaml").read_text()
    p = modelfn(repo, "new", NAME, "--model", str(model))
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout)
    assert done["published"]["name"] == NAME and done["published"]["uri"].startswith("s3://modelfn-models/models/")
    assert done["functions"] == ["FraudScoreHttpFunction", "FraudScoreBatchFunction"]
    assert sorted(p.name for p in (repo / "events" / NAME).iterdir()) == [
        "http-api-v2-infer.json",
        "http-api-v2-predict.json",
        "sqs.json",
    ]

    # the template: a short diff, clean for cfn-lint
    after = (repo / "template.yaml").read_text()
    diff = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    print(f"template.yaml diff for one new model: +{len(added)} -{len(removed)} lines")
    assert removed == ["          MODELFN_DRIFT_MODELS: iris,mlp,ranker"]
    assert "          MODELFN_DRIFT_MODELS: iris,mlp,ranker,fraud-score" in added
    assert len(added) < 40
    assert "  FraudScore:" in added and "        ModelName: fraud-score" in added
    env = json.loads((repo / "env.json").read_text())  # as the last model's, for `modelfn invoke --env-vars`
    assert env["FraudScoreHttpFunction"] == env["RankerHttpFunction"]
    assert env["FraudScoreBatchFunction"] == env["RankerBatchFunction"]
    lint = cfn_lint(repo / "template.yaml", repo / "infra" / "model-function.yaml", cwd=repo)
    assert (lint.returncode, lint.stdout.strip()) == (0, ""), lint.stdout + lint.stderr
    res = translate(flatten(parse(repo / "template.yaml"), repo, parse))["Resources"]
    routes = {r["Properties"]["RouteKey"] for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert {"ANY /v2/models/fraud-score/{proxy+}", "POST /v1/models/fraud-score:predict"} <= routes
    assert res["FraudScoreHttpFunction"]["Properties"]["Environment"]["Variables"]["MODELFN_MODEL"] == NAME
    assert res["FraudScoreDriftAlarm"]["Properties"]["Dimensions"] == [{"Name": "model", "Value": NAME}]

    # the new function answers its own events with the model's predictions
    infer_event = json.loads((repo / "events" / NAME / "http-api-v2-infer.json").read_text())
    tensors = json.loads(infer_event["body"])["inputs"]
    want = expected(model, tensors)
    answer = invoke(repo, "FraudScoreHttpFunction", f"events/{NAME}/http-api-v2-infer.json")
    assert answer["statusCode"] == 200, answer
    (out,) = json.loads(answer["body"])["outputs"]
    assert out["name"] == "scores" and out["shape"] == [2, 2]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(2, 2), want, rtol=1e-6)

    answer = invoke(repo, "FraudScore/HttpFunction", f"events/{NAME}/http-api-v2-predict.json")  # SAM's path form
    assert answer["statusCode"] == 200, answer
    rows = json.loads(answer["body"])["predictions"]
    np.testing.assert_allclose(np.asarray([r["scores"] for r in rows]), want, rtol=1e-6)

    assert invoke(repo, "FraudScoreBatchFunction", f"events/{NAME}/sqs.json") == {"batchItemFailures": []}
    key = f"results/{NAME}/{NAME}-1.json"
    result = json.loads(boto3.client("s3").get_object(Bucket="modelfn-results", Key=key)["Body"].read())
    np.testing.assert_allclose(np.asarray(result["outputs"][0]["data"]).reshape(2, 2), want, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "model", "why"),
    [
        ("iris", "model", "model 'iris' is already in template.yaml"),
        ("Fraud_Score", "model", "invalid model name 'Fraud_Score'"),
        ("fraud-", "model", "invalid model name 'fraud-'"),
        ("http-api", "model", "template.yaml already has HttpApi"),
        ("fraud", "text", "is not a valid ONNX model"),
        ("fraud", "missing", "is not a file"),
    ],
)
def test_refuses_before_changing_anything(
    repo: Path, demo_store: None, tmp_path: Path, name: str, model: str, why: str
) -> None:
    files = {
        "model": linear_model(tmp_path / "m.onnx"),
        "text": tmp_path / "notes.txt",
        "missing": tmp_path / "nope.onnx",
    }
    files["text"].write_text("not a model\n")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    p = modelfn(repo, "new", name, "--model", str(files[model]))
    assert p.returncode == 2 and why in p.stderr, p.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    if name != "iris":  # (iris: the demo's own model, which other tests publish)
        listed = boto3.client("s3").list_objects_v2(Bucket="modelfn-models", Prefix=f"models/{name}/")
        assert listed["KeyCount"] == 0
