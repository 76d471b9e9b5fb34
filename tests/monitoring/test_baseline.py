"""`modelfn publish --baseline DATA`: per-feature statistics stored with the version, recorded in its manifest,
read from every batch format by the batch column rules; a bad baseline refused before anything is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from modelfn_tools.cli import main
from modelfn_tools.publish import publish

from modelfn.errors import ModelNotFound, PublishError
from modelfn.monitoring.baseline import BINS, SKETCH, Baseline, load
from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import BASELINE, baseline_key, file_path_problem
from tests.monitoring.synthetic import FEATURES, mixed_data, mixed_model, tabular_data, tabular_model, write_csv


def _stored(store: str, name: str, version: int = 1) -> tuple[Baseline, dict[str, Any]]:
    repo = ModelRepository(open_store(store))
    manifest = repo.manifest(name, version)
    return load(repo, manifest), json.loads(repo.store.read_bytes(f"{name}/{version}/manifest.json"))


def test_publish_stores_the_baseline_with_the_version_on_s3(tmp_path: Path, fresh_bucket: str) -> None:
    data = tabular_data(3000, 1)
    csv = write_csv(tmp_path / "base.csv", data)
    csv.write_text(csv.read_text().replace(f",{float(data[7, 2])!r}\n", ",\n", 1))  # one empty field: a null of c
    rc = main(["publish", str(tabular_model(tmp_path / "m.onnx")), "--store", fresh_bucket, "--name", "tab",
               "--baseline", str(csv), "--quiet"])  # fmt: skip
    assert rc == 0
    baseline, manifest = _stored(fresh_bucket, "tab")
    raw = open_store(fresh_bucket).read_bytes(baseline_key("tab", 1))
    assert manifest["baseline"] == {"path": BASELINE, "sha256": hashlib.sha256(raw).hexdigest(), "size_bytes": len(raw)}
    assert manifest["features"] == FEATURES  # named by the baseline's header
    assert baseline.rows == 3000 and [f.name for f in baseline.features] == FEATURES
    a, c = baseline.feature("a"), baseline.feature("c")
    assert (a.count, a.nulls, c.count, c.nulls) == (3000, 0, 2999, 1)
    assert a.numeric is not None and c.numeric is not None
    x = data[:, 0].astype(np.float32).astype(np.float64)  # the model's FP32 input, as served
    assert a.numeric.mean == pytest.approx(x.mean()) and a.numeric.std == pytest.approx(x.std())
    assert (a.numeric.min, a.numeric.max) == (x.min(), x.max())
    assert len(a.numeric.edges) == BINS - 1 and sum(a.numeric.counts) == 3000
    assert all(abs(n - 300) <= 1 for n in a.numeric.counts)  # deciles
    assert len(a.numeric.sample) == SKETCH and a.numeric.sample == sorted(a.numeric.sample)


def test_every_format_gives_the_same_baseline(tmp_path: Path) -> None:
    model = tabular_model(tmp_path / "m.onnx")
    data = tabular_data(500, 2)
    files = {
        "csv": write_csv(tmp_path / "b.csv", data),
        "parquet": tmp_path / "b.parquet",
        "jsonl": tmp_path / "b.jsonl",
        "npy": tmp_path / "b.npy",
    }
    pq.write_table(pa.table({n: data[:, j] for j, n in enumerate(FEATURES)}), files["parquet"])
    files["jsonl"].write_text("".join(json.dumps(dict(zip(FEATURES, r, strict=True))) + "\n" for r in data.tolist()))
    np.save(files["npy"], data.astype(np.float32))
    stats = {}
    for kind, path in files.items():
        store = str(tmp_path / f"store-{kind}")
        features = FEATURES if kind == "npy" else None  # a .npy file has no header
        publish(model, store, "tab", progress=False, baseline=path, features=features)
        baseline, _ = _stored(store, "tab")
        stats[kind] = [f.model_dump() for f in baseline.features]
    assert stats["parquet"] == stats["csv"] == stats["jsonl"] == stats["npy"]


def test_strings_get_category_frequencies_and_nulls(tmp_path: Path) -> None:
    d = mixed_data(1000, 1)
    city = d["city"].tolist()
    city[3], city[4] = None, ""  # a null, and an empty string: both missing
    table = pa.table({"id": [str(i) for i in range(1000)], "city": city, "age": d["age"], "income": d["income"][:, 0]})
    pq.write_table(table, tmp_path / "mixed.parquet")
    store = str(tmp_path / "store")
    publish(mixed_model(tmp_path / "mx.onnx"), store, "mixed", progress=False, baseline=tmp_path / "mixed.parquet")
    baseline, manifest = _stored(store, "mixed")
    assert [(f.name, f.kind, f.column) for f in baseline.features] == [
        ("age", "numeric", None),
        ("income", "numeric", 0),
        ("city", "category", None),
    ]
    assert manifest["features"] is None  # inputs of their own names: nothing to record
    city_stats = baseline.feature("city")
    assert city_stats.nulls == 2 and city_stats.count == 998 and city_stats.categories is not None
    expected = {c: city.count(c) for c in set(city) if c}
    assert city_stats.categories.counts == dict(sorted(expected.items(), key=lambda kv: (-kv[1], kv[0])))
    assert city_stats.categories.other == 0


def test_baseline_columns_are_taken_by_the_feature_names(tmp_path: Path) -> None:
    data = tabular_data(300, 3)
    shuffled = write_csv(tmp_path / "b.csv", data[:, [2, 0, 1]], ["c", "a", "b"])
    store = str(tmp_path / "store")
    publish(tabular_model(tmp_path / "m.onnx"), store, "tab", progress=False, features=FEATURES, baseline=shuffled)
    baseline, manifest = _stored(store, "tab")
    assert manifest["features"] == FEATURES
    c = baseline.feature("c").numeric
    assert c is not None and c.mean == pytest.approx(data[:, 2].astype(np.float32).mean(), rel=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,a,b,c\n1,0.5,1.5,2.5\n2,0.5,oops,1\n", "baseline row 2: column 'b'"),
        ("id,a,c\n1,0.5,2.5\n", "missing column(s) ['b']"),
    ],
)
def test_a_bad_baseline_is_refused_before_anything_is_written(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    store = tmp_path / "store"
    with pytest.raises(PublishError) as e:
        publish(tabular_model(tmp_path / "m.onnx"), str(store), "tab", progress=False, features=FEATURES,
                baseline=tmp_path / "bad.csv")  # fmt: skip
    assert message in e.value.message
    assert not (store / "tab").exists()


def test_a_version_without_baseline_says_how_to_get_one(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    publish(tabular_model(tmp_path / "m.onnx"), store, "tab", progress=False)
    repo = ModelRepository(open_store(store))
    with pytest.raises(ModelNotFound, match="has no baseline: publish it with --baseline"):
        load(repo, repo.manifest("tab", 1))


def test_baseline_json_is_a_reserved_name_in_a_version_folder() -> None:
    assert file_path_problem(BASELINE) is not None
