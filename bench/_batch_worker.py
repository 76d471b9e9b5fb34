"""One batch-scoring run in a fresh process (so that its peak memory is its own): `python -m bench._batch_worker
modelfn|pandas|floor`. Configuration comes from the environment (BENCH_*), the result goes to BENCH_RESULT_FILE.
Only the scoring itself is timed: imports and model loading happen before the clock starts."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.common import ROOT, load_file_module, peak_rss_mb, s3_event, write_worker_result


def run_modelfn() -> dict[str, Any]:
    import contextlib

    bucket, key = os.environ["BENCH_BUCKET"], os.environ["BENCH_KEY"]
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        app = load_file_module(ROOT / "functions" / "mlp" / "app.py", "bench_batch_mlp_app")
        from bench.common import LambdaContext

        rss_before = peak_rss_mb()
        t0 = time.perf_counter()
        response = app.s3_handler(s3_event(bucket, key), LambdaContext())
        seconds = time.perf_counter() - t0
    result = response["results"][0]
    if "error" in result:
        raise RuntimeError(result["error"])
    return {
        "seconds": seconds,
        "rows": result["rows"],
        "scored": result["scored"],
        "errors": result["errors"],
        "output": result["output"],
        "peak_rss_mb_before_scoring": rss_before,
    }


def run_pandas() -> dict[str, Any]:
    import onnxruntime as ort

    from bench.baselines import pandas_batch

    bucket, key = os.environ["BENCH_BUCKET"], os.environ["BENCH_KEY"]
    session = ort.InferenceSession(os.environ["MODEL_PATH"], providers=["CPUExecutionProvider"])
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    rows = pandas_batch.score_s3(session, bucket, key, bucket, os.environ["BENCH_OUT_KEY"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows, "scored": rows, "peak_rss_mb_before_scoring": rss_before}


def run_floor() -> dict[str, Any]:
    """Parse the CSV (already in memory) with the fastest parser at hand, pyarrow's multi-threaded one, and run the
    session over it in chunks: no I/O, no output formatting. What no implementation can beat on this machine."""
    import io

    import numpy as np
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = open(os.environ["BENCH_LOCAL_CSV"], "rb").read()
    session = ort.InferenceSession(os.environ["MODEL_PATH"], providers=["CPUExecutionProvider"])
    chunk = int(os.environ.get("BENCH_CHUNK_ROWS", "8192"))
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    header = data[: data.index(b"\n")].decode().split(",")
    features = [h for h in header if h != "id"]
    table = pacsv.read_csv(
        io.BytesIO(data), convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(features, pa.float32()))
    )
    x = np.stack([table.column(f).to_numpy() for f in features], axis=1)
    t1 = time.perf_counter()
    rows = 0
    for start in range(0, len(x), chunk):
        logits, _ = session.run(None, {"input": x[start : start + chunk]})
        rows += len(logits)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "parse_seconds": t1 - t0,
        "run_seconds": t2 - t1,
        "rows": rows,
        "scored": rows,
        "peak_rss_mb_before_scoring": rss_before,
    }


def main() -> None:
    kind = sys.argv[1]
    result = {"modelfn": run_modelfn, "pandas": run_pandas, "floor": run_floor}[kind]()
    result["peak_rss_mb"] = peak_rss_mb()
    write_worker_result(result)


if __name__ == "__main__":
    main()
