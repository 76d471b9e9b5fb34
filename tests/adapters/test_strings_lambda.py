"""String (BYTES) models through the Lambda handler (ModelFunction): SQS messages (v2 and TF Serving requests, the
answers written to the results store) and HTTP API events (v2 JSON and binary, TF REST, /predict). Every answer
equals onnxruntime's own on the same published file; string outputs come back as strings."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from typing import Any

import boto3
import numpy as np
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from protocols.string_models import CITIES, TEXTS, StringModels, city_rows, publish_string_models

from modelfn.function import ModelFunction
from modelfn.protocols.v2 import HEADER as V2_HEADER

from .conftest import S3, LambdaContext, MakeFunction
from .test_http_events import Case, http_v2_event, lambda_answer
from .test_sqs import sqs_event, sqs_record

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@pytest.fixture(scope="module")
def models(aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> StringModels:
    bucket = f"strings-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return publish_string_models(f"s3://{bucket}/models", tmp_path_factory.mktemp("string-models"))


@pytest.fixture
def cities_fn(make_function: MakeFunction, models: StringModels) -> ModelFunction:
    return make_function("cities", store=models.store)


@pytest.fixture
def echo_fn(make_function: MakeFunction, models: StringModels) -> ModelFunction:
    return make_function("echo", store=models.store)


def v2_cities(cities: list[Any], rid: str | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "inputs": [{"name": "city", "datatype": "BYTES", "shape": [len(cities), 1], "data": cities}],
    }
    if rid is not None:
        req["id"] = rid
    return req


def _b64(text: str) -> dict[str, str]:
    return {"b64": base64.b64encode(text.encode()).decode()}


def test_sqs_string_requests_equal_onnxruntime(
    cities_fn: ModelFunction, models: StringModels, s3: S3, results_bucket: str, lambda_context: LambdaContext
) -> None:
    expected = models.run("cities", {"city": city_rows(CITIES)})
    records = [
        sqs_record(json.dumps(v2_cities(CITIES, rid="v2-1"))),
        sqs_record(json.dumps({"instances": city_rows(CITIES)})),
        sqs_record(json.dumps({"instances": [[_b64(c)] for c in CITIES], "id": "tf-b64"})),
        sqs_record(json.dumps({"inputs": {"city": city_rows(CITIES)}})),
    ]
    bad = [
        sqs_record(json.dumps({"instances": [[_b64("ok")], [{"b64": "/w=="}]]})),  # bytes that are not UTF-8
        sqs_record(json.dumps(v2_cities(["paris", 3]))),  # a number among the strings
    ]

    response = cities_fn.batch_handler(sqs_event(*records, *bad), lambda_context)

    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {b["messageId"] for b in bad}
    answers = [json.loads(s3.get(results_bucket, f"results/cities/{r['messageId']}.json")) for r in records]
    v2_answer = {o["name"]: o for o in answers[0]["outputs"]}
    assert answers[0]["id"] == "v2-1"
    assert v2_answer["label"]["datatype"] == "BYTES"
    assert v2_answer["label"]["data"] == expected["label"].tolist() == ["eu", "eu", "asia", "none", "eu", "asia"]
    np.testing.assert_allclose(
        np.reshape(v2_answer["probabilities"]["data"], (len(CITIES), 3)), expected["probabilities"], rtol=1e-5
    )
    for answer in answers[1:3]:
        answer.pop("id", None)
        assert [p["label"] for p in answer["predictions"]] == expected["label"].tolist()
        np.testing.assert_allclose(
            [p["probabilities"] for p in answer["predictions"]], expected["probabilities"], rtol=1e-5
        )
    assert answers[3]["outputs"]["label"] == expected["label"].tolist()


def test_sqs_string_output(echo_fn: ModelFunction, s3: S3, results_bucket: str, lambda_context: LambdaContext) -> None:
    record = sqs_record(
        json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]})
    )
    assert echo_fn.sqs_handler(sqs_event(record), lambda_context) == {"batchItemFailures": []}
    (out,) = json.loads(s3.get(results_bucket, f"results/echo/{record['messageId']}.json"))["outputs"]
    assert out == {"name": "same", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}


def _http(fn: ModelFunction, case: Case, context: LambdaContext) -> tuple[int, dict[str, str], bytes]:
    answer = lambda_answer(fn.http_handler(http_v2_event(case), context))
    return answer.status, answer.headers, answer.body


def _json_case(name: str, path: str, doc: Any, model: str) -> Case:
    return Case(name, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json"}, model=model)


def test_http_api_events_equal_onnxruntime(
    cities_fn: ModelFunction, models: StringModels, lambda_context: LambdaContext
) -> None:
    expected = models.run("cities", {"city": city_rows(CITIES)})
    labels = expected["label"].tolist()

    status, _, body = _http(
        cities_fn, _json_case("v2", "/v2/models/cities/infer", v2_cities(CITIES), "cities"), lambda_context
    )
    assert status == 200, body
    outs = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert outs["label"]["data"] == labels
    np.testing.assert_allclose(
        np.reshape(outs["probabilities"]["data"], (len(CITIES), 3)), expected["probabilities"], rtol=1e-5
    )

    tf = {"instances": [[_b64(c)] if i % 2 else [c] for i, c in enumerate(CITIES)]}
    status, _, body = _http(cities_fn, _json_case("tf", "/v1/models/cities:predict", tf, "cities"), lambda_context)
    assert status == 200, body
    assert [p["label"] for p in json.loads(body)["predictions"]] == labels

    predict = {"features": city_rows(CITIES)}
    status, _, body = _http(cities_fn, _json_case("predict", "/predict", predict, "cities"), lambda_context)
    assert status == 200, body
    rows = json.loads(body)["predictions"]
    assert [p["label"] for p in rows] == labels
    np.testing.assert_allclose([p["probabilities"] for p in rows], expected["probabilities"], rtol=1e-5)


def test_http_api_binary_strings(echo_fn: ModelFunction, lambda_context: LambdaContext) -> None:
    """tritonclient's binary form: each element's UTF-8 bytes after a 4-byte little-endian length, both ways."""
    blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in TEXTS)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [len(TEXTS)],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [{"name": "same", "parameters": {"binary_data": True}}],
        }
    ).encode()
    case = Case(
        "v2-binary",
        "POST",
        "/v2/models/echo/infer",
        head + blob,
        {"Content-Type": "application/octet-stream", V2_HEADER: str(len(head))},
        model="echo",
        binary=True,
    )
    status, headers, body = _http(echo_fn, case, lambda_context)
    assert status == 200, body
    n = int(headers[V2_HEADER.lower()])
    (out,) = json.loads(body[:n])["outputs"]
    assert (out["datatype"], out["shape"], out["parameters"]["binary_data_size"]) == ("BYTES", [len(TEXTS)], len(blob))
    assert body[n:] == blob

    bad = b"".join(struct.pack("<I", len(b)) + b for b in (b"ok", b"\xff\xfe"))
    head = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(bad)}}]}
    ).encode()
    case = Case(
        "v2-binary-bad",
        "POST",
        "/v2/models/echo/infer",
        head + bad,
        {V2_HEADER: str(len(head))},
        model="echo",
        binary=True,
    )
    status, _, body = _http(echo_fn, case, lambda_context)
    assert status == 400
    assert json.loads(body)["error"].startswith("input 'text' element 1: bytes are not UTF-8 text")
