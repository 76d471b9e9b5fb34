"""`modelfn publish / label / models / quantize` through the real CLI, against moto's S3 over HTTP."""

from __future__ import annotations

import base64
import hashlib
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


# ---- external data -------------------------------------------------------------------------------------------------


class TinyNet:
    """A small torch MLP, big enough that torch's default exporter moves its weights to `model.onnx.data`."""

    @staticmethod
    def export(path: Path) -> Path:
        import warnings

        import torch

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3), torch.nn.Softmax(-1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation notices
            torch.onnx.export(net.eval(), (torch.randn(2, 4),), str(path))  # the exporter's defaults
        return path


@pytest.fixture(scope="module")
def torch_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = TinyNet.export(tmp_path_factory.mktemp("torch") / "model.onnx")
    proto = onnx.load(str(path), load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "torch's default export kept every weight inline"
    assert {e.value for t in external for e in t.external_data if e.key == "location"} == {"model.onnx.data"}
    assert (path.parent / "model.onnx.data").stat().st_size > 0
    return path


def _linear(subgraph: bool = False) -> onnx.ModelProto:
    """x @ W + b: tensors as an initializer (W) and a node attribute (b). With `subgraph`, an If whose branch scales
    by a constant adds a tensor inside a subgraph (which onnxruntime 1.32 cannot load from external data, so it is
    only used to check what publish finds)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w, b, s = (rng.standard_normal(shape).astype(np.float32) for shape in ((4, 3), (3,), (3,)))
    out = helper.make_tensor_value_info
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(b, "b")),
        helper.make_node("Add", ["xw", "b"], ["out" if not subgraph else "y"]),
    ]
    if subgraph:
        then = helper.make_graph(
            [
                helper.make_node("Constant", [], ["scale"], value=numpy_helper.from_array(s, "scale")),
                helper.make_node("Mul", ["y", "scale"], ["t"]),
            ],
            "then",
            [],
            [out("t", TensorProto.FLOAT, ["N", 3])],
        )
        orelse = helper.make_graph(
            [helper.make_node("Identity", ["y"], ["e"])], "else", [], [out("e", TensorProto.FLOAT, ["N", 3])]
        )
        nodes += [
            helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "cond")),
            helper.make_node("If", ["cond"], ["out"], then_branch=then, else_branch=orelse),
        ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [out("x", TensorProto.FLOAT, ["N", 4])],
        [out("out", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save_external(folder: Path, one_file: bool, subgraph: bool = False) -> Path:
    """onnx.save_model with external data: one file under a subfolder, or one file per tensor (named after it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights").mkdir(exist_ok=True)
    path = folder / "net.onnx"
    onnx.save_model(
        _linear(subgraph),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location="weights/params.bin" if one_file else None,
        size_threshold=0,
        convert_attribute=True,
    )
    return path


def test_external_data_is_found_in_attributes_and_subgraphs(tmp_path: Path) -> None:
    from modelfn_tools.publish import external_data, load_proto

    path = _save_external(tmp_path, one_file=False, subgraph=True)
    files = external_data(path, load_proto(path))
    assert [(f.path, f.source) for f in files] == [(n, tmp_path / n) for n in ("W", "b", "cond", "scale")]


def _predict_like_ort(model_path: Path, rows: int = 2) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A random batch for the model's single FP32 input, and onnxruntime's own answer on the file itself."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    shape = [d if isinstance(d, int) else rows for d in spec.shape]
    feed = {spec.name: np.random.default_rng(7).standard_normal(shape).astype(np.float32)}
    return feed, dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


@pytest.mark.parametrize("kind", ["torch", "one-file", "per-tensor"])
def test_publish_external_data_uploads_every_file(
    capsys: pytest.CaptureFixture[str],
    fresh_bucket: str,
    torch_export: Path,
    tmp_path: Path,
    aws: EmbeddedAWS,
    kind: str,
) -> None:
    model = torch_export if kind == "torch" else _save_external(tmp_path / "m", one_file=kind == "one-file")
    expected = {
        "torch": ["model.onnx.data"],
        "one-file": ["weights/params.bin"],
        "per-tensor": ["W", "b"],  # `b` is a Constant node's attribute
    }[kind]
    start = len(aws.requests)
    rc, out, err = cli(capsys, "publish", model, "--store", fresh_bucket, "--name", "net")
    assert rc == 0, err
    assert one_json(out) == {
        "name": "net",
        "version": 1,
        "sha256": file_sha256(model),
        "uri": f"{fresh_bucket}/net/1/model.onnx",
    }
    store = open_store(fresh_bucket)
    manifest = ModelRepository(store).manifest("net", 1)
    assert [f.path for f in manifest.files] == sorted(expected)
    for f in manifest.files:
        local = model.parent / f.path
        assert (f.sha256, f.size_bytes) == (file_sha256(local), local.stat().st_size)
        assert store.read_bytes(f"net/1/{f.path}") == local.read_bytes()
    assert store.read_bytes("net/1/model.onnx") == model.read_bytes()
    base = f"/{bucket_of(fresh_bucket)}/models/net/1"
    puts = [path for method, path in aws.requests[start:] if method == "PUT" and path.startswith(base)]
    data = [f"{base}/{p}" for p in sorted(expected)]
    assert puts == [f"{base}/.claim", *data, f"{base}/model.onnx", f"{base}/manifest.json"]  # manifest last


@pytest.mark.parametrize("kind", ["torch", "per-tensor"])
def test_publish_external_data_then_load(fresh_bucket: str, torch_export: Path, tmp_path: Path, kind: str) -> None:
    """End to end: the registry downloads and verifies every file, and answers as onnxruntime on the original."""
    from modelfn_tools.publish import publish

    from modelfn.registry import ModelRegistry

    model = torch_export if kind == "torch" else _save_external(tmp_path / "m", one_file=False)
    publish(model, fresh_bucket, "net", progress=False)
    feed, expected = _predict_like_ort(model)
    loaded = ModelRegistry.from_uri(fresh_bucket).get("net")
    got = loaded.predict(feed)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)


def _point_to(src: Path, dest: Path, location: str) -> Path:
    """A copy of src's graph whose every external tensor names `location`."""
    from modelfn_tools.publish import model_tensors

    proto = onnx.load(str(src), load_external_data=False)
    for tensor in model_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(proto.SerializeToString())
    return dest


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("dotdot", "has a '..' segment, leaving the model's folder"),
        ("absolute", "is an absolute path"),
        ("symlinked-file", "outside the model's folder"),
        ("symlinked-folder", "outside the model's folder"),
        ("reserved", "is a name the store layout reserves"),
        ("reserved-signature", "is a name the store layout reserves"),
        ("missing", "is not a file next to the model"),
    ],
)
def test_publish_refuses_external_data_outside_its_folder(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, tmp_path: Path, aws: EmbeddedAWS, case: str, message: str
) -> None:
    source = _save_external(tmp_path / "src", one_file=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "params.bin").write_bytes((source.parent / "weights" / "params.bin").read_bytes())
    folder = tmp_path / "model"
    folder.mkdir()
    location = {
        "dotdot": "../outside/params.bin",
        "absolute": str(outside / "params.bin"),
        "symlinked-file": "params.bin",
        "symlinked-folder": "weights/params.bin",
        "reserved": "manifest.json",
        "reserved-signature": "model.sig",
        "missing": "absent.bin",
    }[case]
    if case == "symlinked-file":
        (folder / "params.bin").symlink_to(outside / "params.bin")
    if case == "symlinked-folder":
        (folder / "weights").symlink_to(outside, target_is_directory=True)
    if case.startswith("reserved"):
        (folder / location).write_bytes((outside / "params.bin").read_bytes())
    model = _point_to(source, folder / "model.onnx", location)
    bucket_path = f"/{bucket_of(fresh_bucket)}/"
    puts = aws.count("PUT", bucket_path)
    for extra in ([], ["--quantize", "int8"]):
        rc, out, err = cli(capsys, "publish", model, "--store", fresh_bucket, "--name", "net", *extra)
        assert (rc, out) == (2, "")
        assert err.startswith("modelfn publish: tensor ")
        assert message in err
        assert repr(location) in err
    assert aws.count("PUT", bucket_path) == puts  # refused before anything was written
    assert open_store(fresh_bucket).list_dirs("") == []


def test_publish_quantize_external_data(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, torch_export: Path
) -> None:
    """The quantized copy of a model with external data is correct (one file, as it fits in one)."""
    rc, out, err = cli(capsys, "publish", torch_export, "--store", fresh_bucket, "--name", "net", "--quantize", "int8")
    assert rc == 0, err
    store = open_store(fresh_bucket)
    manifest = ModelRepository(store).manifest("net", one_json(out)["version"])
    assert manifest.quantization is not None
    assert manifest.quantization["weight_type"] == "int8"
    source_size = torch_export.stat().st_size + (torch_export.parent / "model.onnx.data").stat().st_size
    assert manifest.quantization["source_size_bytes"] == source_size
    assert manifest.files == []
    quantized = onnx.load_from_string(store.read_bytes("net/1/model.onnx"))
    assert any(i.data_type == onnx.TensorProto.INT8 for i in quantized.graph.initializer)
    feed, expected = _predict_like_ort(torch_export)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, feed)
    (want,) = expected.values()
    assert np.abs(got - want).max() < 0.02


def test_publish_quantize_keeps_large_models_external(
    capsys: pytest.CaptureFixture[str],
    fresh_bucket: str,
    example_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the one-file limit (lowered here) a model with external data is quantized with external data out, and
    published like any: the data file uploaded beside the graph and recorded in the manifest."""
    import modelfn_tools.quantize

    source = tmp_path / "src" / "mlp.onnx"
    source.parent.mkdir()
    onnx.save_model(
        onnx.load(str(example_dir / "mlp.onnx")), str(source), save_as_external_data=True, location="mlp.onnx.data"
    )
    assert source.stat().st_size < 10_000
    monkeypatch.setattr(modelfn_tools.quantize, "INLINE_LIMIT", 0)
    rc, out, err = cli(capsys, "publish", source, "--store", fresh_bucket, "--name", "mlp", "--quantize", "int8")
    assert rc == 0, err
    store = open_store(fresh_bucket)
    manifest = ModelRepository(store).manifest("mlp", one_json(out)["version"])
    assert [f.path for f in manifest.files] == ["model.onnx.data"]
    folder = tmp_path / "downloaded"
    folder.mkdir()
    for relative in ("model.onnx", "model.onnx.data"):
        (folder / relative).write_bytes(store.read_bytes(f"mlp/1/{relative}"))
    assert file_sha256(folder / "model.onnx.data") == manifest.files[0].sha256
    assert manifest.files[0].size_bytes < (source.parent / "mlp.onnx.data").stat().st_size / 3  # int8 weights
    feed, expected = _predict_like_ort(source)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], feed)[0]
    assert np.abs(got - expected["probabilities"]).max() < 0.1
    assert float(np.mean(got.argmax(1) == expected["probabilities"].argmax(1))) >= 0.5


# ---- versions are immutable ----------------------------------------------------------------------------------------


def test_publish_onto_a_version_published_without_a_claim_is_refused(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path, torch_export: Path, aws: EmbeddedAWS
) -> None:
    """A version whose claim is gone (published by an older modelfn, or copied in): its manifest alone makes it
    taken. On main the claim went through and the new artifact overwrote the old one before the manifest write
    was refused, corrupting version 1 for good."""
    import boto3

    iris = example_dir / "iris.onnx"
    assert cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris", "--version", "1")[0] == 0
    boto3.client("s3").delete_object(Bucket=bucket_of(fresh_bucket), Key="models/iris/1/.claim")
    store = open_store(fresh_bucket)
    before = {k: hashlib.sha256(store.read_bytes(f"iris/1/{k}")).hexdigest() for k in ("model.onnx", "manifest.json")}
    bucket_path = f"/{bucket_of(fresh_bucket)}/"
    puts = aws.count("PUT", bucket_path)
    for model in (example_dir / "ranker.onnx", torch_export):  # the second has external data, uploaded first
        rc, out, err = cli(capsys, "publish", model, "--store", fresh_bucket, "--name", "iris", "--version", "1")
        assert (rc, out) == (2, "")
        assert "'iris' version 1 already exists" in err
    assert aws.count("PUT", bucket_path) == puts
    after = {k: hashlib.sha256(store.read_bytes(f"iris/1/{k}")).hexdigest() for k in ("model.onnx", "manifest.json")}
    assert after == before
    assert after["model.onnx"] == file_sha256(iris)
    assert ModelRepository(store).manifest("iris", 1).sha256 == file_sha256(iris)


# ---- signatures: ZipMap, features ----------------------------------------------------------------------------------


def _logistic_regression(path: Path, zipmap: bool) -> Path:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(np.int64))
    options = None if zipmap else {"zipmap": False}
    path.write_bytes(to_onnx(model, x[:1], options=options).SerializeToString())
    return path


def test_publish_refuses_zipmap_with_the_fix(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, tmp_path: Path
) -> None:
    model = _logistic_regression(tmp_path / "lr.onnx", zipmap=True)
    rc, out, err = cli(capsys, "publish", model, "--store", fresh_bucket, "--name", "lr")
    assert (rc, out) == (2, "")
    assert "output 'output_probability' has type seq(map(int64, tensor(float)))" in err
    assert "a sequence of maps (skl2onnx's ZipMap" in err
    assert "options={'zipmap': False}" in err
    assert "options={id(model): {'zipmap': False}}" in err
    assert "does not load in onnxruntime" not in err
    assert open_store(fresh_bucket).list_dirs("") == []

    fixed = _logistic_regression(tmp_path / "lr_fixed.onnx", zipmap=False)
    rc, out, err = cli(capsys, "publish", fixed, "--store", fresh_bucket, "--name", "lr")
    assert rc == 0, err
    manifest = ModelRepository(open_store(fresh_bucket)).manifest("lr", 1)
    assert [(o.name, o.datatype, o.shape) for o in manifest.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]


def test_publish_features(capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path) -> None:
    iris = example_dir / "iris.onnx"
    names = "sepal_length, sepal_width,petal_length,petal_width"
    rc, out, err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris", "--features", names)
    assert rc == 0, err
    raw = json.loads(open_store(fresh_bucket).read_bytes("iris/1/manifest.json"))
    assert raw["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert (raw["name"], raw["version"]) == ("iris", 1)  # the manifest names where it sits
    rc, out, err = cli(capsys, "publish", iris, "--store", fresh_bucket, "--name", "iris")
    assert rc == 0, err
    assert ModelRepository(open_store(fresh_bucket)).manifest("iris", 2).features is None

    refused = [
        (iris, "a,b,c", "--features gives 3 names, but input float_input FP32[-1, 4] takes 4 features"),
        (iris, "a,b,c,d,e", "--features gives 5 names, but input float_input FP32[-1, 4] takes 4 features"),
        (iris, "a,,c,d", "has an empty name"),
        (iris, "a,b,a,d", "names a more than once"),
        (iris, "id,b,c,d", "cannot name a feature 'id'"),
        (example_dir / "ranker.onnx", "a,b,c,d", "a single [N, K] input; this model has dense FP32[-1, 4], item_ids"),
    ]
    for model, features, message in refused:
        rc, out, err = cli(capsys, "publish", model, "--store", fresh_bucket, "--name", "x", "--features", features)
        assert (rc, out) == (2, ""), features
        assert message in err, err
    assert ModelRepository(open_store(fresh_bucket)).models() == ["iris"]


# ---- signing ------------------------------------------------------------------------------------------------------


def test_publish_sign_key_stores_the_signature_before_the_manifest(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path, aws: EmbeddedAWS, tmp_path: Path
) -> None:
    from tests.registry.test_signing import write_key_pair

    private, _ = write_key_pair(tmp_path, "k")
    start = len(aws.requests)
    rc, out, err = cli(
        capsys, "publish", example_dir / "iris.onnx", "--store", fresh_bucket, "--name", "iris", "--sign-key", private
    )
    assert rc == 0, err
    assert set(one_json(out)) == {"name", "version", "sha256", "uri"}  # the contract's object, as it was
    base = f"/{bucket_of(fresh_bucket)}/models/iris/1"
    puts = [path for method, path in aws.requests[start:] if method == "PUT" and path.startswith(base)]
    assert puts == [f"{base}/.claim", f"{base}/model.onnx", f"{base}/model.sig", f"{base}/manifest.json"]
    store = open_store(fresh_bucket)
    recorded = ModelRepository(store).manifest("iris", 1).signature_bundle
    assert recorded is not None
    bundle = store.read_bytes("iris/1/model.sig")
    assert (recorded.path, recorded.sha256, recorded.size_bytes) == (
        "model.sig",
        hashlib.sha256(bundle).hexdigest(),
        len(bundle),
    )
    assert json.loads(bundle)["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    assert statement["subject"][0]["name"] == "iris/1"
    assert statement["predicate"]["resources"] == [
        {"name": "model.onnx", "algorithm": "sha256", "digest": file_sha256(example_dir / "iris.onnx")}
    ]


def test_publish_refuses_a_bad_sign_key_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], fresh_bucket: str, example_dir: Path, aws: EmbeddedAWS, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.registry.test_signing import write_key_pair

    _, public = write_key_pair(tmp_path, "k")
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    puts = aws.count("PUT", f"/{bucket_of(fresh_bucket)}/")
    for key, why in (
        (tmp_path / "absent.pem", "No such file"),
        (public, "Are you sure this is a private key?"),
        (rsa_key, "not an elliptic-curve key"),
    ):
        rc, out, err = cli(
            capsys, "publish", example_dir / "iris.onnx", "--store", fresh_bucket, "--name", "iris", "--sign-key", key
        )
        assert (rc, out) == (2, "")
        assert err.startswith(f"modelfn publish: --sign-key {key}: not a usable private key")
        assert why in err
        assert "expected an unencrypted EC private key (P-256, P-384 or P-521) in PEM" in err
    assert aws.count("PUT", f"/{bucket_of(fresh_bucket)}/") == puts
    assert open_store(fresh_bucket).list_dirs("") == []
