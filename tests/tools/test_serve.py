"""`modelfn serve` as a new user runs it: with the functions' hooks it answers /predict as the Lambda function
does; a store that is not there is refused at once with a clear message, not served empty forever."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from modelfn_tools.localserver import serve_process

from modelfn.function import ModelFunction
from modelfn.hooks import Hooks
from modelfn.service.request import Request
from modelfn.settings import Settings
from tests.adapters.test_http_events import add_class_names

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
ROW = [5.1, 3.5, 1.4, 0.2]


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", *args, "--port", "1"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_store_is_refused(tmp_path: Path) -> None:
    for store in (str(tmp_path / "nonexistent"), f"file://{tmp_path}/nonexistent"):
        r = _serve("--store", store)
        assert r.returncode == 2, r.stderr
        assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_a_malformed_store_uri_is_refused(tmp_path: Path) -> None:
    r = _serve("--store", "s3:/bucket")
    assert r.returncode == 2, r.stderr
    assert "s3://bucket" in r.stderr and "Traceback" not in r.stderr


def test_functions_hooks_answer_as_lambda_does(s3_store: str, tmp_path: Path) -> None:
    settings = Settings(store=s3_store, model="iris", cache_dir=tmp_path / "fn")
    fn = ModelFunction(settings, Hooks(postprocess=add_class_names))  # as functions/iris/app.py builds it
    body = json.dumps({"features": [ROW]}).encode()
    lambda_answer = fn.service.handle(Request("POST", "/predict", "", {}, body))
    with serve_process(["--store", s3_store, "--functions", str(FUNCTIONS)], tmp_path) as base:
        r = httpx.post(f"{base}/predict?model=iris", json={"features": [ROW]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["class"] == "setosa"
    assert r.content == lambda_answer.body
