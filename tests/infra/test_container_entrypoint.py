"""`python -m modelfn.container serve` as a process, as the GPU image runs it (no Docker here): SageMaker's /ping and
/invocations, the HTTP API, Prometheus /metrics, CPU fallback when asked for TensorRT/CUDA, and a SIGTERM that lets
an in-flight request finish before the process exits 0."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import free_port

from modelfn.container import ServerConfig, build_config, main

from .conftest import Container, Reference, start_container, stop_container

ROWS = np.random.default_rng(7).normal(size=(3, 256)).astype(np.float32)
IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def v2_body(rows: np.ndarray = ROWS, name: str = "input") -> dict[str, object]:
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


def outputs(answer: dict[str, object]) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}  # type: ignore[attr-defined]


# ---- SageMaker contract -------------------------------------------------------------------------------------------


def test_ping_is_200_once_models_are_loaded(container: Container) -> None:
    r = httpx.get(f"{container.base}/ping")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "models": ["iris", "mlp"]}


def test_invocations_v2_request_runs_the_default_model(container: Container, reference: Reference) -> None:
    r = httpx.post(f"{container.base}/invocations", json=v2_body())
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["model_name"], answer["model_version"]) == ("mlp", "2")  # MODELFN_MODEL, label stable -> 2
    expected = reference.run("mlp", 2, {"input": ROWS})
    got = outputs(answer)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["logits"], expected["logits"], rtol=1e-5, atol=1e-6)


def test_invocations_tf_instances_and_columnar(container: Container, reference: Reference) -> None:
    expected = reference.run("mlp", 2, {"input": ROWS})["probabilities"]
    rows = httpx.post(f"{container.base}/invocations", json={"instances": ROWS.tolist()})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose([p["probabilities"] for p in rows.json()["predictions"]], expected, rtol=1e-5, atol=1e-6)
    cols = httpx.post(f"{container.base}/invocations", json={"inputs": {"input": ROWS.tolist()}})
    assert cols.status_code == 200, cols.text
    np.testing.assert_allclose(cols.json()["outputs"]["probabilities"], expected, rtol=1e-5, atol=1e-6)


def test_invocations_features_and_gzip(container: Container, reference: Reference) -> None:
    expected = reference.run("mlp", 2, {"input": ROWS})["probabilities"]
    body = gzip.compress(json.dumps({"features": ROWS.tolist()}).encode())
    r = httpx.post(
        f"{container.base}/invocations",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    np.testing.assert_allclose([p["probabilities"] for p in preds], expected, rtol=1e-5, atol=1e-6)


def test_invocations_target_model_header_picks_another_model(container: Container, reference: Reference) -> None:
    r = httpx.post(
        f"{container.base}/invocations",
        json=v2_body(IRIS, "float_input"),
        headers={"X-Amzn-SageMaker-Target-Model": "iris.tar.gz"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == "iris"
    labels = outputs(r.json())["label"]
    assert labels.tolist() == reference.run("iris", 1, {"float_input": IRIS})["label"].tolist()


def test_invocations_explicit_route_header_and_custom_attributes(container: Container) -> None:
    meta = httpx.post(f"{container.base}/invocations", headers={"X-Modelfn-Path": "GET /v2/models/iris"})
    assert meta.status_code == 200, meta.text
    assert meta.json()["name"] == "iris"
    assert [i["name"] for i in meta.json()["inputs"]] == ["float_input"]
    # The same through SageMaker's CustomAttributes (the only header InvokeEndpoint passes on), percent-encoded.
    route = quote("POST /v1/models/iris/versions/1:predict")
    tf = httpx.post(
        f"{container.base}/invocations",
        json={"instances": IRIS.tolist()},
        headers={"X-Amzn-SageMaker-Custom-Attributes": f"trace=1; modelfn-path={route}"},
    )
    assert tf.status_code == 200, tf.text
    assert [p["label"] for p in tf.json()["predictions"]] == [0, 2]


def test_invocations_errors_are_json(container: Container) -> None:
    unknown = httpx.post(f"{container.base}/invocations", json={"rows": [1, 2]})
    assert unknown.status_code == 400
    assert "cannot tell the protocol" in unknown.json()["error"]
    not_json = httpx.post(f"{container.base}/invocations", content=b"\x00\x01")
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["error"]
    loop = httpx.post(f"{container.base}/invocations", headers={"X-Modelfn-Path": "POST /invocations"})
    assert loop.status_code == 400
    missing = httpx.post(
        f"{container.base}/invocations", json=v2_body(), headers={"X-Amzn-SageMaker-Target-Model": "ranker"}
    )
    assert missing.status_code == 404  # served by the store, not by this container (MODELFN_MODELS=mlp,iris)
    assert "not served here" in missing.json()["error"]
    bad_shape = httpx.post(f"{container.base}/invocations", json={"features": [[1.0, 2.0]]})
    assert bad_shape.status_code == 400


# ---- the HTTP API -----------------------------------------------------------------------------------------------


def test_v2_metadata_and_infer(container: Container, reference: Reference) -> None:
    meta = httpx.get(f"{container.base}/v2/models/mlp")
    assert meta.status_code == 200, meta.text
    assert meta.json()["name"] == "mlp"
    assert sorted(meta.json()["versions"]) == ["1", "2"]
    r = httpx.post(f"{container.base}/v2/models/mlp/versions/1/infer", json=v2_body())
    assert r.status_code == 200, r.text
    expected = reference.run("mlp", 1, {"input": ROWS})["logits"]
    np.testing.assert_allclose(outputs(r.json())["logits"], expected, rtol=1e-5, atol=1e-6)


def test_fallback_to_cpu_was_logged_once_per_model(container: Container) -> None:
    """The container asked for TensorRT and CUDA (MODELFN_PROVIDERS); on this CPU-only machine each model load
    logs exactly one warning naming what was asked and what is used, and the models serve (tests above)."""
    lines = [line for line in container.output().splitlines() if "execution providers" in line]
    assert len([line for line in lines if "model 'mlp' version 2" in line]) == 1, lines
    assert len([line for line in lines if "model 'iris' version 1" in line]) == 1, lines
    assert all("WARNING" in line and "using ['CPUExecutionProvider']" in line for line in lines), lines
    assert all("TensorrtExecutionProvider" in line and "CUDAExecutionProvider" in line for line in lines), lines


def test_metrics_count_requests(container: Container) -> None:
    assert httpx.post(f"{container.base}/v2/models/mlp/infer", json=v2_body()).status_code == 200
    assert httpx.post(f"{container.base}/invocations", json={"features": ROWS.tolist()}).status_code == 200
    assert httpx.get(f"{container.base}/v2/models/nope/ready").status_code == 404
    r = httpx.get(f"{container.base}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        if line.startswith("modelfn_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            samples[labels] = float(value)
    infer = 'modelfn_requests_total{model="mlp",route="/v2/models/{name}/infer",status_class="2xx",version="2"}'
    predict = 'modelfn_requests_total{model="mlp",route="/predict",status_class="2xx",version="2"}'
    unknown = 'modelfn_requests_total{model="",route="/v2/models/{name}/ready",status_class="4xx",version=""}'
    assert samples.get(infer, 0) >= 1, samples
    assert samples.get(predict, 0) >= 1, samples
    assert samples.get(unknown, 0) >= 1, samples
    assert 'modelfn_request_seconds_bucket{le="0.5",model="mlp",route="/v2/models/{name}/infer",version="2"}' in r.text
    assert "# TYPE modelfn_request_seconds histogram" in r.text


def test_healthcheck_command(container: Container) -> None:
    port = container.base.rsplit(":", 1)[1]
    ok = subprocess.run(
        [sys.executable, "-m", "modelfn.container", "healthcheck"], env={"MODELFN_PORT": port}, check=False
    )
    assert ok.returncode == 0
    down = subprocess.run(
        [sys.executable, "-m", "modelfn.container", "healthcheck"], env={"MODELFN_PORT": str(free_port())}, check=False
    )
    assert down.returncode == 1


# ---- configuration ------------------------------------------------------------------------------------------------


def test_server_config_defaults_and_sagemaker_port() -> None:
    cfg = ServerConfig.from_env({"MODELFN_STORE": "s3://b/models", "MODELFN_MODEL": "mlp"})
    assert (cfg.host, cfg.port, cfg.shutdown_timeout, cfg.models) == ("0.0.0.0", 8080, 30, ["mlp"])
    assert ServerConfig.from_env({"SAGEMAKER_BIND_TO_PORT": "9090"}).port == 9090
    assert ServerConfig.from_env({"SAGEMAKER_BIND_TO_PORT": "9090", "MODELFN_PORT": "7070"}).port == 7070
    assert ServerConfig.from_env({"MODELFN_MODELS": "a, b", "MODELFN_MODEL": "a"}).models == ["a", "b"]
    config = build_config(object(), cfg)
    assert (config.loop, config.http, config.workers) == ("uvloop", "httptools", 1)
    assert config.timeout_graceful_shutdown == 30
    assert (config.host, config.port) == ("0.0.0.0", 8080)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert main(["serve", "extra"]) == 2
    assert "usage" in capsys.readouterr().err


# ---- graceful shutdown --------------------------------------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed early: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_sigterm_drains_in_flight_request_then_exits_0(
    s3_store: str, aws: EmbeddedAWS, tmp_path: Path, reference: Reference
) -> None:
    """A request is in flight (its handler is already waiting for the body: uvicorn sent `100 Continue`) when
    SIGTERM arrives. The server stops accepting connections, the request completes 200, then the process exits 0."""
    c = start_container(
        {"MODELFN_STORE": s3_store, "MODELFN_MODEL": "mlp", "MODELFN_CACHE_DIR": str(tmp_path / "cache")},
        tmp_path / "container.log",
    )
    try:
        host, port = c.base.removeprefix("http://").split(":")
        body = json.dumps(v2_body()).encode()
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        head, _ = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 100"), head  # the app is running this request and reading its body

        c.proc.send_signal(signal.SIGTERM)
        refused = False
        for _ in range(200):  # shutdown closes the listening socket first: new connections are refused
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                refused = True
                break
            time.sleep(0.05)
        assert refused, "the server kept accepting connections after SIGTERM"
        assert c.proc.poll() is None  # still running: the in-flight request holds it

        sock.sendall(body)
        head, rest = _read_head(sock)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        while len(rest) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.close()
        assert status_line.startswith("HTTP/1.1 200"), (status_line, rest[:200])
        answer = json.loads(rest)
        expected = reference.run("mlp", 2, {"input": ROWS})["probabilities"]
        np.testing.assert_allclose(outputs(answer)["probabilities"], expected, rtol=1e-5, atol=1e-6)
        assert c.proc.wait(timeout=30) == 0, c.output()
        assert "in-flight requests drained" in c.output()
    finally:
        stop_container(c)
