"""events/: every sample event is what its trigger sends (consistent paths, md5s, encoded keys, binary framing) and
carries requests that fit the example models' signatures; the data files the batch events point to match them."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
FEATURES = {"iris": {"float_input": 4}, "mlp": {"input": 256}, "ranker": {"dense": 4, "item_ids": 3}}
EXPECTED = {
    "iris": ["alb", "function-url", "http-api-v2", "rest-api-v1", "s3-put", "sfn-items", "sqs"],
    "mlp": ["http-api-v2-binary", "sqs"],
    "ranker": ["http-api-v2", "sqs"],
}


def load(rel: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / rel).read_text()))


def check_request(model: str, request: dict[str, Any]) -> int:
    """Rows of a JSON inference request (v2 or TF, row or columnar) after checking it fits the model's inputs."""
    widths = FEATURES[model]
    if "inputs" in request and isinstance(request["inputs"], list):  # KServe v2
        rows = set()
        for t in request["inputs"]:
            n, k = t["shape"]
            assert k == widths[t["name"]] and len(t["data"]) == n * k, t["name"]
            assert t["datatype"] == ("INT64" if t["name"] == "item_ids" else "FP32")
            rows.add(n)
        assert {t["name"] for t in request["inputs"]} == set(widths)
        (n,) = rows
        return int(n)
    if "instances" in request:  # TF row format
        for row in request["instances"]:
            if isinstance(row, dict):
                assert {k: len(v) for k, v in row.items()} == widths
            else:
                assert len(widths) == 1 and len(row) == next(iter(widths.values()))
        return len(request["instances"])
    columns = request["inputs"]  # TF columnar
    assert set(columns) == set(widths)
    assert all(len(r) == widths[name] for name, rows in columns.items() for r in rows)
    assert all(i < 100 for r in columns.get("item_ids", []) for i in r)
    return len(next(iter(columns.values())))


def test_every_event_is_there_and_documented() -> None:
    readme = (EVENTS / "README.md").read_text()
    for model, triggers in EXPECTED.items():
        found = sorted(p.stem for p in (EVENTS / model).glob("*.json"))
        assert found == triggers, model
        for t in triggers:
            assert f"`{model}/{t}.json`" in readme
    for fn in ("IrisHttpFunction", "IrisBatchFunction", "MlpHttpFunction", "MlpBatchFunction", "RankerHttpFunction"):
        assert f"`{fn}`" in readme
    assert "sam local invoke IrisHttpFunction -e events/iris/http-api-v2.json" in readme


@pytest.mark.parametrize(
    ("rel", "method", "path"),
    [
        ("iris/http-api-v2.json", "POST", "/v2/models/iris/infer"),
        ("iris/function-url.json", "POST", "/predict"),
        ("mlp/http-api-v2-binary.json", "POST", "/v2/models/mlp/infer"),
        ("ranker/http-api-v2.json", "POST", "/v1/models/ranker:predict"),
    ],
)
def test_payload_v2_events(rel: str, method: str, path: str) -> None:
    ev = load(rel)
    ctx = ev["requestContext"]
    assert ev["version"] == "2.0" and ev["rawPath"] == ctx["http"]["path"] == path
    assert ctx["http"]["method"] == method and ev["routeKey"] == ctx["routeKey"]
    assert ctx["domainName"].startswith(ctx["domainPrefix"] + ".")
    if rel.endswith("function-url.json"):
        assert re.fullmatch(r"[a-z0-9]+\.lambda-url\.[a-z0-9-]+\.on\.aws", ctx["domainName"])
        assert ev["routeKey"] == "$default" and "iam" in ctx["authorizer"]
    else:
        assert ".execute-api." in ctx["domainName"] and ctx["stage"] == "$default"
        assert ev["routeKey"] != "$default"
    if not ev["isBase64Encoded"]:
        body = json.loads(ev["body"])
        model = path.split("/")[3].split(":", maxsplit=1)[0] if path.startswith("/v") else "iris"
        if "features" in body:
            assert all(len(row) == 4 for row in body["features"])
        else:
            assert check_request(model, body) >= 1
        assert ev["headers"]["content-type"] == "application/json"


def test_rest_and_alb_events() -> None:
    rest = load("iris/rest-api-v1.json")
    assert rest["httpMethod"] == "POST" and rest["path"] == "/v1/models/iris:predict"
    assert rest["requestContext"]["stage"] == "prod"
    assert rest["requestContext"]["path"] == "/prod" + rest["path"]
    assert rest["pathParameters"] == {"proxy": "iris:predict"}
    assert check_request("iris", json.loads(rest["body"])) == 3
    alb = load("iris/alb.json")
    assert alb["httpMethod"] == "GET" and alb["path"] == "/v2/models/iris"
    assert "elb" in alb["requestContext"]


def test_binary_event_frames_a_json_header_and_float32_tensor() -> None:
    ev = load("mlp/http-api-v2-binary.json")
    assert ev["isBase64Encoded"] is True
    body = base64.b64decode(ev["body"])
    n = int(ev["headers"]["inference-header-content-length"])
    header = json.loads(body[:n])
    (t,) = header["inputs"]
    assert t["shape"] == [1, 256] and t["datatype"] == "FP32"
    assert t["parameters"]["binary_data_size"] == len(body) - n == 256 * 4
    assert int(ev["headers"]["content-length"]) == len(body)
    spec = importlib.util.spec_from_file_location("make_binary_event", EVENTS / "make_binary_event.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.make_event() == ev  # the script regenerates exactly this file


@pytest.mark.parametrize(("model", "count"), [("iris", 3), ("mlp", 2), ("ranker", 2)])
def test_sqs_events(model: str, count: int) -> None:
    records = load(f"{model}/sqs.json")["Records"]
    assert len(records) == count
    assert len({r["messageId"] for r in records}) == count
    for r in records:
        assert r["eventSource"] == "aws:sqs" and r["eventSourceARN"].startswith("arn:aws:sqs:")
        assert r["md5OfBody"] == hashlib.md5(r["body"].encode()).hexdigest()
        body = json.loads(r["body"])
        if "request_uri" in body:
            assert body == {"request_uri": "s3://modelfn-input/requests/iris-big.json"}
            body = json.loads((EVENTS / "data" / "iris-big.json").read_text())
        assert check_request(model, body) >= 1
    if model == "iris":
        kinds = [next(k for k in ("inputs", "instances", "request_uri") if k in json.loads(r["body"])) for r in records]
        assert kinds == ["inputs", "instances", "request_uri"]


def csv_rows() -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO((EVENTS / "data" / "iris.csv").read_text())))
    return rows[0], rows[1:]


def test_iris_csv_has_two_malformed_rows() -> None:
    header, rows = csv_rows()
    assert header == ["id", "sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert 18 <= len(rows) <= 25

    def ok(row: list[str]) -> bool:
        try:
            return len(row) == 5 and all(float(x) > 0 for x in row[1:])
        except ValueError:
            return False

    assert sum(not ok(r) for r in rows) == 2
    big = json.loads((EVENTS / "data" / "iris-big.json").read_text())
    assert check_request("iris", big) > 100


def test_s3_put_event_names_the_uploaded_csv_url_encoded() -> None:
    (record,) = load("iris/s3-put.json")["Records"]
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    s3 = record["s3"]
    assert s3["bucket"]["name"] == "modelfn-input" and s3["bucket"]["arn"] == "arn:aws:s3:::modelfn-input"
    assert s3["object"]["key"] == "incoming/iris/batch%3D1/iris.csv"
    assert unquote_plus(s3["object"]["key"]) == "incoming/iris/batch=1/iris.csv"
    data = (EVENTS / "data" / "iris.csv").read_bytes()
    assert s3["object"]["size"] == len(data) and s3["object"]["eTag"] == hashlib.md5(data).hexdigest()


def test_sfn_item_batch_is_the_csv_as_the_item_reader_yields_it() -> None:
    ev = load("iris/sfn-items.json")
    assert ev["BatchInput"] == {"bucket": "modelfn-input", "key": "incoming/iris/iris.csv"}
    header, rows = csv_rows()
    assert ev["Items"] == [dict(zip(header, r, strict=False)) for r in rows]
    assert all(isinstance(v, str) for item in ev["Items"] for v in item.values())
