"""`modelfn import-triton`: a Triton model repository with two versions whose weights differ is published and
served (`modelfn serve`, `tritonclient.http`) with each version's own weights, equal to onnxruntime on each file;
`version_policy` picks the versions Triton would serve; a config that does not match its ONNX model, or names
another platform, is refused with a message naming the problem and nothing written; config.pbtxt is read as
protobuf's own text_format reads it with Triton's model_config.proto."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient
import tritonclient.http as httpclient
from modelfn_tools.cli import main
from modelfn_tools.examples import build_mlp
from modelfn_tools.localserver import serve_process
from modelfn_tools.pbtxt import parse
from modelfn_tools.triton_import import TritonModel, import_triton, read_config

from modelfn.errors import PublishError
from modelfn.store import ModelRepository, open_store

CONFIG = """
# a classifier, two versions
name: "clf"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { all { } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
output [
  { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "probabilities", data_type: TYPE_FP32, dims: [ -1 ] }
]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""


def write_repo(root: Path, config: str = CONFIG, versions: tuple[int, ...] = (1, 2), name: str = "clf") -> Path:
    """A Triton repository: <name>/config.pbtxt and <name>/<v>/model.onnx, each version its own weights."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config)
    for v in versions:
        build_mlp(folder / str(v) / "model.onnx", sizes=(4, 8, 3), seed=v)
    return root


def published(store: str, name: str = "clf") -> list[int]:
    return ModelRepository(open_store(store)).versions(name)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


# ---- import and serve --------------------------------------------------------------------------------------------
def test_two_versions_import_and_serve_their_own_weights(
    tmp_path: Path, fresh_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = write_repo(tmp_path / "repo")
    code, records, err = run_cli(["import-triton", str(repo), "--store", fresh_bucket, "--quiet"], capsys)
    assert code == 0, err
    assert [(r["name"], r["version"], r["status"]) for r in records] == [
        ("clf", 1, "published"),
        ("clf", 2, "published"),
    ]
    x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    (tmp_path / "serve").mkdir()
    with serve_process(["--store", fresh_bucket], tmp_path / "serve") as base:
        client = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
        answers = {}
        for v in (1, 2):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer("clf", [inp], model_version=str(v))
            session = ort.InferenceSession(
                str(repo / "clf" / str(v) / "model.onnx"), providers=["CPUExecutionProvider"]
            )
            (expected,) = session.run(["logits"], {"input": x})
            answers[v] = result.as_numpy("logits")
            np.testing.assert_allclose(answers[v], expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(answers[1], answers[2])  # each version its own weights
        config = client.get_model_config("clf")
        assert (config["max_batch_size"] > 0, config["input"][0]["dims"]) == (True, [4])
        client.close()
    code, again, err = run_cli(["import-triton", str(repo), "--store", fresh_bucket], capsys)
    assert code == 0, err
    assert [r["status"] for r in again] == ["present", "present"]  # a re-run changes nothing


def test_a_version_already_published_with_other_bytes_is_refused(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    repo = write_repo(tmp_path / "repo")
    import_triton(repo, store)
    build_mlp(repo / "clf" / "2" / "model.onnx", sizes=(4, 8, 3), seed=9)
    build_mlp(repo / "clf" / "3" / "model.onnx", sizes=(4, 8, 3), seed=3)
    with pytest.raises(PublishError, match=r"version 2 is already in .* with other bytes"):
        import_triton(repo, store)
    assert published(store) == [1, 2]  # version 3 was not published either


# ---- version_policy ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "versions"),
    [
        ("", [3]),  # Triton's default: latest 1
        ("version_policy: { latest { num_versions: 2 } }", [2, 3]),
        ("version_policy: { latest: { num_versions: 9 } }", [1, 2, 3]),
        ("version_policy { all {} }", [1, 2, 3]),
        ("version_policy: { specific { versions: [1, 3] } }", [1, 3]),
        ("version_policy: { specific { versions: 2 } }", [2]),
    ],
)
def test_version_policy_picks_what_triton_would_serve(tmp_path: Path, policy: str, versions: list[int]) -> None:
    config = f'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n{policy}\n'
    repo = write_repo(tmp_path / "repo", config, versions=(1, 2, 3))
    (repo / "clf" / "01").mkdir()  # Triton ignores a folder with a leading zero, and non-numeric ones
    (repo / "clf" / "latest").mkdir()
    store = str(tmp_path / "store")
    assert [r["version"] for r in import_triton(repo, store)] == versions
    assert published(store) == versions


def test_a_missing_config_is_completed_from_the_model_as_triton_does(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for v in (1, 2):
        build_mlp(repo / "auto" / str(v) / "model.onnx", sizes=(4, 8, 3), seed=v)
    store = str(tmp_path / "store")
    assert [(r["name"], r["version"]) for r in import_triton(repo, store)] == [("auto", 2)]


def test_a_model_folder_with_external_data_and_some_outputs_configured(tmp_path: Path) -> None:
    """Triton takes `<v>/model.onnx/` as a folder holding model.onnx and its external data; a config may list
    only some of the model's outputs."""
    import onnx

    source = build_mlp(tmp_path / "src.onnx", sizes=(4, 8, 3), seed=5)
    folder = tmp_path / "repo" / "clf" / "1" / "model.onnx"
    folder.mkdir(parents=True)
    proto = onnx.load(str(source))
    onnx.save(proto, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "repo" / "clf" / "config.pbtxt").write_text(
        CONFIG.split("output [", maxsplit=1)[0] + 'output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] } ]'
    )
    store = str(tmp_path / "store")
    (record,) = import_triton(tmp_path / "repo", store)
    assert (record["version"], record["status"]) == (1, "published")
    manifest = ModelRepository(open_store(store)).manifest("clf", 1)
    assert [f.path for f in manifest.files] == ["weights.bin"]


# ---- refusals ----------------------------------------------------------------------------------------------------
BAD = [
    (CONFIG.replace("TYPE_FP32\n", "TYPE_INT64\n"), r"input 'input' is TYPE_INT64 in config.pbtxt but TYPE_FP32"),
    (CONFIG.replace("dims: [ 4 ]", "dims: [ 5 ]"), r"input 'input' has dims \[5\] in config.pbtxt but \[4\]"),
    (CONFIG.replace("dims: [ 4 ]", "dims: [ 1, 4 ]"), r"dims \[1, 4\] in config.pbtxt but \[4\] after the batch"),
    (CONFIG.replace("max_batch_size: 8", "max_batch_size: 0"), r"dims \[4\] in config.pbtxt but \[-1, 4\]"),
    (CONFIG.replace('name: "input"', 'name: "x"'), r"input\(s\) \['x'\] in config.pbtxt are not the model's"),
    (CONFIG.replace('{ name: "logits"', '{ name: "scores"'), r"output\(s\) \['scores'\] in config.pbtxt"),
    (CONFIG.replace("onnxruntime_onnx", "pytorch_libtorch"), r"platform 'pytorch_libtorch' is not ONNX"),
    (CONFIG.replace('platform: "onnxruntime_onnx"', 'backend: "python"'), r"backend 'python' is not ONNX"),
    (CONFIG.replace('name: "clf"', 'name: "other"'), r"name 'other' is not its folder's name 'clf'"),
    (CONFIG.replace("{ all { } }", "{ specific { versions: [2, 4] } }"), r"names version\(s\) \[4\]"),
    (CONFIG.replace("max_batch_size", "max_bacth_size"), r"unknown field\(s\) max_bacth_size"),
    (CONFIG.replace("TYPE_FP32\n", "TYPE_BF16\n"), r"data_type TYPE_BF16 is not one modelfn serves"),
    (CONFIG.replace("dims: [ 4 ]", 'dims: [ "4" ]'), r"dims must be integers"),
    (CONFIG.replace("max_batch_size: 8", "max_batch_size: 8 }"), r"config.pbtxt:5: expected a field name"),
    (CONFIG.replace('platform: "onnxruntime_onnx"', "platform: onnxruntime_onnx"), r"'platform' must be a quoted"),
]


@pytest.mark.parametrize(("config", "message"), BAD, ids=[m for _, m in BAD])
def test_a_config_that_does_not_fit_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, message: str
) -> None:
    repo = write_repo(tmp_path / "repo", CONFIG.replace('"clf"', '"aaa"'), name="aaa")  # a good model, first
    write_repo(repo, config)
    store = str(tmp_path / "store")
    code, _, err = run_cli(["import-triton", str(repo), "--store", store], capsys)
    assert code == 2
    assert err.startswith("modelfn import-triton: ") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "store").exists() or published(store, "aaa") == []


def test_a_model_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pt" / "1").mkdir(parents=True)
    (repo / "pt" / "1" / "model.pt").write_bytes(b"torchscript")
    (repo / "pt" / "config.pbtxt").write_text('backend: "onnxruntime"\ndefault_model_filename: "model.pt"\n')
    with pytest.raises(PublishError, match=r"model.pt is not an .onnx file"):
        import_triton(repo, str(tmp_path / "store"))
    (repo / "pt" / "config.pbtxt").write_text("")
    with pytest.raises(PublishError, match=r"model.onnx is missing"):
        import_triton(repo, str(tmp_path / "store"))
    with pytest.raises(PublishError, match="not a folder"):
        import_triton(tmp_path / "nothing", str(tmp_path / "store"))


# ---- reading config.pbtxt as protobuf does -----------------------------------------------------------------------
def _model_config_pb2() -> ModuleType:
    """Triton's model_config.proto as tritonclient ships it compiled (loaded by path: its package imports grpc)."""
    path = Path(os.path.dirname(tritonclient.__file__)) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNTAX = [
    CONFIG,
    # angle brackets, ';' separators, a list of messages after ':', concatenated strings, reshape, an empty policy list
    """name: "cl" 'f' ; platform: "onnxruntime_onnx"; max_batch_size: 0
    input: [ < name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] > ]
    output < name: "logits" data_type: TYPE_FP32 dims: -1 dims: 3 >
    output { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] reshape: { shape: [ 1, 3 ] } }
    version_policy { specific { versions: [ ] versions: 1 } }
    parameters { key: "x" value: { string_value: "a\\"b" } }""",
    """name: "clf" backend: "onnxruntime" version_policy { latest { num_versions: 2 } } max_batch_size: 16
    optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
    model_warmup [ { name: "w" batch_size: 1 inputs { key: "input" value: { data_type: TYPE_FP32 dims: 4
      zero_data: true } } } ]""",
]


def _from_proto(config: Any) -> tuple[Any, ...]:
    """The fields the import reads, from protobuf's parse."""
    policy = config.version_policy.WhichOneof("policy_choice")

    def tensors(items: Any) -> list[tuple[str, str, list[int]]]:
        pb2 = _model_config_pb2()
        return [
            (
                t.name,
                pb2.DataType.Name(t.data_type).removeprefix("TYPE_").replace("STRING", "BYTES"),
                list(t.reshape.shape) if t.HasField("reshape") else list(t.dims),
            )
            for t in items
        ]

    versions = {
        "latest": lambda: [config.version_policy.latest.num_versions],
        "specific": lambda: list(config.version_policy.specific.versions),
        "all": list,
        None: lambda: [1],
    }[policy]()
    return (
        config.name,
        config.platform or None,
        config.backend or None,
        config.max_batch_size,
        tensors(config.input),
        tensors(config.output),
        (policy or "latest", versions),
    )


def _from_ours(model: TritonModel) -> tuple[Any, ...]:
    return (
        model.name,
        model.platform,
        model.backend,
        model.max_batch_size,
        [(t.name, t.datatype, t.dims) for t in model.inputs],
        [(t.name, t.datatype, t.dims) for t in model.outputs],
        model.policy,
    )


@pytest.mark.parametrize("text", SYNTAX, ids=["plain", "variants", "options"])
def test_config_is_read_as_protobuf_text_format_reads_it(tmp_path: Path, text: str) -> None:
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    folder = tmp_path / "clf"
    folder.mkdir()
    (folder / "config.pbtxt").write_text(text)
    expected = _from_proto(text_format.Parse(text, pb2.ModelConfig()))
    assert _from_ours(read_config(folder)) == expected
    assert parse(text, "x")  # and the raw parse keeps every field


def test_parse_errors_name_the_file_and_line() -> None:
    with pytest.raises(PublishError, match=r"c.pbtxt:3: expected '\]'"):
        parse('name: "a"\n\ninput: [ { name: "x" } { name: "y" } ]', "c.pbtxt")
    with pytest.raises(PublishError, match=r"c.pbtxt:1: expected '}', the file ends"):
        parse("input { name: 'x'", "c.pbtxt")
    with pytest.raises(PublishError, match=r"field 'name': expected ':'"):
        parse('name "x"', "c.pbtxt")
    with pytest.raises(PublishError, match=r"c.pbtxt:2: cannot read"):
        parse('name: "x"\n  @', "c.pbtxt")
    assert parse("a: 0x10 b: -1.5e3 c: 2f d: -inf e: true", "c") == {
        "a": [16],
        "b": [-1500.0],
        "c": [2.0],
        "d": [float("-inf")],
        "e": ["true"],
    }
