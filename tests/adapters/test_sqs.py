"""The SQS batch handler: each message is one inference request whose answer lands at
<MODELFN_RESULTS>/<model>/<messageId>.json; failing messages, and only those, come back in batchItemFailures, each
logged with its reason. A request_uri is followed only to S3 under the requests prefix, up to the body limit."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.response import StreamingBody

from modelfn import jsonio
from modelfn.function import ModelFunction

from .conftest import S3, IrisReference, LambdaContext, MakeFunction, new_bucket

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
def iris_fn(make_function: MakeFunction, input_bucket: str) -> ModelFunction:
    """iris, reading out-of-band requests under s3://<input_bucket>/requests/ as the template's batch functions do."""
    return make_function("iris", requests_prefix=f"s3://{input_bucket}/requests")


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


# ---- request_uri: only s3:// objects under the requests prefix, size-bounded; every failure logged ----------------


class LocalReads:
    """A process audit hook that records, and refuses, every open() of the watched local paths: proof that no
    message made the handler read a local file (and no hang on /dev/zero even if one tried)."""

    def __init__(self) -> None:
        self.watched: set[str] = set()
        self.opened: list[str] = []

    def watch(self, *paths: str | os.PathLike[str]) -> None:
        self.watched.update(os.path.realpath(p) for p in paths)

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not self.watched or not isinstance(args[0], str | bytes | os.PathLike):
            return
        path = os.path.realpath(os.fsdecode(args[0]))
        if path in self.watched:
            self.opened.append(path)
            raise PermissionError(f"test: {path} must not be read by the SQS handler")


@functools.cache
def _audit_hook() -> LocalReads:
    hook = LocalReads()
    sys.addaudithook(hook)  # for the life of the process, idle unless a test watches paths
    return hook


@pytest.fixture
def local_reads() -> Iterator[LocalReads]:
    hook = _audit_hook()
    yield hook
    hook.watched.clear()
    hook.opened.clear()


def failed_ids(response: dict[str, Any]) -> list[str]:
    return sorted(f["itemIdentifier"] for f in response["batchItemFailures"])


def failure_logs(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    """The handler's failure lines on logger "modelfn" by messageId (one each, asserted): the structured fields
    each carries, plus its `levelno` and formatted `message`."""
    std = set(vars(logging.makeLogRecord({})))
    lines = [
        {k: v for k, v in vars(r).items() if k not in std} | {"levelno": r.levelno, "message": r.getMessage()}
        for r in caplog.records
        if r.name == "modelfn" and "messageId" in vars(r)
    ]
    by_id = {line["messageId"]: line for line in lines}
    assert len(by_id) == len(lines), [line["message"] for line in lines]
    return by_id


def pointer(uri: Any) -> dict[str, Any]:
    return sqs_record(json.dumps({"request_uri": uri}))


def test_request_uri_is_followed_only_to_s3_objects_under_the_requests_prefix(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    tmp_path: Path,
    local_reads: LocalReads,
    caplog: pytest.LogCaptureFixture,
    lambda_context: LambdaContext,
) -> None:
    x = iris_ref.rows(2, seed=6)
    request = json.dumps(v2_request(x, rid="ok")).encode()
    other = new_bucket("other")
    # the same valid request everywhere a message might point: only the first place may be read
    s3.put(input_bucket, "requests/ok.json", request)
    s3.put(other, "requests/ok.json", request)
    s3.put(input_bucket, "requests-evil/ok.json", request)
    s3.put(input_bucket, "elsewhere/ok.json", request)
    s3.put(input_bucket, "requests", request)
    local = tmp_path / "ok.json"
    local.write_bytes(request)
    local_reads.watch("/etc/passwd", "/dev/zero", local)
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    refused_uris = [
        "/etc/passwd",
        "/dev/zero",
        "file:///etc/passwd",
        "file:///dev/zero",
        local.as_uri(),
        str(local),
        f"s3://{other}/requests/ok.json",  # another bucket
        f"s3://{input_bucket}/requests-evil/ok.json",  # a sibling prefix
        f"s3://{input_bucket}/requests/../elsewhere/ok.json",
        f"s3://{input_bucket}/requests/./ok.json",
        f"s3://{input_bucket}/requests//ok.json",
        f"s3://{input_bucket}/requests",  # the prefix itself is no object under it
        f"s3://{input_bucket}",
        f"{endpoint}/{input_bucket}/requests/ok.json",  # the allowed object, over plain http
        f"S3://{input_bucket}/requests/ok.json",
        f"s3://{input_bucket}/requests/{'x' * 2000}",
        ["s3://", input_bucket, "requests/ok.json"],
    ]
    refused = [pointer(uri) for uri in refused_uris]
    good = [pointer(f"s3://{input_bucket}/requests/ok.json"), sqs_record(json.dumps(v2_request(x, rid="ok")))]
    caplog.set_level(logging.WARNING, logger="modelfn")

    started = time.monotonic()
    response = iris_fn.batch_handler(sqs_event(good[0], *refused, good[1]), lambda_context)
    assert time.monotonic() - started < 10  # /dev/zero is never opened, let alone read to the end

    assert failed_ids(response) == sorted(r["messageId"] for r in refused)
    assert local_reads.opened == []
    assert s3.keys(results_bucket) == sorted(result_key(r["messageId"]) for r in good)
    for r in good:
        assert_v2_answer(json.loads(s3.get(results_bucket, result_key(r["messageId"]))), iris_ref.run(x), "ok")
    logs = failure_logs(caplog)
    assert sorted(logs) == sorted(r["messageId"] for r in refused)
    for record, uri in zip(refused, refused_uris, strict=True):
        reason = logs[record["messageId"]]["reason"]
        assert "request_uri" in reason and logs[record["messageId"]]["status"] == 400, reason
        if isinstance(uri, str) and len(uri) < 1024:
            assert repr(uri) in reason
    assert "only s3:// objects under" in logs[refused[0]["messageId"]]["reason"]
    assert "is outside" in logs[refused[7]["messageId"]]["reason"]
    assert "'..'" in logs[refused[8]["messageId"]]["reason"]
    assert "S3 keys are at most 1024 bytes" in logs[refused[-2]["messageId"]]["reason"]
    assert "must be a string" in logs[refused[-1]["messageId"]]["reason"]


def test_request_uri_objects_over_the_body_limit_fail_without_being_read_whole(
    make_function: MakeFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: LambdaContext,
) -> None:
    limit = 4096
    fn = make_function("iris", requests_prefix=f"s3://{input_bucket}/requests/", max_body_bytes=limit)
    x = iris_ref.rows(1, seed=7)
    body = json.dumps(v2_request(x, rid="fits")).encode()
    s3.put(input_bucket, "requests/at-limit.json", body + b" " * (limit - len(body)))
    s3.put(input_bucket, "requests/one-over.json", body + b" " * (limit + 1 - len(body)))
    s3.put(input_bucket, "requests/huge.json", body + b" " * (32 * 2**20))
    fits, one_over, huge = (pointer(f"s3://{input_bucket}/requests/{k}.json") for k in ("at-limit", "one-over", "huge"))

    received = 0  # bytes the handler took off S3 response bodies
    readinto = StreamingBody.readinto

    def counting_readinto(self: StreamingBody, buffer: Any) -> int:
        nonlocal received
        n = int(readinto(self, buffer))
        received += n
        return n

    monkeypatch.setattr(StreamingBody, "readinto", counting_readinto)
    caplog.set_level(logging.WARNING, logger="modelfn")
    response = fn.batch_handler(sqs_event(fits, one_over, huge), lambda_context)

    assert failed_ids(response) == sorted([one_over["messageId"], huge["messageId"]])
    assert_v2_answer(json.loads(s3.get(results_bucket, result_key(fits["messageId"]))), iris_ref.run(x), "fits")
    assert 3 * limit < received < 3 * limit + 3 * 2**20  # the limit and at most one read buffer per object
    logs = failure_logs(caplog)
    for r in (one_over, huge):
        assert logs[r["messageId"]]["status"] == 413
        assert "over the limit of 4096 bytes (MODELFN_MAX_BODY_BYTES)" in logs[r["messageId"]]["reason"]


def test_request_uri_defaults_to_the_results_location(
    make_function: MakeFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    """Without MODELFN_REQUESTS_PREFIX, requests are read under MODELFN_RESULTS (s3://<results_bucket>/results)."""
    fn = make_function("iris")
    x = iris_ref.rows(3, seed=8)
    request = json.dumps({"instances": x.tolist()}).encode()
    s3.put(results_bucket, "results/requests/r.json", request)
    s3.put(input_bucket, "requests/r.json", request)
    inside = pointer(f"s3://{results_bucket}/results/requests/r.json")
    outside = pointer(f"s3://{input_bucket}/requests/r.json")
    response = fn.batch_handler(sqs_event(inside, outside), lambda_context)
    assert failed_ids(response) == [outside["messageId"]]
    assert_tf_rows(json.loads(s3.get(results_bucket, result_key(inside["messageId"]))), iris_ref.run(x))


def test_a_bare_bucket_as_requests_prefix_admits_the_whole_bucket(
    make_function: MakeFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    fn = make_function("iris", requests_prefix=f"s3://{input_bucket}")
    x = iris_ref.rows(2, seed=12)
    request = json.dumps({"instances": x.tolist()}).encode()
    s3.put(input_bucket, "any/where/r.json", request)
    s3.put(results_bucket, "any/where/r.json", request)
    inside = pointer(f"s3://{input_bucket}/any/where/r.json")
    outside = pointer(f"s3://{results_bucket}/any/where/r.json")
    response = fn.batch_handler(sqs_event(inside, outside), lambda_context)
    assert failed_ids(response) == [outside["messageId"]]
    assert_tf_rows(json.loads(s3.get(results_bucket, result_key(inside["messageId"]))), iris_ref.run(x))


def test_request_uri_is_never_followed_where_the_requests_prefix_is_not_s3(
    make_function: MakeFunction,
    iris_ref: IrisReference,
    s3: S3,
    input_bucket: str,
    tmp_path: Path,
    local_reads: LocalReads,
    caplog: pytest.LogCaptureFixture,
    lambda_context: LambdaContext,
) -> None:
    """A local results folder (as in local runs) or a file:// MODELFN_REQUESTS_PREFIX turns request_uri off,
    saying so; inline requests keep working."""
    x = iris_ref.rows(1, seed=9)
    local = tmp_path / "requests" / "r.json"
    local.parent.mkdir()
    local.write_bytes(json.dumps({"instances": x.tolist()}).encode())
    s3.put(input_bucket, "requests/r.json", local.read_bytes())
    local_reads.watch(local, "/etc/passwd")
    caplog.set_level(logging.WARNING, logger="modelfn")
    for prefix in (None, (tmp_path / "requests").as_uri()):
        results = tmp_path / "results"
        fn = make_function("iris", results=results.as_uri(), requests_prefix=prefix)
        inline = sqs_record(json.dumps({"instances": x.tolist()}))
        pointers = [pointer(local.as_uri()), pointer("/etc/passwd"), pointer(f"s3://{input_bucket}/requests/r.json")]
        response = fn.batch_handler(sqs_event(inline, *pointers), lambda_context)
        assert failed_ids(response) == sorted(p["messageId"] for p in pointers)
        assert_tf_rows(json.loads((results / "iris" / f"{inline['messageId']}.json").read_bytes()), iris_ref.run(x))
        logs = failure_logs(caplog)
        assert all("is not followed" in logs[p["messageId"]]["reason"] for p in pointers)
        assert "is not an s3://bucket[/prefix]" in logs[pointers[0]["messageId"]]["reason"]
    assert local_reads.opened == []


def test_every_failed_message_is_logged_once_with_its_reason(
    iris_fn: ModelFunction,
    make_function: MakeFunction,
    iris_ref: IrisReference,
    input_bucket: str,
    caplog: pytest.LogCaptureFixture,
    lambda_context: LambdaContext,
) -> None:
    x = iris_ref.rows(2, seed=10)
    wrong_shape = v2_request(x)
    wrong_shape["inputs"][0]["shape"] = [2, 3]
    bad = {
        "not valid JSON": sqs_record('{"inputs": ['),
        "needs 6 elements, got 8": sqs_record(json.dumps(wrong_shape)),
        "is for POST /predict only": sqs_record(json.dumps({"features": x.tolist()})),
        "cannot tell the protocol": sqs_record(json.dumps({"rows": x.tolist()})),
        "must be a JSON object": sqs_record(json.dumps([1, 2])),
        "holds nothing else": sqs_record(
            json.dumps({"request_uri": f"s3://{input_bucket}/requests/x.json", "instances": x.tolist()})
        ),
        "does not exist": pointer(f"s3://{input_bucket}/requests/missing.json"),
    }
    good = sqs_record(json.dumps({"instances": x.tolist()}))
    caplog.set_level(logging.WARNING, logger="modelfn")
    response = iris_fn.batch_handler(sqs_event(good, *bad.values()), lambda_context)

    assert failed_ids(response) == sorted(r["messageId"] for r in bad.values())
    logs = failure_logs(caplog)
    assert sorted(logs) == sorted(r["messageId"] for r in bad.values())
    for expected, record in bad.items():
        line = logs[record["messageId"]]
        assert line["levelno"] == logging.WARNING and line["status"] == 400
        assert (line["model"], line["version"]) == ("iris", 1)
        assert expected in line["reason"], (expected, line["reason"])
        assert json.loads(line["message"]) == {
            k: line[k] for k in ("event", "model", "version", "reason", "messageId", "status")
        }

    # a version that cannot be served: the reason names it, and no version is claimed
    caplog.clear()
    pinned = make_function("iris", version="99")
    message = sqs_record(json.dumps({"instances": x.tolist()}))
    assert failed_ids(pinned.batch_handler(sqs_event(message), lambda_context)) == [message["messageId"]]
    line = failure_logs(caplog)[message["messageId"]]
    assert line["model"] == "iris" and "version" not in line
    assert "99" in line["reason"] and line["status"] in (404, 503)


def test_a_message_body_is_parsed_once(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    results_bucket: str,
    input_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: LambdaContext,
) -> None:
    """Each document is JSON-parsed once: an inline request once, a request_uri message and its object once each."""
    x = iris_ref.rows(3, seed=11)
    s3.put(input_bucket, "requests/once.json", json.dumps({"inputs": x.tolist()}).encode())
    records = [
        sqs_record(json.dumps(v2_request(x, rid="v2"))),
        sqs_record(json.dumps({"instances": x.tolist(), "id": "tf"})),
        pointer(f"s3://{input_bucket}/requests/once.json"),
    ]
    parsed: list[Any] = []
    loads = jsonio.loads

    def counting_loads(body: bytes | str, what: str = "request body") -> Any:
        parsed.append(what)
        return loads(body, what)

    monkeypatch.setattr(jsonio, "loads", counting_loads)
    assert iris_fn.sqs_handler(sqs_event(*records), lambda_context) == {"batchItemFailures": []}
    assert len(parsed) == 4, parsed
    expected = iris_ref.run(x)
    assert_v2_answer(json.loads(s3.get(results_bucket, result_key(records[0]["messageId"]))), expected, "v2")
    tf = json.loads(s3.get(results_bucket, result_key(records[1]["messageId"])))
    assert tf.pop("id") == "tf"
    assert_tf_rows(tf, expected)
    assert_tf_columns(json.loads(s3.get(results_bucket, result_key(records[2]["messageId"]))), expected)
