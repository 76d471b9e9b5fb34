"""`modelfn score`: the S3 handler's scoring on a local file and on s3:// objects. It exits 0 only when every row
was scored; 1 when some rows were not (a summary on stderr); 2 when the file could not be scored at all."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
from modelfn_tools.cli import main
from modelfn_tools.examples import build_iris
from modelfn_tools.publish import publish

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_score_local_csv(s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,a,b,c,d\nx,5.1,3.5,1.4,0.2\ny,6.7,3.0,5.2,2.3\nz,1,2\n")
    out = tmp_path / "out.csv"
    assert main(["score", str(src), str(out), "--store", s3_store, "--name", "iris"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["rows"], summary["scored"], summary["errors"], summary["version"]) == (3, 2, 1, 1)
    assert f"modelfn score: 2 of 3 rows scored, 1 could not be: see file://{out}.errors.jsonl" in captured.err
    lines = out.read_text().splitlines()
    assert lines[0] == "id,label,probabilities_0,probabilities_1,probabilities_2"
    assert [line.split(",")[:2] for line in lines[1:]] == [["x", "0"], ["y", "2"]]
    (error,) = [json.loads(x) for x in (tmp_path / "out.csv.errors.jsonl").read_text().splitlines()]
    assert error["row"] == 3 and error["id"] == "z" and "expected 5 fields" in error["error"]


def test_every_row_scored_exits_0(s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,a,b,c,d\nx,5.1,3.5,1.4,0.2\n")
    assert main(["score", str(src), str(tmp_path / "out.csv"), "--store", s3_store, "--name", "iris"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["scored"] == 1 and captured.err == ""


def test_pandas_files_score_and_exit_0(s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The defaults of `df.to_csv(path)` (an index column) and `df.to_json(..., orient="records", lines=True)`."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(np.round(rng.random((40, 4)) * 5, 2), columns=IRIS_FEATURES)
    frame.to_csv(tmp_path / "frame.csv")
    frame.to_json(tmp_path / "frame.jsonl", orient="records", lines=True)
    for name in ("frame.csv", "frame.jsonl"):
        argv = ["score", str(tmp_path / name), str(tmp_path / f"out-{name}"), "--store", s3_store, "--name", "iris"]
        assert main(argv) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["scored"] == 40


def test_columns_by_the_names_published_with_the_model(
    fresh_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(build_iris(tmp_path / "iris.onnx"), fresh_bucket, "iris", progress=False, features=IRIS_FEATURES)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(np.round(rng.random((100, 4)) * 5, 2), columns=IRIS_FEATURES)
    frame.insert(0, "id", range(100))
    frame.to_csv(tmp_path / "canonical.csv", index=False)
    frame[["petal_width", "id", "petal_length", "sepal_width", "sepal_length"]].assign(comment="n/a").to_csv(
        tmp_path / "reordered.csv", index=False
    )
    for name in ("canonical.csv", "reordered.csv"):
        argv = ["score", str(tmp_path / name), str(tmp_path / f"out-{name}"), "--store", fresh_bucket, "--name", "iris"]
        assert main(argv) == 0
    assert (tmp_path / "out-reordered.csv").read_bytes() == (tmp_path / "out-canonical.csv").read_bytes()

    # a file without a column the model needs fails as a whole: exit 2, the reason on stderr, no output
    capsys.readouterr()
    frame.drop(columns=["petal_width"]).to_csv(tmp_path / "short.csv", index=False)
    argv = ["score", str(tmp_path / "short.csv"), str(tmp_path / "out-short.csv"), "--store", fresh_bucket]
    assert main([*argv, "--name", "iris"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "modelfn score: missing column(s) ['petal_width']" in captured.err
    assert not (tmp_path / "out-short.csv").exists()
    assert not (tmp_path / "out-short.csv.errors.jsonl").exists()


def test_a_file_without_header_exits_2(s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    assert main(["score", str(src), str(tmp_path / "out.csv"), "--store", s3_store, "--name", "iris"]) == 2
    assert "looks like data, but a CSV file needs a header line" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]


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
