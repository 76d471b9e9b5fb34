"""Execution providers: TensorRT, CUDA, CPU in order of preference, from MODELFN_PROVIDERS or per model from
MODELFN_MODELS_CONFIG. On this CPU-only machine a model asked to run on TensorRT/CUDA loads and serves on CPU with
exactly one warning per load; provider options (GPU id, TensorRT engine cache) are what the GPU image will use."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from modelfn.http import create_app
from modelfn.model import onnx as session_mod
from modelfn.model.onnx import CPU, CUDA, TENSORRT, choose_providers, load_session, provider_options, usable_providers
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

GPU_FIRST = f"{TENSORRT},{CUDA}"


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "execution providers" in r.getMessage()
    ]


def test_env_providers_fall_back_to_cpu_with_one_warning_per_load(
    s3_store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODELFN_PROVIDERS", GPU_FIRST)
    settings = Settings()
    assert settings.provider_list == [TENSORRT, CUDA]
    registry = ModelRegistry.from_uri(s3_store, settings, ["mlp", "iris"])
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        mlp = registry.get("mlp")
        assert fallback_warnings(caplog) == [
            f"model 'mlp' version 2: execution providers {[TENSORRT, CUDA]} are not available; "
            f"asked for {[TENSORRT, CUDA]}, using {[CPU]}"
        ]
        registry.get("mlp")  # cached: no second load, no second warning
        registry.get("mlp", "fp32")  # another version: its own load, its own warning
        registry.get("iris")
        messages = fallback_warnings(caplog)
    assert len(messages) == 3
    assert [m.split(":")[0] for m in messages] == [
        "model 'mlp' version 2",
        "model 'mlp' version 1",
        "model 'iris' version 1",
    ]
    assert mlp.providers == [CPU]
    assert mlp.session.get_providers() == [CPU]

    client = TestClient(create_app(registry))
    rows = np.ones((2, 256), dtype=np.float32)
    r = client.post(
        "/v2/models/mlp/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 256], "data": rows.ravel().tolist()}]},
    )
    assert r.status_code == 200, r.text
    probs = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
    assert probs["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(probs["data"]).reshape(2, 10).sum(axis=1), [1.0, 1.0], rtol=1e-5)


def test_per_model_config_applies_only_to_that_model(
    s3_store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MODELFN_PROVIDERS", raising=False)
    monkeypatch.setenv("MODELFN_MODELS_CONFIG", json.dumps({"mlp": {"providers": GPU_FIRST, "cuda_device": 1}}))
    settings = Settings()
    assert settings.for_model("mlp").provider_list == [TENSORRT, CUDA]
    assert settings.for_model("mlp").cuda_device == 1
    assert settings.for_model("iris").provider_list == [CPU]
    registry = ModelRegistry.from_uri(s3_store, settings, ["mlp", "iris"])
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        iris = registry.get("iris")
        assert fallback_warnings(caplog) == []
        mlp = registry.get("mlp")
        messages = fallback_warnings(caplog)
    assert len(messages) == 1
    assert messages[0].startswith("model 'mlp' version 2: ")
    assert iris.providers == mlp.providers == [CPU]
    r = TestClient(create_app(registry)).post("/v1/models/mlp:predict", json={"instances": [[0.5] * 256]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"][0]["probabilities"]) == 10


def test_cpu_only_request_logs_nothing(example_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        sess = load_session(example_dir / "iris.onnx", Settings(providers=CPU), what="model 'iris' version 1")
    assert sess.get_providers() == [CPU]
    assert fallback_warnings(caplog) == []


def test_gpu_build_without_a_gpu_falls_back_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime-gpu lists CUDA and TensorRT even where no GPU is attached (e.g. `docker run` without --gpus):
    the driver is asked first, so the fallback is our one warning, not onnxruntime's own retry at session time."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(session_mod, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(session_mod, "tensorrt_installed", lambda: True)
    assert usable_providers() == [CPU]
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        assert choose_providers([TENSORRT, CUDA, CPU], what="model 'm' version 1") == [CPU]
    assert len(fallback_warnings(caplog)) == 1


def test_gpu_without_tensorrt_libraries_uses_cuda(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(session_mod, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(session_mod, "tensorrt_installed", lambda: False)
    assert usable_providers(device_id=1) == [CUDA, CPU]
    assert usable_providers(device_id=2) == [CPU]  # only GPUs 0 and 1 exist
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        assert choose_providers([TENSORRT, CUDA, CPU]) == [CUDA, CPU]
    [message] = fallback_warnings(caplog)
    assert f"{[TENSORRT]} are not available" in message
    assert f"using {[CUDA, CPU]}" in message


def test_real_probes_answer_on_this_machine() -> None:
    """No GPU here: the driver probe finds no device (or no driver) and nothing GPU-side is usable."""
    assert session_mod.cuda_device_count() >= 0
    assert isinstance(session_mod.tensorrt_installed(), bool)
    assert CPU in usable_providers()
    if session_mod.cuda_device_count() == 0:
        assert CUDA not in usable_providers()
        assert TENSORRT not in usable_providers()


def test_provider_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_CUDA_DEVICE", "3")
    monkeypatch.setenv("MODELFN_CACHE_DIR", str(tmp_path))
    settings = Settings(trt_fp16=True)
    assert settings.cuda_device == 3
    options = dict(provider_options([TENSORRT, CUDA, CPU], settings))
    assert options[CUDA] == {"device_id": 3}
    assert options[CPU] == {}
    trt = options[TENSORRT]
    assert trt["device_id"] == 3
    assert trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert trt["trt_timing_cache_path"] == str(tmp_path / "tensorrt")
    assert trt["trt_fp16_enable"] is True
    assert dict(provider_options([CUDA], Settings()))[CUDA] == {"device_id": 3}
    monkeypatch.delenv("MODELFN_CUDA_DEVICE")
    assert dict(provider_options([CUDA], Settings()))[CUDA] == {"device_id": 0}
