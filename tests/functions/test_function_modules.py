"""functions/<model>/app.py as Lambda imports them: the function folder on sys.path, `import app`, with the
function's environment set. The import is the init phase: the model must be loaded before any request."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from modelfn_tools.embedded import EmbeddedAWS

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ("http_handler", "batch_handler", "sqs_handler", "s3_handler")


class Context:
    function_name = "modelfn-fn"
    memory_limit_in_mb = 1024
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-fn"
    aws_request_id = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(autouse=True)
def _function_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws: EmbeddedAWS) -> None:
    """What the SAM template sets, with Powertools quiet; MODELFN_STORE is set per test."""
    monkeypatch.setenv("MODELFN_RESULTS", "s3://unused-results/results")
    monkeypatch.setenv("MODELFN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "modelfn")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    for name in ("MODELFN_MODEL", "MODELFN_VERSION", "MODELFN_INPUT_PREFIX", "MODELFN_BASE_PATH"):
        monkeypatch.delenv(name, raising=False)


ImportFunction = Callable[[str, str], ModuleType]


@pytest.fixture
def import_function(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImportFunction]:
    """`import app` from functions/<model>/, as the Lambda runtime does with handler "app.http_handler"."""

    def load(model: str, store: str) -> ModuleType:
        monkeypatch.setenv("MODELFN_STORE", store)
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", model)
        monkeypatch.syspath_prepend(str(ROOT / "functions" / model))
        sys.modules.pop("app", None)
        return importlib.import_module("app")

    yield load
    sys.modules.pop("app", None)


def predict_event(features: Any) -> dict[str, Any]:
    body = json.dumps({"features": features})
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"host": "fn.lambda-url.us-east-1.on.aws", "content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "fn",
            "domainName": "fn.lambda-url.us-east-1.on.aws",
            "domainPrefix": "fn",
            "http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2024:00:00:00 +0000",
            "timeEpoch": 1704067200000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize("model", ["iris", "mlp", "ranker"])
def test_import_loads_the_model_and_exposes_the_handlers(
    model: str, import_function: ImportFunction, s3_store: str
) -> None:
    app = import_function(model, s3_store)
    fn = app.fn
    # loaded during import, before any request
    assert fn.registry.cache.stats["loads"] == 1
    assert fn.load_error is None
    assert fn.name == model
    assert [m.name for m in fn.registry.cache.loaded()] == [model]
    for name in HANDLERS:
        assert callable(getattr(app, name)), name
        assert getattr(app, name) is getattr(fn, name)
    assert Path(str(app.__file__)).resolve() == ROOT / "functions" / model / "app.py"


def test_iris_predict_adds_class_names(import_function: ImportFunction, s3_store: str) -> None:
    app = import_function("iris", s3_store)
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]

    one = app.http_handler(predict_event(setosa), Context())
    assert one["statusCode"] == 200
    (row,) = json.loads(one["body"])["predictions"]
    assert row["label"] == 0
    assert row["class"] == "setosa"
    assert len(row["probabilities"]) == 3

    both = app.http_handler(predict_event([setosa, virginica]), Context())
    assert [r["class"] for r in json.loads(both["body"])["predictions"]] == ["setosa", "virginica"]
    assert app.fn.registry.cache.stats["loads"] == 1  # requests reuse the model loaded at import


def test_mlp_predict_adds_top_class(import_function: ImportFunction, s3_store: str) -> None:
    app = import_function("mlp", s3_store)
    response = app.http_handler(predict_event([[0.01 * i for i in range(256)]]), Context())
    assert response["statusCode"] == 200
    (row,) = json.loads(response["body"])["predictions"]
    probs = row["probabilities"]
    assert row["class"] == max(range(10), key=probs.__getitem__)


def test_import_survives_a_store_without_the_model(import_function: ImportFunction, fresh_bucket: str) -> None:
    """A model that cannot be loaded does not crash init: the function imports and says what is wrong."""
    app = import_function("iris", fresh_bucket)
    assert app.fn.load_error is not None and "iris" in app.fn.load_error
    response = app.http_handler(predict_event([5.1, 3.5, 1.4, 0.2]), Context())
    assert response["statusCode"] >= 400
    assert "iris" in json.loads(response["body"])["error"]
