"""`modelfn dev` / `make demo`: moto's server as the embedded S3, the example models published to it, the API
served on 127.0.0.1:8080, and a short tour of requests in every protocol printed as it goes."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np

BUCKET = "modelfn-models"
STORE = f"s3://{BUCKET}/models"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Tour:
    """Sends the requests, prints each answer (shortened) and remembers any unexpected status."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.failures: list[str] = []

    def call(
        self, method: str, path: str, body: Any = None, expect: int = 200, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, Message]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if data is not None and "Content-Type" not in req.headers:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), e.headers
        shown = raw if len(raw) < 400 else raw[:400] + b"..."
        print(f"\n$ {method} {path}  -> {status}")
        if hdrs.get("Content-Type", "").startswith("application/json"):
            print("  " + shown.decode())
        else:
            header = hdrs.get("Inference-Header-Content-Length")
            print(f"  <{len(raw)} bytes, {hdrs.get('Content-Type')}, JSON header {header}>")
        if status != expect:
            self.failures.append(f"{method} {path}: {status}, expected {expect}")
        return status, raw, hdrs


def tour(base: str) -> list[str]:
    t = Tour(base)
    print(f"\n=== modelfn tour against {base} ===")
    t.call("GET", "/v2/health/ready")
    t.call("GET", "/v2/models/iris")
    print("\n# KServe v2, JSON tensors: two iris flowers")
    t.call(
        "POST",
        "/v2/models/iris/infer",
        {
            "inputs": [
                {
                    "name": "float_input",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
                }
            ]
        },
    )
    print("\n# KServe v2, binary tensor data extension: the int8 MLP (label stable), one row of 256 floats")
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
    head = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 256], "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, raw, hdrs = t.call(
        "POST",
        "/v2/models/mlp/infer",
        head + x.tobytes(),
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
    )
    if status == 200:
        n = int(hdrs["Inference-Header-Content-Length"])
        probs = np.frombuffer(raw[n:], dtype=np.float32)
        print(f"  decoded: {json.loads(raw[:n])['outputs'][0]['shape']} probabilities, argmax {int(probs.argmax())}")
    print("\n# TensorFlow Serving REST: row format (instances), the fp32 MLP by label and by version")
    t.call("POST", "/v1/models/mlp/labels/fp32:predict", {"instances": [x[0].tolist()]})
    t.call("GET", "/v1/models/mlp/versions/2")
    print("\n# TensorFlow Serving REST: columnar format, two named inputs (FP32 and INT64)")
    t.call(
        "POST", "/v1/models/ranker:predict", {"inputs": {"dense": [[0.1, 0.2, 0.3, 0.4]], "item_ids": [[3, 14, 15]]}}
    )
    t.call(
        "POST",
        "/v1/models/ranker:predict",
        {
            "instances": [
                {"dense": [0.1, 0.2, 0.3, 0.4], "item_ids": [3, 14, 15]},
                {"dense": [1, 1, 1, 1], "item_ids": [9, 2, 6]},
            ]
        },
    )
    print("\n# plain /predict")
    t.call("POST", "/predict?model=iris", {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    print("\n# a client's mistake is a 4xx with a JSON error that says what was expected")
    t.call(
        "POST",
        "/v2/models/iris/infer",
        {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
        expect=400,
    )
    t.call("GET", "/v2/models/nosuchmodel", expect=404)
    return t.failures


def _start_grpc(service: Any, host: str, port: int) -> Any:
    """The Open Inference Protocol over gRPC beside HTTP (Triton's clients use 8001); a port in use is a warning,
    not a failure: the demo goes on over HTTP. None when off (port 0) or not started."""
    if not port:
        return None
    from modelfn.adapters.grpc.server import GrpcThread

    server = GrpcThread(service, host, port)
    try:
        server.start()
    except RuntimeError as e:
        server.stop(0)
        print(f"warning: {e}: no gRPC (pass --grpc-port)", file=sys.stderr)
        return None
    print(f"gRPC (Open Inference Protocol) on {host}:{port}")
    return server


def run_dev(host: str, port: int, s3_port: int, once: bool, workdir: str | None, grpc_port: int = 0) -> int:
    import boto3
    import uvicorn

    from modelfn.http import create_app
    from modelfn.registry import ModelRegistry
    from modelfn.settings import Settings
    from modelfn_tools.embedded import EmbeddedAWS
    from modelfn_tools.examples import publish_examples

    if not _port_free(host, port):
        print(f"modelfn dev: {host}:{port} is in use; stop what holds it or pass --port", file=sys.stderr)
        return 1
    aws = EmbeddedAWS(host, s3_port).start()
    os.environ.update(aws.environ())
    print(f"embedded S3 (moto server) on {aws.endpoint}")
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    tmp = tempfile.TemporaryDirectory(prefix="modelfn-dev-")
    build_dir = Path(workdir) if workdir else Path(tmp.name)
    for record in publish_examples(STORE, build_dir / "examples"):
        print("published", json.dumps(record))
    settings = Settings.load(store=STORE, cache_dir=Path(tmp.name) / "cache")
    registry = ModelRegistry.from_uri(STORE, settings)
    for name, problem in registry.preload().items():
        print(f"warning: {name}: {problem}", file=sys.stderr)
    hooks = {}
    if Path("functions").is_dir():  # the repository's functions: /predict answers with their hooks, as on Lambda
        from modelfn_tools.serve import ServeError, load_function_hooks

        try:
            hooks = load_function_hooks(Path("functions"), STORE)
        except ServeError as e:
            print(f"warning: function hooks not loaded: {e}", file=sys.stderr)
    app = create_app(registry, hooks=hooks)
    grpc = _start_grpc(app.service, host, grpc_port)  # before HTTP: its first answer means both listen
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            print("modelfn dev: the HTTP server did not start", file=sys.stderr)
            aws.stop()
            return 1
        time.sleep(0.05)
    base = f"http://{host}:{port}"
    print(f"serving on {base} (docs: {base}/docs); store {STORE} at {aws.endpoint}")
    failures = tour(base)
    from modelfn_tools.dev_batch import batch_tour

    failures += batch_tour(STORE, Path(tmp.name) / "cache")
    if failures:
        print("\nunexpected answers:\n  " + "\n  ".join(failures), file=sys.stderr)
    try:
        if not once:
            print(f"\nstill serving on {base}; Ctrl-C to stop")
            print(f"  export AWS_ENDPOINT_URL={aws.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
            print(f"  modelfn models --store {STORE}")
            while thread.is_alive():
                thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if grpc is not None:
            grpc.stop(0)
        aws.stop()
        tmp.cleanup()
    return 1 if failures else 0
