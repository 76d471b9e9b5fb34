"""`modelfn.spark.score` on local Spark (local[2]) against the example iris model in moto's S3: on the same
Parquet or CSV file its results equal `modelfn score`'s row for row (rows that cannot be scored carry an `error`
and null outputs, where `modelfn score` writes them to its errors file), the version is loaded and verified once per
Python worker, a missing column fails the call, and a version whose bytes changed under the job is refused."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.score import score as modelfn_score

from modelfn import spark as modelfn_spark
from modelfn.errors import InvalidInput, NotReady
from modelfn.scoring.scorer import CHUNK_ROWS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ROWS = int(os.environ.get("MODELFN_TEST_SPARK_ROWS", "200000"))
"""1,000,000 rows take about 3 minutes here on a loaded 2-core machine (bench/spark_score.py scores 1M)."""
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
OUTPUTS = ["label", "probabilities_0", "probabilities_1", "probabilities_2"]


@pytest.fixture(scope="module")
def spark(aws: EmbeddedAWS) -> Iterator[SparkSession]:
    """Local Spark, its Python workers this interpreter (so modelfn imports there), AWS pointed at moto."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    session = (
        SparkSession.builder.master("local[2]")
        .appName("modelfn-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.host", "127.0.0.1")  # loopback only: nothing leaves this machine
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _iris(rows: int) -> tuple[pa.Table, set[str]]:
    """id, then the four features with three decimals; every 997th row has no width and every 1009th no length.
    Returns the ids of those rows."""
    rng = np.random.default_rng(11)
    ids = np.char.add("r", np.arange(1, rows + 1).astype(str))
    x = rng.uniform(0.1, 7.9, (rows, 4)).round(3)
    nulls = {1: np.arange(rows) % 1009 == 1008, 2: np.arange(rows) % 997 == 996}
    columns = [pa.array(x[:, j], mask=nulls.get(j + 1)) for j in range(4)]
    failed = set(ids[nulls[1]]) | set(ids[nulls[2]])
    return pa.table([pa.array(ids), *columns], names=["id", *COLUMNS]), failed


def _modelfn(src: Path, out: Path, store: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """`modelfn score`'s results (as a frame: id, outputs) and errors file."""
    modelfn_score(str(src), str(out), store, "iris", None)
    if out.suffix == ".parquet":
        frame = pq.read_table(out).to_pandas()
    else:
        frame = pd.read_csv(out, dtype={"id": str, **{c: np.float32 for c in OUTPUTS[1:]}})
    errors = [json.loads(line) for line in Path(f"{out}.errors.jsonl").read_text().splitlines()]
    return frame, errors


def _check_equal(result: pd.DataFrame, expected: pd.DataFrame, errors: list[dict[str, Any]], rows: int) -> None:
    """Row for row: every input row in order; the scored ones with modelfn score's exact outputs, the others
    with null outputs and an error."""
    assert result.columns.tolist() == ["id", *OUTPUTS, "error"]
    assert result["id"].tolist() == [f"r{i}" for i in range(1, rows + 1)]
    failed = result[result["error"].notna()]
    assert failed["id"].tolist() == [e["id"] for e in errors]
    assert failed[OUTPUTS].isna().all().all()
    scored = result[result["error"].isna()].reset_index(drop=True)
    assert scored["id"].tolist() == expected["id"].tolist()
    assert scored["label"].astype(np.int64).tolist() == expected["label"].tolist()
    for c in OUTPUTS[1:]:  # CSV holds float32 with 9 significant digits: exactly the float32 again
        np.testing.assert_array_equal(scored[c].to_numpy(dtype=np.float32), expected[c].to_numpy(np.float32))


def test_results_equal_modelfn_score_on_the_same_parquet_file(
    spark: SparkSession, s3_store: str, tmp_path: Path
) -> None:
    """Several partitions (row groups of 8 chunks each): the same rows, outputs and error messages."""
    table, failed = _iris(ROWS)
    src = tmp_path / "iris.parquet"
    pq.write_table(table, src, row_group_size=8 * CHUNK_ROWS)
    expected, errors = _modelfn(src, tmp_path / "out.parquet", s3_store)
    assert {e["id"] for e in errors} == failed

    spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(os.path.getsize(src) // 4, 1)))
    df = spark.read.parquet(str(src))
    assert df.rdd.getNumPartitions() >= 2
    result = pd.DataFrame(modelfn_spark.score(df, store=s3_store, name="iris").toPandas())
    spark.conf.unset("spark.sql.files.maxPartitionBytes")
    _check_equal(result, expected, errors, ROWS)
    assert result["error"].dropna().tolist() == [e["error"] for e in errors]  # "column 'sepal_width' is null"


def test_results_equal_modelfn_score_on_the_same_csv_file(spark: SparkSession, s3_store: str, tmp_path: Path) -> None:
    """One partition (so the chunks are the file's): the same outputs; a field Spark cannot read is null, and so
    that row's error names a null where `modelfn score` names the text."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    rows = min(ROWS, 50_000)
    table, failed = _iris(rows)
    src = tmp_path / "iris.csv"
    pacsv.write_csv(table, src, pacsv.WriteOptions(quoting_style="none"))
    text = src.read_text().splitlines(keepends=True)
    text[997] = text[997].replace(text[997].split(",")[3], "oops")  # row 997 (sepal_width also missing)
    text[5] = text[5].replace(text[5].split(",")[1], "1e999")  # row 5: overflows a double
    src.write_text("".join(text))
    expected, errors = _modelfn(src, tmp_path / "out.csv", s3_store)
    assert {e["id"] for e in errors} == failed | {"r5"}

    spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 30))
    spark.conf.set("spark.sql.files.minPartitionNum", "1")
    schema = StructType([StructField("id", StringType()), *[StructField(c, DoubleType()) for c in COLUMNS]])
    df = spark.read.csv(str(src), header=True, schema=schema)
    assert df.rdd.getNumPartitions() == 1
    result = pd.DataFrame(modelfn_spark.score(df, store=s3_store, name="iris").toPandas())
    spark.conf.unset("spark.sql.files.maxPartitionBytes")
    spark.conf.unset("spark.sql.files.minPartitionNum")
    _check_equal(result, expected, errors, rows)


def test_each_worker_loads_and_verifies_the_version_once(spark: SparkSession, s3_store: str) -> None:
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(400)], **{c: np.full(400, 5.0) for c in COLUMNS}})
    df = spark.createDataFrame(frame).repartition(8)
    assert modelfn_spark.score(df, store=s3_store, name="iris").where("error IS NULL").count() == 400

    def probe(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from modelfn.registry.loader import model_cache
        from modelfn.spark import _MODELS

        for _ in frames:
            yield pd.DataFrame({"pid": [os.getpid()], "loads": [model_cache.stats["loads"]], "kept": [len(_MODELS)]})

    seen = pd.DataFrame(df.mapInPandas(probe, "pid long, loads long, kept long").toPandas()).drop_duplicates("pid")
    assert (seen["loads"] <= 1).all()  # 8 partitions scored, never more than one load (and check) per worker
    assert (seen["kept"] <= 1).all()
    assert seen["loads"].sum() >= 1


def test_a_missing_column_fails_the_call(spark: SparkSession, s3_store: str) -> None:
    df = spark.createDataFrame(pd.DataFrame({"id": ["a"], "x": [1.0], "y": [2.0]}))
    with pytest.raises(InvalidInput, match="takes 4"):
        modelfn_spark.score(df, store=s3_store, name="iris")


def test_a_version_whose_bytes_changed_is_refused(s3_store: str) -> None:
    with pytest.raises(NotReady, match="changed in the store while the job ran"):
        modelfn_spark._scorer((s3_store, "iris", 1, "0" * 64))
