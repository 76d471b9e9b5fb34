"""`modelfn drift` through the CLI on synthetic data: the same distribution exits 0, one shifted feature exits 3
and is the one flagged (numbers and strings), errors exit 2 saying why; the HTML report opens in a real browser
(headless Chromium, installed by scripts/install-chromium.sh) and holds every feature's histogram."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest
from modelfn_tools.cli import main
from modelfn_tools.localserver import serve_process
from modelfn_tools.publish import publish

from tests.monitoring.synthetic import (
    FEATURES,
    mixed_data,
    mixed_model,
    records,
    tabular_data,
    tabular_model,
    write_capture,
    write_csv,
)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A store with `tab` (three numeric features) and `mixed` (numbers and a string), both with baselines, and
    three captures: the same distributions, `b` shifted, the cities reweighted."""
    root = tmp_path_factory.mktemp("drift")
    store = str(root / "store")
    publish(tabular_model(root / "m.onnx"), store, "tab", progress=False,
            baseline=write_csv(root / "base.csv", tabular_data(3000, 1)))  # fmt: skip
    publish(tabular_model(root / "m.onnx"), store, "bare", progress=False)
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = mixed_data(3000, 1)
    pq.write_table(pa.table({"age": d["age"], "income": d["income"][:, 0], "city": d["city"].tolist()}),
                   root / "mixed.parquet")  # fmt: skip
    publish(mixed_model(root / "mx.onnx"), store, "mixed", progress=False, baseline=root / "mixed.parquet")
    paths = {"store": store, "root": str(root)}
    for name, model, inputs in [
        ("same", "tab", {"x": tabular_data(1000, 2)}),
        ("shifted", "tab", {"x": tabular_data(1000, 3, {"b": 1.5})}),
        ("cities", "mixed", mixed_data(1000, 4, [0.1, 0.2, 0.3, 0.4])),
    ]:
        paths[name] = str(root / f"capture-{name}")
        write_capture(paths[name], records(model, 1, inputs))
    return paths


def drift(capsys: pytest.CaptureFixture[str], setup: dict[str, str], *args: str) -> tuple[int, str, str]:
    rc = main(["drift", "--store", setup["store"], *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_same_distribution_exits_0(capsys: pytest.CaptureFixture[str], setup: dict[str, str]) -> None:
    rc, out, err = drift(capsys, setup, "--name", "tab", "--capture", setup["same"])
    assert rc == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == set(FEATURES) and all(r[-1] == "ok" for r in rows.values())
    assert "200 requests (1,000 rows)" in out.splitlines()[0]


def test_one_shifted_feature_exits_3_and_is_the_one_flagged(
    capsys: pytest.CaptureFixture[str], setup: dict[str, str]
) -> None:
    rc, out, err = drift(capsys, setup, "--name", "tab", "--version", "1", "--capture", setup["shifted"], "--json")
    assert rc == 3
    report = json.loads(out)
    assert report["drifted"] == ["b"] and "past PSI 0.2: b" in err
    psi = {f["name"]: f["psi"] for f in report["features"]}
    assert psi["b"] > 0.2 > max(psi["a"], psi["c"])
    assert report["records"] == 200 and report["rows"] == 1000
    b = next(f for f in report["features"] if f["name"] == "b")
    assert b["ks_pvalue"] < 1e-6 and b["mean"] == pytest.approx(b["baseline_mean"] + 1.5, abs=0.3)
    rc, _, _ = drift(capsys, setup, "--name", "tab", "--capture", setup["shifted"], "--threshold", "5")
    assert rc == 0


def test_a_string_feature_drifts_by_its_category_shares(
    capsys: pytest.CaptureFixture[str], setup: dict[str, str]
) -> None:
    rc, out, _ = drift(capsys, setup, "--name", "mixed", "--capture", setup["cities"], "--json")
    report = json.loads(out)
    assert rc == 3 and report["drifted"] == ["city"]
    city = next(f for f in report["features"] if f["name"] == "city")
    assert city["kind"] == "category" and city["ks_pvalue"] is None and city["bins"][-2:] == ["(other)", "(null)"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "bare", "--capture", "{same}"], "has no baseline: publish it with --baseline DATA"),
        (["--name", "tab", "--capture", "{cities}"], "no captured requests of model 'tab' version 1"),
        (["--name", "tab", "--capture", "{same}", "--until", "2026-12-01T09:00Z"], "no captured requests"),
        (["--name", "nope", "--capture", "{same}"], "model 'nope' not found"),
        (["--name", "tab", "--capture", "{same}", "--threshold", "0"], "must be a positive PSI"),
        (["--name", "tab", "--capture", "{same}", "--since", "noon"], "not an ISO 8601 time"),
    ],
)
def test_errors_exit_2_saying_why(
    capsys: pytest.CaptureFixture[str], setup: dict[str, str], args: list[str], message: str
) -> None:
    rc, out, err = drift(capsys, setup, *(a.format(**setup) for a in args))
    assert rc == 2 and out == "" and message in err


def test_capture_from_the_environment(
    capsys: pytest.CaptureFixture[str], setup: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFN_CAPTURE", setup["shifted"])
    assert drift(capsys, setup, "--name", "tab")[0] == 3
    monkeypatch.delenv("MODELFN_CAPTURE")
    rc, _, err = drift(capsys, setup, "--name", "tab")
    assert rc == 2 and "pass --capture URI or set MODELFN_CAPTURE" in err


def chromium() -> str:
    """The browser scripts/install-chromium.sh installs (`make test` runs it); $CHROMIUM names another."""
    for name in ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(BROWSERS):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("no Chromium on PATH: run scripts/install-chromium.sh (make test does) or set CHROMIUM")


def screenshot(html: Path, png: Path) -> None:
    """A headless screenshot of the page, as a reader's browser renders it (no network: the page needs none)."""
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={png}",
         "--window-size=1200,1600", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def test_html_report_opens_in_a_browser_with_every_features_histogram(
    capsys: pytest.CaptureFixture[str], setup: dict[str, str], tmp_path: Path
) -> None:
    html = tmp_path / "report.html"
    rc, _, _ = drift(capsys, setup, "--name", "mixed", "--capture", setup["cities"], "--html", str(html))
    assert rc == 3
    page = html.read_text()
    for feature in ("age", "income", "city"):
        assert page.count(f'<svg class="histogram" data-feature="{feature}"') == 1
    assert page.count("<rect") > 3 * 2 * 4  # two bars per bin, at least four bins each
    assert "<script" not in page and "<link" not in page and "src=" not in page  # nothing fetched
    assert "//" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    png = tmp_path / "report.png"
    screenshot(html, png)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1200, 1600)
    assert png.stat().st_size > 20_000  # drawn, not blank


def test_drift_reads_what_modelfn_serve_captured(
    capsys: pytest.CaptureFixture[str], setup: dict[str, str], tmp_path: Path
) -> None:
    """End to end: requests answered by a real `modelfn serve` with MODELFN_CAPTURE, flushed at its graceful stop,
    are the window `modelfn drift` measures."""
    capture = tmp_path / "capture"
    data = tabular_data(1000, 3, {"b": 1.5})
    env = {"MODELFN_CAPTURE": str(capture)}
    with serve_process(["--store", setup["store"], "--models", "tab"], tmp_path, env=env) as base:
        for k in range(40):
            rows = data[k * 25 : (k + 1) * 25].ravel().tolist()
            body = {"inputs": [{"name": "x", "shape": [25, 3], "datatype": "FP32", "data": rows}]}
            assert httpx.post(f"{base}/v2/models/tab/infer", json=body).status_code == 200
    rc, out, _ = drift(capsys, setup, "--name", "tab", "--capture", str(capture), "--json")
    report = json.loads(out)
    assert rc == 3 and report["drifted"] == ["b"] and (report["records"], report["rows"]) == (40, 1000)
