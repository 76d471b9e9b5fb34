"""The data plane's choice of model and version: a function pinned with MODELFN_VERSION answers every route that
names no version from that version (before: only /predict did); a path that names one goes there; a version in
the path that is not ASCII digits is a label or a 400, never a parse error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfn.function import ModelFunction
from modelfn.service.request import VERSION_HEADER, Request, Response
from modelfn.settings import Settings

V2 = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.1] * 256}]}).encode()
TF = json.dumps({"instances": [[0.1] * 256]}).encode()
PLAIN = json.dumps({"features": [0.1] * 256}).encode()


@pytest.fixture(scope="module")
def pinned(s3_store: str, tmp_path_factory: pytest.TempPathFactory) -> ModelFunction:
    """mlp pinned to its `fp32` label (version 1); its `stable` (the default otherwise) is version 2."""
    settings = Settings(store=s3_store, model="mlp", version="fp32", cache_dir=tmp_path_factory.mktemp("pin"))
    return ModelFunction(settings)


def _post(fn: ModelFunction, path: str, body: bytes) -> Response:
    answer: Response = fn.service.handle(Request("POST", path, "", {"content-type": "application/json"}, body))
    return answer


@pytest.mark.parametrize(
    ("path", "body", "version"),
    [
        ("/v2/models/mlp/infer", V2, "1"),
        ("/v1/models/mlp:predict", TF, "1"),
        ("/predict", PLAIN, "1"),
        ("/v2/models/mlp/versions/2/infer", V2, "2"),
        ("/v1/models/mlp/versions/2:predict", TF, "2"),
        ("/v1/models/mlp/labels/stable:predict", TF, "2"),
        ("/v2/models/mlp/versions/stable/infer", V2, "2"),
    ],
)
def test_the_pinned_version_answers_unless_the_path_names_one(
    pinned: ModelFunction, path: str, body: bytes, version: str
) -> None:
    answer = _post(pinned, path, body)
    assert answer.status == 200, answer.body
    assert answer.headers[VERSION_HEADER] == version
    if path.startswith("/v2"):
        assert json.loads(answer.body)["model_version"] == version


def test_metadata_follows_the_pin(pinned: ModelFunction) -> None:
    meta = pinned.service.handle(Request("GET", "/v2/models/mlp"))
    assert meta.status == 200 and meta.headers[VERSION_HEADER] == "1"
    ready = pinned.service.handle(Request("GET", "/v2/models/mlp/ready"))
    assert json.loads(ready.body)["version"] == "1"


@pytest.mark.parametrize("version", ["\u00b9", "\u0661", "1.0", "-1", "a b"])
def test_a_version_that_is_not_ascii_digits_is_a_client_error(pinned: ModelFunction, version: str) -> None:
    for path, body in (
        (f"/v2/models/mlp/versions/{version}/infer", V2),
        (f"/v1/models/mlp/versions/{version}:predict", TF),
    ):
        answer = _post(pinned, path, body)
        assert answer.status in (400, 404), (path, answer.body)
        assert "error" in json.loads(answer.body)


def test_an_invalid_model_name_is_a_400(pinned: ModelFunction, tmp_path: Path) -> None:
    answer = _post(pinned, "/v2/models/a%20b/infer", V2)
    assert answer.status in (400, 404)
    answer = pinned.service.handle(Request("POST", "/predict", "model=..%2Fetc", {}, PLAIN))
    assert answer.status == 400, answer.body
