"""The S3 batch handler: an object created under incoming/<model>/ is scored, streamed, into
<MODELFN_RESULTS>/<model>/<relative key> plus <that key>.errors.jsonl, every input row landing in exactly one of
them; and Step Functions Distributed Map item batches through the batch handler."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import numpy as np
import pytest

from modelfn.function import ModelFunction
from modelfn.model.loaded import LoadedModel
from modelfn.store.s3 import MultipartWriter

from .conftest import S3, IrisReference, LambdaContext, MakeFunction

HEADER = b"id,sepal_length,sepal_width,petal_length,petal_width\n"
RESULT_COLUMNS = ["id", "label", "probabilities_0", "probabilities_1", "probabilities_2"]

# ---- input files -----------------------------------------------------------------------------------------
# Rows are generated as fixed-width text with numpy (no per-value Python formatting), so a million rows take about
# a second: "<12-digit row number>-<12 random digits>,d.dddddd,d.dddddd,d.dddddd,d.dddddd\n".
ROW_BYTES = 62
_TRIPLES = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)
_LO = np.array([4.3, 2.0, 1.0, 0.1])
_HI = np.array([7.9, 4.4, 6.9, 2.5])

BAD_ROWS = {  # kind -> the replacement line for the row with that id
    "non-numeric": "{id},5.100000,abc,1.400000,0.200000",
    "too few fields": "{id},5.100000,3.500000,1.400000",
    "too many fields": "{id},5.100000,3.500000,1.400000,0.200000,0.300000",
    "empty field": "{id},5.100000,,1.400000,0.200000",
}


def _digits(buf: np.ndarray, col: int, values: np.ndarray, groups: int) -> None:
    """Write values (< 1000**groups) as 3*groups decimal digits into buf[:, col:]."""
    for g in range(groups - 1, -1, -1):
        buf[:, col + 3 * g : col + 3 * g + 3] = _TRIPLES[values % 1000]
        values = values // 1000


def _good_rows(start: int, n: int, rng: np.random.Generator) -> np.ndarray:
    fixed = np.round((_LO + rng.random((n, 4)) * (_HI - _LO)) * 1e6).astype(np.int64)
    buf = np.empty((n, ROW_BYTES), dtype=np.uint8)
    _digits(buf, 0, np.arange(start, start + n, dtype=np.int64), 4)
    buf[:, 12] = ord("-")
    _digits(buf, 13, rng.integers(0, 10**12, n, dtype=np.int64), 4)
    for j in range(4):
        p = 25 + 9 * j
        buf[:, p] = ord(",")
        buf[:, p + 1] = fixed[:, j] // 10**6 + ord("0")
        buf[:, p + 2] = ord(".")
        _digits(buf, p + 3, fixed[:, j] % 10**6, 2)
    buf[:, ROW_BYTES - 1] = ord("\n")
    return buf


def iris_csv(n: int, bad: Mapping[int, str] | None = None, seed: int = 0, chunk: int = 100_000) -> Iterator[bytes]:
    """The CSV (header, then n rows) in blocks; rows at the 0-based indexes in `bad` are replaced by that kind of
    malformed line, keeping their id."""
    bad = bad or {}
    rng = np.random.default_rng(seed)
    yield HEADER
    for start in range(0, n, chunk):
        rows = _good_rows(start, min(chunk, n - start), rng)
        marks = sorted(i - start for i in bad if start <= i < start + len(rows))
        if not marks:
            yield rows.tobytes()
            continue
        pos = 0
        parts = []
        for m in marks:
            parts.append(rows[pos:m].tobytes())
            row_id = rows[m, :25].tobytes().decode()
            parts.append(BAD_ROWS[bad[start + m]].format(id=row_id).encode() + b"\n")
            pos = m + 1
        parts.append(rows[pos:].tobytes())
        yield b"".join(parts)


# ---- events ----------------------------------------------------------------------------------------------
def s3_put_event(bucket: str, key: str, size: int = 0) -> dict[str, Any]:
    """As `sam local generate-event s3 put` shapes it; the key is URL-encoded the way S3 notifications send it."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": "EXAMPLE123456789",
                    "x-amz-id-2": "EXAMPLE123/5678abcdefghijklambdaisawesome/mnopqrstuvwxyzABCDEFGH",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "modelfn-iris-incoming",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": "0123456789abcdef0123456789abcdef",
                        "sequencer": "0A1B2C3D4E5F678901",
                    },
                },
            }
        ]
    }


@pytest.fixture
def iris_fn(make_function: MakeFunction) -> ModelFunction:
    return make_function("iris")


def parse_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode())))
    return rows[0], rows[1:]


def errors_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


# ---- acceptance: a 100k-row CSV with malformed rows ------------------------------------------------------
def test_csv_of_100k_rows_with_malformed_rows(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    n = 100_000
    bad = {
        0: "non-numeric",
        17: "empty field",
        8191: "too few fields",  # the last row of the first chunk and the first of the second
        8192: "too many fields",
        50_000: "non-numeric",
        50_001: "too few fields",
        99_999: "empty field",
    }
    data = b"".join(iris_csv(n, bad, seed=11))
    key = "incoming/iris/run=1/big file.csv"
    s3.put(input_bucket, key, data)
    event = s3_put_event(input_bucket, key, len(data))
    assert event["Records"][0]["s3"]["object"]["key"] == "incoming/iris/run%3D1/big+file.csv"

    response = iris_fn.s3_handler(event, lambda_context)

    out_key = "results/iris/run=1/big file.csv"
    err_key = out_key + ".errors.jsonl"
    (summary,) = response["results"]
    assert summary["output"] == f"s3://{results_bucket}/{out_key}"
    assert summary["errors_output"] == f"s3://{results_bucket}/{err_key}"
    assert (summary["rows"], summary["scored"], summary["errors"]) == (n, n - len(bad), len(bad))
    assert s3.keys(results_bucket) == sorted([out_key, err_key])

    _, input_rows = parse_csv(data)
    input_ids = [r[0] for r in input_rows]
    assert len(set(input_ids)) == n

    header, result_rows = parse_csv(s3.get(results_bucket, out_key))
    assert header == RESULT_COLUMNS
    errors = errors_of(s3.get(results_bucket, err_key))

    # every input row in exactly one of the two outputs
    result_ids = [r[0] for r in result_rows]
    error_ids = [e["id"] for e in errors]
    assert len(result_ids) == len(set(result_ids)) == n - len(bad)
    assert set(result_ids) | set(error_ids) == set(input_ids)
    assert not set(result_ids) & set(error_ids)

    # error records: row (1-based, header excluded), id, a reason
    assert [e["row"] for e in errors] == [i + 1 for i in sorted(bad)]
    for e in errors:
        assert set(e) == {"row", "id", "error"}
        assert e["id"] == input_ids[e["row"] - 1]
        assert e["error"]
    by_row = {e["row"]: e["error"] for e in errors}
    assert "expected 5 fields" in by_row[8192] and "got 4" in by_row[8192]
    assert "got 6" in by_row[8193]

    # the values are onnxruntime's on the same rows (all of them: onnxruntime takes milliseconds)
    features = {r[0]: r[1:] for r in input_rows}
    x = np.array([features[i] for i in result_ids], dtype=np.float32)
    expected = iris_ref.run(x)
    np.testing.assert_array_equal(np.array([r[1] for r in result_rows], dtype=np.int64), expected["label"])
    probabilities = np.array([r[2:] for r in result_rows], dtype=np.float32)
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)
    # and the rows keep the input's order
    failed = set(error_ids)
    assert result_ids == [i for i in input_ids if i not in failed]


# ---- peak memory -----------------------------------------------------------------------------------------
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of this process (which holds moto's
# objects) would report the parent's size.
PEAK_SCRIPT = r"""
import json, sys
from modelfn.function import ModelFunction
from modelfn.settings import Settings

class Context:
    function_name = "modelfn-iris"
    memory_limit_in_mb = 1024
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-iris"
    aws_request_id = "memory-test"

def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

settings, event = json.loads(sys.argv[1]), json.loads(sys.argv[2])
fn = ModelFunction(Settings(**settings))
loaded_kb = status_kb("VmHWM")
result = fn.s3_handler(event, Context())
print(json.dumps({
    "result": result,
    "loaded_hwm_kb": loaded_kb,
    "hwm_kb": status_kb("VmHWM"),
}))
"""


def _score_in_subprocess(settings: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    env = dict(
        os.environ,
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="WARNING",
    )
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, json.dumps(settings), json.dumps(event)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_file(
    s3_store: str, s3: S3, input_bucket: str, results_bucket: str, tmp_path: Path
) -> None:
    settings = {
        "store": s3_store,
        "model": "iris",
        "results": f"s3://{results_bucket}/results",
        "input_prefix": "incoming/iris/",
        "cache_dir": str(tmp_path / "cache"),
    }
    sizes: dict[int, int] = {}
    runs: dict[int, dict[str, Any]] = {}
    try:
        for n in (100_000, 1_000_000):
            path = tmp_path / f"rows-{n}.csv"
            with path.open("wb") as f:
                for block in iris_csv(n, {5: "non-numeric", n - 1: "too few fields"}, seed=n):
                    f.write(block)
            sizes[n] = path.stat().st_size
            key = f"incoming/iris/memory/{n}.csv"
            s3.client.upload_file(str(path), input_bucket, key)
            path.unlink()
            runs[n] = _score_in_subprocess(settings, s3_put_event(input_bucket, key, sizes[n]))
            (summary,) = runs[n]["result"]["results"]
            assert (summary["rows"], summary["scored"], summary["errors"]) == (n, n - 2, 2)
            head = s3.client.head_object(Bucket=results_bucket, Key=f"results/iris/memory/{n}.csv")
            assert head["ContentLength"] > sizes[n] // 2
    finally:  # moto keeps objects in this process's memory
        for bucket in (input_bucket, results_bucket):
            for key in s3.keys(bucket):
                s3.client.delete_object(Bucket=bucket, Key=key)

    small, big = runs[100_000], runs[1_000_000]
    mb = 1024 * 1024
    input_growth = (sizes[1_000_000] - sizes[100_000]) / mb
    peak_growth = (big["hwm_kb"] - small["hwm_kb"]) / 1024
    print(
        f"\npeak RSS (VmHWM): 100k rows ({sizes[100_000] / mb:.1f} MiB) {small['hwm_kb'] / 1024:.1f} MiB"
        f" [after model load {small['loaded_hwm_kb'] / 1024:.1f} MiB];"
        f" 1M rows ({sizes[1_000_000] / mb:.1f} MiB) {big['hwm_kb'] / 1024:.1f} MiB"
        f" [after model load {big['loaded_hwm_kb'] / 1024:.1f} MiB];"
        f" growth {peak_growth:.1f} MiB for {input_growth:.1f} MiB more input"
    )
    assert input_growth > 50
    assert peak_growth < 60


# ---- never triggering itself -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "incoming/mlp/rows.csv",  # another model's input
        "other/rows.csv",  # outside the input prefix
        "incoming/iris/run=1/rows.csv.errors.jsonl",  # the function's own errors output
        "incoming/iris/run=1/",  # a "folder" marker
    ],
)
def test_keys_it_must_not_score_are_skipped(
    key: str,
    iris_fn: ModelFunction,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    # a perfectly scoreable object: were it not skipped, something would be written
    body = b'{"id": "a", "features": [5.1, 3.5, 1.4, 0.2]}\n' if key.endswith(".jsonl") else b"".join(iris_csv(3))
    s3.put(input_bucket, key, body)
    response = iris_fn.batch_handler(s3_put_event(input_bucket, key), lambda_context)
    assert response == {"results": [{"input": f"s3://{input_bucket}/{key}", "skipped": True}]}
    assert s3.keys(results_bucket) == []
    assert s3.uploads(results_bucket) == []


# ---- other formats ---------------------------------------------------------------------------------------
def test_jsonl_in_jsonl_out(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    x = iris_ref.rows(5, seed=21)
    lines = [
        json.dumps({"id": "a", "features": x[0].tolist()}),
        json.dumps({"id": 7, "features": x[1].tolist()}),
        "{not json",
        json.dumps(x[2].tolist()),  # a bare list: no id
        json.dumps({"id": "short", "features": x[3, :3].tolist()}),
        "",  # blank lines are not rows
        json.dumps({"id": "e", "features": x[4].tolist()}),
    ]
    key = "incoming/iris/day=2/rows.jsonl"
    s3.put(input_bucket, key, "\n".join(lines).encode() + b"\n")

    response = iris_fn.batch_handler(s3_put_event(input_bucket, key), lambda_context)
    assert response["results"][0]["rows"] == 6

    out = [json.loads(line) for line in s3.get(results_bucket, "results/iris/day=2/rows.jsonl").splitlines()]
    expected = iris_ref.run(x[[0, 1, 2, 4]])
    assert [o.get("id") for o in out] == ["a", 7, None, "e"]
    assert "id" not in out[2]
    for o, label, probs in zip(out, expected["label"], expected["probabilities"], strict=True):
        assert set(o) - {"id"} == {"label", "probabilities_0", "probabilities_1", "probabilities_2"}
        assert o["label"] == int(label)
        np.testing.assert_allclose([o[f"probabilities_{k}"] for k in range(3)], probs, rtol=1e-5, atol=1e-6)
    errors = errors_of(s3.get(results_bucket, "results/iris/day=2/rows.jsonl.errors.jsonl"))
    assert [e["row"] for e in errors] == [3, 5]
    assert "id" not in errors[0] and "not valid JSON" in errors[0]["error"]
    assert errors[1]["id"] == "short" and "expected 4 features" in errors[1]["error"]


def test_parquet_in_parquet_out(
    iris_fn: ModelFunction,
    iris_ref: IrisReference,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 20_000  # more than one chunk, so more than one row group is written
    x = iris_ref.rows(n, seed=22)
    ids = [f"p{i}" for i in range(n)]
    table = pa.table(
        {"id": ids, **{name: x[:, j] for j, name in enumerate(["sl", "sw", "pl", "pw"])}},
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    key = "incoming/iris/rows.parquet"
    s3.put(input_bucket, key, sink.getvalue())

    response = iris_fn.s3_handler(s3_put_event(input_bucket, key), lambda_context)
    assert (response["results"][0]["scored"], response["results"][0]["errors"]) == (n, 0)

    out = pq.read_table(io.BytesIO(s3.get(results_bucket, "results/iris/rows.parquet")))
    assert out.column_names == RESULT_COLUMNS
    assert out.column("id").to_pylist() == ids
    expected = iris_ref.run(x)
    np.testing.assert_array_equal(out.column("label").to_numpy(), expected["label"])
    probabilities = np.stack([out.column(f"probabilities_{k}").to_numpy() for k in range(3)], axis=1)
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)
    assert s3.get(results_bucket, "results/iris/rows.parquet.errors.jsonl") == b""


def test_unsupported_extension_is_reported_and_writes_nothing(
    iris_fn: ModelFunction, s3: S3, input_bucket: str, results_bucket: str, lambda_context: LambdaContext
) -> None:
    key = "incoming/iris/rows.txt"
    s3.put(input_bucket, key, b"".join(iris_csv(10)))
    response = iris_fn.s3_handler(s3_put_event(input_bucket, key), lambda_context)
    (summary,) = response["results"]
    assert summary["input"] == f"s3://{input_bucket}/{key}"
    assert "unsupported file type" in summary["error"]
    assert s3.keys(results_bucket) == []
    assert s3.uploads(results_bucket) == []


# ---- a failure mid-file leaves nothing behind --------------------------------------------------------------
def test_failure_mid_file_aborts_the_uploads(
    iris_fn: ModelFunction,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # small parts, so the first chunk's output has already been uploaded as a part when the failure comes
    monkeypatch.setattr(MultipartWriter, "PART_SIZE", 64 * 1024)
    started: list[str] = []
    aborted: list[str] = []
    flush, abort = MultipartWriter._flush, MultipartWriter.abort

    def spy_flush(self: MultipartWriter) -> None:
        flush(self)
        if self.upload_id not in started:
            started.append(str(self.upload_id))

    def spy_abort(self: MultipartWriter) -> None:
        if self.upload_id is not None:
            aborted.append(self.upload_id)
        abort(self)

    monkeypatch.setattr(MultipartWriter, "_flush", spy_flush)
    monkeypatch.setattr(MultipartWriter, "abort", spy_abort)

    calls = {"n": 0}
    predict = LoadedModel.predict

    def failing_predict(self: LoadedModel, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("the model fell over")
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(LoadedModel, "predict", failing_predict)

    key = "incoming/iris/fails.csv"
    s3.put(input_bucket, key, b"".join(iris_csv(30_000, {3: "non-numeric"})))
    with pytest.raises(RuntimeError, match="fell over"):
        iris_fn.s3_handler(s3_put_event(input_bucket, key), lambda_context)

    assert calls["n"] == 2
    assert started, "the first chunk's output should have started a multipart upload"
    assert sorted(aborted) == sorted(started)
    listing = s3.client.list_objects_v2(Bucket=results_bucket)
    assert listing["KeyCount"] == 0
    assert s3.uploads(results_bucket) == []


# ---- Step Functions Distributed Map item batches -----------------------------------------------------------
def test_item_batch_scores_rows_and_reports_bad_items(
    iris_fn: ModelFunction, iris_ref: IrisReference, lambda_context: LambdaContext
) -> None:
    x = iris_ref.rows(4, seed=31)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

    def item(i: str, values: Any) -> dict[str, Any]:
        return {"id": i, **{c: str(v) for c, v in zip(names, values, strict=True)}}

    items: list[Any] = [
        item("r1", x[0]),
        item("r2", x[1]),
        {**item("bad-value", x[2]), "petal_length": "n/a"},
        {"id": "missing", **{c: "1.0" for c in names[:3]}},
        item("r3", x[2]),
        "not an object",
        item("r4", x[3]),
    ]
    event = {"Items": items, "BatchInput": {"bucket": "input", "key": "incoming/iris/huge.csv"}}

    response = iris_fn.batch_handler(event, lambda_context)

    assert response["source"] == {"bucket": "input", "key": "incoming/iris/huge.csv"}
    scored = response["scored"]
    assert [r["id"] for r in scored] == ["r1", "r2", "r3", "r4"]
    expected = iris_ref.run(np.array([[float(v) for v in x_i.astype(str)] for x_i in x], dtype=np.float32))
    for row, label, probs in zip(scored, expected["label"], expected["probabilities"], strict=True):
        assert row["label"] == int(label)
        np.testing.assert_allclose([row[f"probabilities_{k}"] for k in range(3)], probs, rtol=1e-5, atol=1e-6)
    errors = response["errors"]
    assert [e["item"] for e in errors] == [3, 4, 6]
    assert [e.get("id") for e in errors] == ["bad-value", "missing", None]
    assert "FP32" in errors[0]["error"]
    assert "missing column" in errors[1]["error"] and "petal_width" in errors[1]["error"]
    assert "not an object" in errors[2]["error"]
    json.dumps(response)  # Step Functions needs it as JSON


def test_results_inside_the_input_prefix_never_retrigger(
    make_function: MakeFunction, s3: S3, input_bucket: str, lambda_context: LambdaContext
) -> None:
    """Even misconfigured with MODELFN_RESULTS inside its own input prefix, the function does not score its output."""
    fn = make_function(results=f"s3://{input_bucket}/incoming/iris/out")
    s3.put(input_bucket, "incoming/iris/a.csv", b"".join(iris_csv(3)))
    first = fn.batch_handler(s3_put_event(input_bucket, "incoming/iris/a.csv"), lambda_context)
    (done,) = first["results"]
    assert done["output"] == f"s3://{input_bucket}/incoming/iris/out/iris/a.csv"
    # the notification S3 would send for that result object is skipped
    again = fn.batch_handler(s3_put_event(input_bucket, "incoming/iris/out/iris/a.csv"), lambda_context)
    assert again["results"][0].get("skipped") is True


def test_blank_lines_are_not_rows(
    iris_fn: ModelFunction, s3: S3, input_bucket: str, results_bucket: str, lambda_context: LambdaContext
) -> None:
    data = b"id,a,b,c,d\n\nr1,5.1,3.5,1.4,0.2\n\nr2,1,2\n"
    s3.put(input_bucket, "incoming/iris/blank.csv", data)
    (done,) = iris_fn.batch_handler(s3_put_event(input_bucket, "incoming/iris/blank.csv"), lambda_context)["results"]
    assert (done["rows"], done["scored"], done["errors"]) == (2, 1, 1)
    errors = boto3.client("s3").get_object(Bucket=results_bucket, Key="results/iris/blank.csv.errors.jsonl")
    (error,) = [json.loads(line) for line in errors["Body"].read().splitlines()]
    assert (error["row"], error["id"]) == (2, "r2")


# ---- what real files bring -----------------------------------------------------------------------------------
def test_bytes_that_are_not_utf8_are_a_row_error_not_an_exception(
    iris_fn: ModelFunction, s3: S3, input_bucket: str, results_bucket: str, lambda_context: LambdaContext
) -> None:
    """An exception out of the handler would have Lambda retry the object forever."""
    data = b"".join(iris_csv(20_000)).replace(b"\n000000012345-", b"\n00000001\xff345-", 1)
    assert b"\xff" in data
    s3.put(input_bucket, "incoming/iris/latin1.csv", data)
    (done,) = iris_fn.s3_handler(s3_put_event(input_bucket, "incoming/iris/latin1.csv"), lambda_context)["results"]
    assert (done["rows"], done["scored"], done["errors"]) == (20_000, 19_999, 1)
    (error,) = errors_of(s3.get(results_bucket, "results/iris/latin1.csv.errors.jsonl"))
    assert error["row"] == 12_346 and error["error"] == "not UTF-8 text: byte 0xff in field 1"
    assert error["id"].startswith("00000001\ufffd345-")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", "looks like data, but a CSV file needs a header line"),
        (HEADER + b'a,5.1,3.5,1.4,0.2\n"b,5.1,3.5,1.4,0.2\n', "row 2: a quoted field is not closed"),
        (b"id,a,b,c\nr1,1,2,3\n", "has 3 feature column(s) ['a', 'b', 'c']"),
    ],
    ids=["no header", "quote never closed", "too few columns"],
)
def test_a_file_that_cannot_be_scored_is_reported_not_raised(
    body: bytes,
    reason: str,
    iris_fn: ModelFunction,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "incoming/iris/broken.csv"
    s3.put(input_bucket, key, body)
    with caplog.at_level("ERROR", logger="modelfn"):
        (done,) = iris_fn.s3_handler(s3_put_event(input_bucket, key), lambda_context)["results"]
    assert done["input"] == f"s3://{input_bucket}/{key}" and reason in done["error"]
    assert any(reason in r.getMessage() for r in caplog.records)
    assert s3.keys(results_bucket) == []
    assert s3.uploads(results_bucket) == []


def test_parquet_that_is_not_parquet_is_reported(
    iris_fn: ModelFunction, s3: S3, input_bucket: str, results_bucket: str, lambda_context: LambdaContext
) -> None:
    s3.put(input_bucket, "incoming/iris/fake.parquet", b"id,a\n1,2\n")
    (done,) = iris_fn.s3_handler(s3_put_event(input_bucket, "incoming/iris/fake.parquet"), lambda_context)["results"]
    assert "not a Parquet file" in done["error"]
    assert s3.keys(results_bucket) == []


def test_the_results_object_is_complete_before_the_errors_object_appears(
    iris_fn: ModelFunction,
    s3: S3,
    input_bucket: str,
    results_bucket: str,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MultipartWriter, "PART_SIZE", 5 * 1024 * 1024)  # the results go up in parts
    completed: list[tuple[str, list[str]]] = []
    complete = MultipartWriter.complete

    def spy_complete(self: MultipartWriter) -> None:
        completed.append((self.key, s3.keys(results_bucket)))
        complete(self)

    monkeypatch.setattr(MultipartWriter, "complete", spy_complete)
    s3.put(input_bucket, "incoming/iris/order.csv", b"".join(iris_csv(120_000, {7: "too few fields"})))
    iris_fn.s3_handler(s3_put_event(input_bucket, "incoming/iris/order.csv"), lambda_context)
    out, err = "results/iris/order.csv", "results/iris/order.csv.errors.jsonl"
    assert completed == [(out, []), (err, [out])]  # nothing visible before the results; then only them
    assert s3.keys(results_bucket) == [out, err]
