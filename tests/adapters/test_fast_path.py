"""Inference requests take the Lambda fast path: no ASGI app is built or imported for them, while every other
route still reaches the FastAPI app (the answers of both are compared with `modelfn serve` in
test_http_events.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelfn.function import ModelFunction

from .conftest import LambdaContext, MakeFunction

ROOT = Path(__file__).resolve().parents[2]


def v2_event(method: str, path: str, body: Any = None, query: str = "") -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "127.0.0.1"}, "stage": "$default"},
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


ROW = [5.1, 3.5, 1.4, 0.2]


def test_every_route_is_answered_without_building_the_openapi_document(
    make_function: MakeFunction, lambda_context: LambdaContext
) -> None:
    """The Lambda path dispatches from the route table itself: FastAPI is imported only to generate /openapi.json."""
    fn: ModelFunction = make_function("iris")
    requests = [
        v2_event(
            "POST",
            "/v2/models/iris/infer",
            {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]},
        ),
        v2_event("POST", "/v1/models/iris/versions/1:predict", {"instances": [ROW]}),
        v2_event("POST", "/predict", {"features": ROW}),
        v2_event("POST", "/predict", {"features": [1, 2]}),  # a client error is answered on the fast path too
        v2_event("POST", "/v2/models/nope/infer", {"inputs": []}),
    ]
    statuses = [fn.http_handler(e, lambda_context)["statusCode"] for e in requests]
    assert statuses == [200, 200, 200, 400, 404]
    meta = fn.http_handler(v2_event("GET", "/v2/models/iris"), lambda_context)
    assert meta["statusCode"] == 200 and json.loads(meta["body"])["name"] == "iris"
    assert "openapi_document" not in fn.service.__dict__
    doc = fn.http_handler(v2_event("GET", "/openapi.json"), lambda_context)
    assert doc["statusCode"] == 200 and "/v2/models/{name}/infer" in json.loads(doc["body"])["paths"]
    assert "openapi_document" in fn.service.__dict__


def test_a_cold_http_function_answers_inference_without_importing_fastapi_or_pydantic(
    s3_store: str, tmp_path: Path
) -> None:
    """Neither is needed to answer /predict, v2 or TF Serving on Lambda, and importing them is most of what a cold
    start would pay beyond the model (pydantic alone: about 100 ms before its first model class exists)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "functions" / "iris")!r})
import app
from tests.adapters.test_fast_path import v2_event
from modelfn_tools.dev_batch import LocalContext
ctx = LocalContext("iris")
r = app.http_handler(v2_event("POST", "/predict", {{"features": {ROW}}}), ctx)
v2 = {{"inputs": [{{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": {ROW}}}]}}
statuses = [app.http_handler(v2_event("POST", "/v2/models/iris/infer", v2), ctx)["statusCode"],
            app.http_handler(v2_event("POST", "/v1/models/iris:predict", {{"instances": [{ROW}]}}), ctx)["statusCode"],
            app.http_handler(v2_event("POST", "/predict", {{"features": [1, 2]}}), ctx)["statusCode"]]
print(json.dumps({{"status": r["statusCode"], "body": json.loads(r["body"]), "statuses": statuses,
                  "loaded": sorted(m for m in ("fastapi", "mangum", "pydantic", "starlette") if m in sys.modules)}}))
"""
    env = dict(
        os.environ,
        MODELFN_STORE=s3_store,
        MODELFN_CACHE_DIR=str(tmp_path),
        _HANDLER="app.http_handler",
        PYTHONPATH=str(ROOT),
        POWERTOOLS_METRICS_DISABLED="true",
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["body"]["predictions"][0]["class"] == "setosa"
    assert result["statuses"] == [200, 200, 400]
    assert result["loaded"] == []


def test_a_compressed_body_is_inflated_only_up_to_the_limit(
    make_function: MakeFunction, lambda_context: LambdaContext
) -> None:
    import base64
    import gzip

    fn: ModelFunction = make_function("iris", max_body_bytes=1000)
    event = v2_event("POST", "/predict")
    bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")  # ~10 KB that inflates to 10 MB
    event.update(body=base64.b64encode(bomb).decode(), isBase64Encoded=True)
    event["headers"]["content-encoding"] = "gzip"
    response = fn.http_handler(event, lambda_context)
    assert response["statusCode"] == 413 and "1000 bytes" in json.loads(response["body"])["error"]
    event.update(body=base64.b64encode(gzip.compress(json.dumps({"features": ROW}).encode())).decode())
    assert fn.http_handler(event, lambda_context)["statusCode"] == 200
