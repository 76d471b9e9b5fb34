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


def _parse_pyarrow(data: bytes) -> Any:
    import io

    import numpy as np
    import pyarrow.csv as pacsv

    # pyarrow's own type inference (float64) parses faster here than asking it for float32 columns
    table = pacsv.read_csv(io.BytesIO(data))
    features = [name for name in table.column_names if name != "id"]
    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        x[:, j] = table.column(name).to_numpy()
    return x


def _parse_pandas(data: bytes) -> Any:
    import io

    import numpy as np
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(data))
    return frame.drop(columns=["id"], errors="ignore").to_numpy(dtype=np.float32)


def run_floor() -> dict[str, Any]:
    """Parse the CSV (already in memory) with the fastest parser at hand — pyarrow's multi-threaded reader or
    pandas' C engine, whichever is faster on this run — and run the session over it in chunks: no I/O, no output
    formatting. What no implementation can beat on this machine."""
    import onnxruntime as ort

    with open(os.environ["BENCH_LOCAL_CSV"], "rb") as f:
        data = f.read()
    session = ort.InferenceSession(os.environ["MODEL_PATH"], providers=["CPUExecutionProvider"])
    chunk = int(os.environ.get("BENCH_CHUNK_ROWS", "8192"))
    rss_before = peak_rss_mb()
    parse: dict[str, float] = {}
    x = None
    for name, parser in (("pyarrow", _parse_pyarrow), ("pandas", _parse_pandas)):
        t0 = time.perf_counter()
        x = parser(data)
        parse[name] = time.perf_counter() - t0
    assert x is not None
    t1 = time.perf_counter()
    rows = 0
    for start in range(0, len(x), chunk):
        logits, _ = session.run(None, {"input": x[start : start + chunk]})
        rows += len(logits)
    run_seconds = time.perf_counter() - t1
    best = min(parse, key=lambda k: parse[k])
    return {
        "seconds": parse[best] + run_seconds,
        "parse_seconds": parse[best],
        "parser": best,
        "parse_seconds_by_parser": {k: round(v, 3) for k, v in parse.items()},
        "run_seconds": run_seconds,
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
