"""One cold start, in a fresh process: run as `python bench/_cold_worker.py modelfn|minimal`.

Phases, timed from the first line of this script (the interpreter's own start-up is what the parent's wall clock
adds): imports, init (fetch, session creation and, for modelfn, its warm-up run), first request. Imports come first
explicitly so that they can be told apart; the total is what the natural order costs. The result goes, as one JSON
line, to the file descriptor in BENCH_RESULT_FD the moment the first response exists (the parent timestamps it);
stdout (the EMF documents) goes wherever the parent sent it. Only the standard library is imported at the top."""

import json
import os
import sys
import time

T0 = time.perf_counter()


def _timed(record, key, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record[key] = record.get(key, 0.0) + (time.perf_counter() - started) * 1000

    return wrapper


def _event():
    body = json.dumps({"features": [((i * 37) % 100) / 100 - 0.5 for i in range(256)]})
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "content-length": str(len(body))},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "api.example.com",
            "http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "cold-1",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": 1795000000000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


class _Context:
    function_name = "modelfn-bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-bench"
    memory_limit_in_mb = 1769
    aws_request_id = "cold-1"
    log_group_name = "/aws/lambda/modelfn-bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self):
        return 30_000


def modelfn(phases):
    # what functions/mlp/app.py and its first request import, everything third-party included
    import modelfn.adapters.lambda_http
    import modelfn.function
    import modelfn.model.onnx
    import modelfn.observability
    import modelfn.registry.loader
    import modelfn.store.s3

    t1 = time.perf_counter()
    phases["imports"] = (t1 - T0) * 1000
    for name, key in (("load_session", "session"), ("warm_up", "warmup")):
        setattr(modelfn.registry.loader, name, _timed(phases, key, getattr(modelfn.registry.loader, name)))
    import importlib.util

    root = os.environ["BENCH_ROOT"]
    spec = importlib.util.spec_from_file_location("mlp_app", os.path.join(root, "functions", "mlp", "app.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    t2 = time.perf_counter()
    phases["fetch"] = (t2 - t1) * 1000 - phases.get("session", 0.0) - phases.get("warmup", 0.0)
    response = module.http_handler(_event(), _Context())
    phases["first_request"] = (time.perf_counter() - t2) * 1000
    phases["cache_stats"] = dict(modelfn.registry.loader.model_cache.stats)
    return response


def minimal(phases):
    import json as _json  # noqa: F401

    import boto3
    import numpy  # noqa: F401
    import onnxruntime

    t1 = time.perf_counter()
    phases["imports"] = (t1 - T0) * 1000
    onnxruntime.InferenceSession = _timed(phases, "session", onnxruntime.InferenceSession)
    boto3.client = _timed(phases, "client", boto3.client)
    from bench.baselines import minimal_handler

    t2 = time.perf_counter()
    phases["fetch"] = (t2 - t1) * 1000 - phases.get("session", 0.0)
    response = minimal_handler.handler(_event(), _Context())
    phases["first_request"] = (time.perf_counter() - t2) * 1000
    return response


def main():
    kind = sys.argv[1]
    phases: dict[str, object] = {}
    response = (modelfn if kind == "modelfn" else minimal)(phases)
    phases["in_process_total"] = (time.perf_counter() - T0) * 1000
    phases["status"] = response.get("statusCode")
    line = json.dumps(phases) + "\n"
    os.write(int(os.environ["BENCH_RESULT_FD"]), line.encode())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
