"""`modelfn publish / label / models / quantize` through the real CLI, against moto's S3 over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from modelfn_tools.cli import main
from modelfn_tools.embedded import EmbeddedAWS

from modelfn.store import ModelRepository, open_store
from modelfn.store.base import file_sha256

MANIFEST_FIELDS = {"name", "version", "sha256", "size_bytes", "inputs", "outputs", "quantization", "created_at"}


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_json(text: str) -> Any:
    """The text holds exactly one JSON value (and whitespace)."""
    obj, end = json.JSONDecoder().raw_decode(text.strip())
    assert text.strip()[end:] == "", f"more than one JSON value in {text!r}"
    return obj


def bucket_of(store: str) -> str:
    return store.removeprefix("s3://").split("/")[0]


def test_publish_subprocess_prints_one_json_object(fresh_bucket: str, example_dir: Path) -> None:
    iris = example_dir / "iris.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "modelfn_tools.cli", "publish", str(iris), "--store", fresh_bucket, "--name", "iris"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    result = one_json(proc.stdout)
    assert result == {
        "name": "iris",
        "version": 1,
        "sha256": file_sha256(iris),
        "uri": f"{fresh_bucket}/iris/1/model.onnx",
    }
    assert ModelRepository(open_store(fresh_bucket)).versions("iris") == [1]


def test_publish_uses_next_free_version(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path
) -> None:
    iris = example_dir / "iris.onnx"
    versions = []
    for _ in range(2):
        rc, out, _err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris")
        assert rc == 0
        versions.append(one_json(out)["version"])
    assert versions == [1, 2]
    store = open_store(fresh_bucket)
    store.write_bytes("iris/3/model.onnx", b"an interrupted publish")  # half-published: its number is not reused
    rc, out, _err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris")
    assert rc == 0
    assert one_json(out)["version"] == 4
    rc, out, _err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris", "--version", "9")
    assert rc == 0
    assert one_json(out)["version"] == 9
    assert ModelRepository(store).versions("iris") == [1, 2, 4, 9]


def test_publish_store_from_environment(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELFN_STORE", raising=False)
    rc, out, err = cli(capsys, "publish", example_dir / "iris.onnx", "--name", "iris")
    assert rc == 2
    assert out == ""
    assert "no store given" in err
    monkeypatch.setenv("MODELFN_STORE", fresh_bucket)
    rc, out, _err = cli(capsys, "publish", example_dir / "iris.onnx", "--name", "iris")
    assert rc == 0
    assert one_json(out)["uri"] == f"{fresh_bucket}/iris/1/model.onnx"


def test_publish_taken_version_is_refused(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path, aws: EmbeddedAWS
) -> None:
    iris, ranker = example_dir / "iris.onnx", example_dir / "ranker.onnx"
    rc, _out, _err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris", "--version", "1")
    assert rc == 0
    artifact_path = f"/{bucket_of(fresh_bucket)}/models/iris/1/model.onnx"
    puts = aws.count("PUT", artifact_path)

    rc, out, err = cli(capsys, "publish", ranker, "--store", fresh_bucket, "--name", "iris", "--version", "1")
    assert rc == 2
    assert out == ""
    assert "modelfn publish:" in err
    assert "'iris' version 1 already exists" in err
    assert aws.count("PUT", artifact_path) == puts  # refused before any upload
    store = open_store(fresh_bucket)
    assert file_sha256(iris) == ModelRepository(store).manifest("iris", 1).sha256
    assert store.read_bytes("iris/1/model.onnx") == iris.read_bytes()

    rc, out, err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris", "--version", "0")
    assert rc == 2
    assert "positive integer" in err


def test_publish_refuses_non_onnx(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, tmp_path: Path, aws: EmbeddedAWS
) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    bucket_path = f"/{bucket_of(fresh_bucket)}/"
    puts = aws.count("PUT", bucket_path)
    for extra in ([], ["--quantize", "int8"]):
        rc, out, err = cli(capsys, "publish", junk, "--store", fresh_bucket, "--name", "junk", *extra)
        assert rc == 2
        assert out == ""
        assert "not a valid ONNX model" in err
    rc, out, err = cli(capsys, "publish", tmp_path / "absent.onnx", "--store", fresh_bucket, "--name", "junk")
    assert rc == 2
    assert "does not exist" in err
    rc, out, err = cli(capsys, "publish", junk, "--store", fresh_bucket, "--name", "bad/name")
    assert rc == 2
    assert "invalid model name" in err
    assert aws.count("PUT", bucket_path) == puts
    assert open_store(fresh_bucket).list_dirs("") == []


def test_publish_quantize_int8(capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path) -> None:
    mlp = example_dir / "mlp.onnx"
    rc, out, _err = cli(capsys, "publish", mlp, "--store", fresh_bucket, "--name", "mlp", "--quiet")
    assert rc == 0
    rc, out, _err = cli(
        capsys, "publish", mlp, "--store", fresh_bucket, "--name", "mlp", "--quantize", "int8", "--quiet"
    )
    assert rc == 0
    published = one_json(out)
    assert published["version"] == 2
    store = open_store(fresh_bucket)
    repo = ModelRepository(store)
    fp32, int8 = repo.manifest("mlp", 1), repo.manifest("mlp", 2)
    assert fp32.quantization is None
    assert int8.quantization is not None
    assert int8.quantization["weight_type"] == "int8"
    assert int8.quantization["method"] == "dynamic"
    assert int8.quantization["source_size_bytes"] == mlp.stat().st_size
    assert int8.size_bytes < fp32.size_bytes / 2
    assert (int8.inputs, int8.outputs) == (fp32.inputs, fp32.outputs)
    uploaded = store.read_bytes("mlp/2/model.onnx")
    assert len(uploaded) == int8.size_bytes
    assert published["sha256"] == int8.sha256 != fp32.sha256
    assert file_sha256(mlp) == fp32.sha256


def test_manifest_fields(capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path) -> None:
    iris = example_dir / "iris.onnx"
    rc, _out, _err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris")
    assert rc == 0
    raw = json.loads(open_store(fresh_bucket).read_bytes("iris/1/manifest.json"))
    assert set(raw) >= MANIFEST_FIELDS
    assert raw["name"] == "iris"
    assert raw["version"] == 1
    assert raw["sha256"] == file_sha256(iris)
    assert raw["size_bytes"] == iris.stat().st_size
    assert raw["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]
    assert raw["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert raw["quantization"] is None
    created = datetime.fromisoformat(raw["created_at"])
    assert created.tzinfo is not None
    assert created <= datetime.now(UTC)


def test_artifact_uploaded_before_manifest(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path, aws: EmbeddedAWS
) -> None:
    start = len(aws.requests)
    rc, _out, _err = cli(
        capsys, "publish", example_dir / "iris.onnx", "--store", fresh_bucket, "--name", "iris", "--label", "stable"
    )
    assert rc == 0
    base = f"/{bucket_of(fresh_bucket)}/models/iris"
    puts = [path for method, path in aws.requests[start:] if method == "PUT" and path.startswith(base)]
    assert puts == [f"{base}/1/.claim", f"{base}/1/model.onnx", f"{base}/1/manifest.json", f"{base}/labels.json"]


def test_concurrent_publishers_never_share_a_version(fresh_bucket: str, example_dir: Path) -> None:
    """Both publishers pick "the next free version" at the same moment; the if-absent claim gives them two."""
    from concurrent.futures import ThreadPoolExecutor

    from modelfn_tools.publish import publish

    from modelfn.store import ModelRepository, open_store

    iris, ranker = example_dir / "iris.onnx", example_dir / "ranker.onnx"
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(publish, path, fresh_bucket, "m", None, None, None, False) for path in (iris, ranker) * 2
        ]
        records = [f.result() for f in futures]
    assert sorted(r["version"] for r in records) == [1, 2, 3, 4]
    repo = ModelRepository(open_store(fresh_bucket))
    for r in records:  # each version holds exactly the bytes its publisher uploaded
        assert repo.manifest("m", r["version"]).sha256 == r["sha256"]


def test_explicit_version_that_is_claimed_is_refused(fresh_bucket: str, example_dir: Path) -> None:
    from modelfn_tools.publish import publish

    from modelfn.errors import PublishError
    from modelfn.store import open_store

    open_store(fresh_bucket).write_bytes("m/5/.claim", b"")  # another publisher is uploading version 5
    with pytest.raises(PublishError, match="version 5 already exists"):
        publish(example_dir / "iris.onnx", fresh_bucket, "m", version=5, progress=False)


def test_label_command(capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path) -> None:
    for _ in range(2):
        assert cli(capsys, "publish", example_dir / "iris.onnx", "--store", fresh_bucket, "--name", "iris")[0] == 0
    rc, out, _err = cli(capsys, "label", "--store", fresh_bucket, "--name", "iris", "stable", "2")
    assert rc == 0
    assert one_json(out) == {"name": "iris", "labels": {"stable": 2}}
    rc, out, _err = cli(capsys, "label", "--store", fresh_bucket, "--name", "iris", "canary", "1")
    assert rc == 0
    assert one_json(out) == {"name": "iris", "labels": {"canary": 1, "stable": 2}}
    repo = ModelRepository(open_store(fresh_bucket))
    assert repo.labels("iris") == {"canary": 1, "stable": 2}
    assert repo.resolve("iris", None) == 2

    rc, out, err = cli(capsys, "label", "--store", fresh_bucket, "--name", "iris", "stable", "7")
    assert rc == 2
    assert out == ""
    assert "no published version 7" in err
    rc, out, err = cli(capsys, "label", "--store", fresh_bucket, "--name", "iris", "1bad", "1")
    assert rc == 2
    assert "invalid label" in err
    assert repo.labels("iris") == {"canary": 1, "stable": 2}


def test_models_command(capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path) -> None:
    iris, mlp = example_dir / "iris.onnx", example_dir / "mlp.onnx"
    assert cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris")[0] == 0
    assert cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris", "--label", "stable")[0] == 0
    args = ("publish", mlp, "--store", fresh_bucket, "--name", "mlp", "--quantize", "int8", "--quiet")
    assert cli(capsys, *args)[0] == 0
    store = open_store(fresh_bucket)
    store.write_bytes("iris/3/manifest.json", b"{}")  # a broken manifest is reported, not fatal
    repo = ModelRepository(store)

    rc, out, _err = cli(capsys, "models", "--store", fresh_bucket, "--json")
    assert rc == 0
    models = one_json(out)
    assert [m["name"] for m in models] == ["iris", "mlp"]
    iris_entry, mlp_entry = models
    assert iris_entry["labels"] == {"stable": 2}
    assert [v["version"] for v in iris_entry["versions"]] == [1, 2, 3]
    v1 = iris_entry["versions"][0]
    assert v1["sha256"] == file_sha256(iris)
    assert v1["size_bytes"] == iris.stat().st_size
    assert v1["quantization"] is None
    assert "not a valid manifest" in iris_entry["versions"][2]["error"]
    assert mlp_entry["labels"] == {}
    assert mlp_entry["versions"][0]["quantization"] == "int8"

    rc, out, _err = cli(capsys, "models", "--store", fresh_bucket)
    assert rc == 0
    lines = out.splitlines()
    assert "iris  (labels: stable→2)" in lines
    assert "mlp  (labels: -)" in lines
    sha_iris = file_sha256(iris)[:12]
    v_lines = [line for line in lines if line.startswith("  v")]
    assert len(v_lines) == 4
    assert v_lines[0].startswith("  v1 ")
    assert sha_iris in v_lines[0]
    assert "fp" in v_lines[0].split()
    assert v_lines[2].startswith("  v3  ERROR")
    int8_sha = repo.manifest("mlp", 1).sha256[:12]
    assert "int8" in v_lines[3].split()
    assert int8_sha in v_lines[3]


def test_quantize_command_is_close_to_fp32(
    capsys: pytest.CaptureFixture[str], example_dir: Path, tmp_path: Path
) -> None:
    src, dest = example_dir / "mlp.onnx", tmp_path / "out" / "mlp_int8.onnx"
    rc, out, _err = cli(capsys, "quantize", src, dest)
    assert rc == 0
    info = one_json(out)
    assert info["weight_type"] == "int8"
    assert info["output_size_bytes"] == dest.stat().st_size
    assert dest.stat().st_size < src.stat().st_size / 2

    proto = onnx.load(str(dest))
    onnx.checker.check_model(proto)
    assert any(i.data_type == onnx.TensorProto.INT8 for i in proto.graph.initializer)
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in proto.graph.node)

    fp32 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    logits_a, probs_a = fp32.run(["logits", "probabilities"], {"input": x})
    logits_b, probs_b = int8.run(["logits", "probabilities"], {"input": x})
    assert probs_b.shape == probs_a.shape == (256, 10)
    assert not np.array_equal(logits_a, logits_b)  # it really is a different (quantized) computation
    agreement = float(np.mean(logits_a.argmax(axis=1) == logits_b.argmax(axis=1)))
    assert agreement >= 0.9, agreement
    assert float(np.abs(probs_a - probs_b).max()) < 0.1
    np.testing.assert_allclose(probs_b.sum(axis=1), 1.0, rtol=1e-4)


def test_quantize_command_refuses_non_onnx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    rc, out, err = cli(capsys, "quantize", junk, tmp_path / "out.onnx")
    assert rc == 2
    assert out == ""
    assert "could not quantize" in err
    assert not (tmp_path / "out.onnx").exists()


def test_publish_quantize_per_channel(capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path) -> None:
    argv = ["--store", fresh_bucket, "--name", "mlp", "--quantize", "int8", "--per-channel", "--quiet"]
    rc, out, _err = cli(capsys, "publish", example_dir / "mlp.onnx", *argv)
    assert rc == 0
    manifest = ModelRepository(open_store(fresh_bucket)).manifest("mlp", one_json(out)["version"])
    assert manifest.quantization is not None and manifest.quantization["per_channel"] is True
