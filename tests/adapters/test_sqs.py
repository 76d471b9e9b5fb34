"""The SQS batch handler: each message is one inference request whose answer lands at
<MODELFN_RESULTS>/<model>/<messageId>.json; failing messages, and only those, come back in batchItemFailures."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import numpy as np
import pytest

from modelfn.function import ModelFunction

from .conftest import S3, IrisReference, LambdaContext, MakeFunction

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:modelfn-iris-requests"


def sqs_record(body: str, message_id: str | None = None, receive_count: int = 1) -> dict[str, Any]:
    """One record as `sam local generate-event sqs receive-message` shapes it."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": f"AQEB{uuid.uuid4().hex}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1523232000000",
            "SenderId": "123456789012",
            "ApproximateFirstReceiveTimestamp": "1523232000001",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def v2_request(x: np.ndarray, rid: str | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }
    if rid is not None:
        req["id"] = rid
    return req


def assert_v2_answer(answer: dict[str, Any], expected: dict[str, np.ndarray], rid: str | None) -> None:
    """The v2 response the protocol defines, with onnxruntime's values."""
    assert answer["model_name"] == "iris"
    assert answer["model_version"] == "1"
    assert answer.get("id") == rid
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert set(outputs) == {"label", "probabilities"}
    n = expected["label"].shape[0]
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["shape"] == [n]
    np.testing.assert_array_equal(outputs["label"]["data"], expected["label"])
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [n, 3]
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (n, 3)), expected["probabilities"], rtol=1e-5, atol=1e-6
    )


def assert_tf_rows(answer: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    """TF Serving's row-format answer for a two-output model: one object per instance."""
    assert set(answer) == {"predictions"}
    preds = answer["predictions"]
    assert len(preds) == expected["label"].shape[0]
    np.testing.assert_array_equal([p["label"] for p in preds], expected["label"])
    np.testing.assert_allclose([p["probabilities"] for p in preds], expected["probabilities"], rtol=1e-5, atol=1e-6)


def assert_tf_columns(answer: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    assert set(answer) == {"outputs"}
    np.testing.assert_array_equal(answer["outputs"]["label"], expected["label"])
    np.testing.assert_allclose(answer["outputs"]["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)


def result_key(message_id: str) -> str:
    return f"results/iris/{message_id}.json"


@pytest.fixture
def iris_fn(make_function: MakeFunction) -> ModelFunction:
    return make_function("iris")


def test_batch_of_ten_with_three_bad_messages(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    x = iris_ref.rows(40, seed=1)
    s3.put(input_bucket, "requests/stored.json", json.dumps(v2_request(x[30:34], rid="stored")).encode())
    good: list[tuple[dict[str, Any], str, Any]] = [  # record, protocol, rows
        (sqs_record(json.dumps(v2_request(x[0:1], rid="one"))), "v2", (x[0:1], "one")),
        (sqs_record(json.dumps(v2_request(x[1:6]))), "v2", (x[1:6], None)),
        (sqs_record(json.dumps({"instances": x[6:9].tolist()})), "rows", x[6:9]),
        (sqs_record(json.dumps({"instances": [x[9].tolist()], "id": "tf-1"})), "rows", x[9:10]),
        (sqs_record(json.dumps({"inputs": x[10:14].tolist()})), "columns", x[10:14]),
        (sqs_record(json.dumps({"inputs": {"float_input": x[14:16].tolist()}})), "columns", x[14:16]),
        (
            sqs_record(json.dumps({"request_uri": f"s3://{input_bucket}/requests/stored.json"})),
            "v2",
            (x[30:34], "stored"),
        ),
    ]
    wrong_shape = v2_request(x[20:22])
    wrong_shape["inputs"][0]["shape"] = [2, 3]  # 8 values, shape says 6 (and the model wants 4 features)
    bad = [
        sqs_record('{"inputs": [{"name": "float_input", "datatype": "FP32", '),  # malformed JSON
        sqs_record(json.dumps(wrong_shape)),
        sqs_record(json.dumps({"request_uri": f"s3://{input_bucket}/requests/missing.json"})),
    ]
    records = [g[0] for g in good]
    for i, b in zip((2, 5, 8), bad, strict=True):  # interleaved with the good ones
        records.insert(i, b)
    assert len(records) == 10

    response = iris_fn.batch_handler(sqs_event(*records), lambda_context)

    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    assert failed == {b["messageId"] for b in bad}
    assert len(response["batchItemFailures"]) == 3
    assert sorted(s3.keys(results_bucket)) == sorted(result_key(g[0]["messageId"]) for g in good)
    for record, protocol, rows in good:
        answer = json.loads(s3.get(results_bucket, result_key(record["messageId"])))
        if protocol == "v2":
            x_rows, rid = rows
            assert_v2_answer(answer, iris_ref.run(x_rows), rid)
        elif protocol == "rows":
            if "id" in json.loads(record["body"]):
                assert answer.pop("id") == "tf-1"
            assert_tf_rows(answer, iris_ref.run(rows))
        else:
            assert_tf_columns(answer, iris_ref.run(rows))


def test_sqs_handler_reports_nothing_when_all_succeed(
    iris_fn: ModelFunction, iris_ref: IrisReference, s3: S3, results_bucket: str, lambda_context: LambdaContext
) -> None:
    x = iris_ref.rows(3, seed=2)
    record = sqs_record(json.dumps({"instances": x.tolist()}))
    assert iris_fn.sqs_handler(sqs_event(record), lambda_context) == {"batchItemFailures": []}
    assert_tf_rows(json.loads(s3.get(results_bucket, result_key(record["messageId"]))), iris_ref.run(x))


def test_redelivered_message_overwrites_its_result(
    iris_fn: ModelFunction, iris_ref: IrisReference, s3: S3, results_bucket: str, lambda_context: LambdaContext
) -> None:
    x = iris_ref.rows(4, seed=3)
    message_id = str(uuid.uuid4())
    first = sqs_record(json.dumps(v2_request(x[:2], rid="a")), message_id)
    assert iris_fn.sqs_handler(sqs_event(first), lambda_context) == {"batchItemFailures": []}
    assert_v2_answer(json.loads(s3.get(results_bucket, result_key(message_id))), iris_ref.run(x[:2]), "a")

    # SQS redelivers at least once: the same message id comes back (here with a later request) and runs again
    again = sqs_record(json.dumps(v2_request(x[2:], rid="b")), message_id, receive_count=2)
    assert iris_fn.sqs_handler(sqs_event(again), lambda_context) == {"batchItemFailures": []}
    assert s3.keys(results_bucket) == [result_key(message_id)]
    assert_v2_answer(json.loads(s3.get(results_bucket, result_key(message_id))), iris_ref.run(x[2:]), "b")


def test_request_uri_reads_a_large_request_from_s3(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    x = iris_ref.rows(20_000, seed=4)  # ~500 KiB of JSON: over SQS's 256 KiB message limit
    body = json.dumps(v2_request(x, rid="big")).encode()
    assert len(body) > 256 * 1024
    s3.put(input_bucket, "requests/big request.json", body)
    record = sqs_record(json.dumps({"request_uri": f"s3://{input_bucket}/requests/big request.json"}))
    assert len(record["body"]) < 1024

    assert iris_fn.sqs_handler(sqs_event(record), lambda_context) == {"batchItemFailures": []}
    assert_v2_answer(json.loads(s3.get(results_bucket, result_key(record["messageId"]))), iris_ref.run(x), "big")


def test_without_results_every_message_fails(
    make_function: MakeFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: LambdaContext,
) -> None:
    """Nothing is lost: with nowhere to write, every message goes back to the queue (and on to its DLQ)."""
    monkeypatch.delenv("MODELFN_RESULTS", raising=False)
    fn = make_function("iris", results=None)
    x = iris_ref.rows(3, seed=5)
    records = [sqs_record(json.dumps({"instances": x[i : i + 1].tolist()})) for i in range(3)]
    response = fn.batch_handler(sqs_event(*records), lambda_context)
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(r["messageId"] for r in records)
    assert s3.keys(results_bucket) == []
