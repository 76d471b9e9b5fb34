"""`modelfn score`: the S3 handler's scoring on a local file and on s3:// objects."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from modelfn_tools.cli import main


def test_score_local_csv(s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,a,b,c,d\nx,5.1,3.5,1.4,0.2\ny,6.7,3.0,5.2,2.3\nz,1,2\n")
    assert main(["score", str(src), str(tmp_path / "out.csv"), "--store", s3_store, "--name", "iris"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["scored"], summary["errors"], summary["version"]) == (3, 2, 1, 1)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "id,label,probabilities_0,probabilities_1,probabilities_2"
    assert [line.split(",")[:2] for line in lines[1:]] == [["x", "0"], ["y", "2"]]
    (error,) = [json.loads(x) for x in (tmp_path / "out.csv.errors.jsonl").read_text().splitlines()]
    assert error["row"] == 3 and error["id"] == "z" and "expected 5 fields" in error["error"]


def test_score_s3_jsonl_by_label(s3_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="score-io")
    rows = [{"id": i, "features": [0.01 * i] * 256} for i in range(5)]
    s3.put_object(Bucket="score-io", Key="in/rows.jsonl", Body="\n".join(json.dumps(r) for r in rows).encode())
    argv = ["score", "s3://score-io/in/rows.jsonl", "s3://score-io/out/rows.jsonl", "--store", s3_store]
    assert main([*argv, "--name", "mlp", "--version", "fp32"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    out = s3.get_object(Bucket="score-io", Key="out/rows.jsonl")["Body"].read().decode().splitlines()
    assert [json.loads(line)["id"] for line in out] == [0, 1, 2, 3, 4]
    assert sorted(k for k in json.loads(out[0]) if k.startswith("probabilities_")) == sorted(
        f"probabilities_{k}" for k in range(10)
    )
