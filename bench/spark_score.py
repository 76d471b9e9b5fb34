"""Figure: Spark against `modelfn score`. The same CSV file (id + the four iris features, 1,000,000 rows in the full
run) scored by `modelfn score` (one process, the batch pipeline) and by `modelfn.spark.score` on local Spark with
as many cores (local[N], N = this machine's CPUs), results written as CSV to a local folder by both; the model
from the bench's S3 store (moto). Runs alternate; each side's best run counts. Spark's session start-up (the JVM)
is reported apart and not timed; model loading is timed on both sides. rows/s per core = rows/s / N for both."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import get_env, summary_row

NAME = "spark_score"
TITLE = "Spark (modelfn.spark.score, local[N]) vs modelfn score: rows/s per core"
MODEL = "iris"


def make_csv(path: Path, rows: int, seed: int = 5) -> int:
    """id + the four iris features with three decimals; returns the file's size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 7.9, (rows, 4)).round(3)
    ids = np.char.add("r", np.arange(1, rows + 1).astype(str))
    names = ["id", "sepal_length", "sepal_width", "petal_length", "petal_width"]
    table = pa.table([pa.array(ids), *[pa.array(x[:, j]) for j in range(4)]], names=names)
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
    return path.stat().st_size


def _publish(env: Any) -> None:
    from modelfn_tools.examples import build_iris
    from modelfn_tools.publish import publish

    with env.activated():
        publish(build_iris(env.workdir / "iris.onnx"), env.store, MODEL, labels=["stable"], progress=False)


def run(quick: bool, *, rows: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    env = get_env()
    n_rows = rows or (100_000 if quick else 1_000_000)
    reps = repeats or (1 if quick else 2)
    cores = os.cpu_count() or 1
    _publish(env)
    src = env.workdir / f"spark-{n_rows}.csv"
    size = make_csv(src, n_rows)
    runs: dict[str, list[float]] = {"modelfn": [], "spark": []}
    with env.activated():
        from modelfn_tools.score import score as modelfn_score
        from pyspark.sql import SparkSession
        from pyspark.sql.types import DoubleType, StringType, StructField, StructType

        from modelfn import spark as modelfn_spark

        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        t0 = time.perf_counter()
        spark = (
            SparkSession.builder.master(f"local[{cores}]")
            .appName("modelfn-bench")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", "2g")
            .config("spark.driver.host", "127.0.0.1")  # loopback only: nothing leaves this machine
            .config("spark.driver.bindAddress", "127.0.0.1")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        startup = time.perf_counter() - t0
        schema = StructType(
            [StructField("id", StringType())]
            + [StructField(c, DoubleType()) for c in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
        )
        try:
            for _ in range(reps):
                out = env.workdir / "modelfn-out.csv"
                t = time.perf_counter()
                summary = modelfn_score(str(src), str(out), env.store, MODEL, None)
                runs["modelfn"].append(n_rows / (time.perf_counter() - t))
                assert summary["scored"] == n_rows, summary
                folder = env.workdir / "spark-out"
                shutil.rmtree(folder, ignore_errors=True)
                t = time.perf_counter()
                df = spark.read.csv(str(src), header=True, schema=schema)
                modelfn_spark.score(df, store=env.store, name=MODEL).write.csv(str(folder), header=True)
                runs["spark"].append(n_rows / (time.perf_counter() - t))
            partitions = spark.read.csv(str(src), header=True, schema=schema).rdd.getNumPartitions()
        finally:
            spark.stop()
    best = {k: max(v) for k, v in runs.items()}
    per_core = {k: v / cores for k, v in best.items()}
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "rows": n_rows,
            "csv_bytes": size,
            "cores": cores,
            "model": "iris (4 features; scikit-learn via skl2onnx): the frameworks' own cost dominates",
            "spark": f"pyspark local[{cores}], spark.read.csv with a schema ({partitions} partitions), "
            "modelfn.spark.score, write.csv to a local folder",
            "modelfn": "modelfn score (tools/modelfn_tools/score.py): local CSV in, local CSV + errors file out",
            "spark_session_start_seconds": round(startup, 1),
            "repeats": reps,
        },
        "results": {
            k: {"rows_per_second": round(best[k], 1), "rows_per_second_per_core": round(per_core[k], 1)} for k in best
        },
        "rows_per_second_by_run": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "summary": [
            summary_row(
                "Spark",
                f"{n_rows:,} rows, rows/s per core (local[{cores}])",
                per_core["spark"],
                per_core["modelfn"],
                "rows/s/core",
                baseline_name="modelfn score",
                ratio_label="Spark / modelfn score",
            )
        ],
    }
