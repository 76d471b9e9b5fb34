"""Smoke test of the benchmark suite (`make bench`): a very quick subset runs end to end and writes its results in
the documented shape. Structure only: timings are never asserted. Figure 6 (torch) is left to `make bench`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROW_KEYS = {"figure", "metric", "modelfn", "baseline", "baseline_name", "unit", "ratio", "target", "met"}

pytestmark = pytest.mark.slow


def _check_rows(rows: list[dict[str, object]]) -> None:
    assert rows
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert row["met"] in (True, False, None)
        if row["met"] is not None:
            assert isinstance(row["ratio"], float)


def test_runner_writes_results_summary_and_charts(tmp_path: Path) -> None:
    from bench.__main__ import main

    code = main(["--quick", "--only", "warm_invoke,large_request", "--results-dir", str(tmp_path), "--no-readme"])
    assert code == 0
    for name in ("warm_invoke", "large_request"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["name"] == name
        assert "error" not in data
        assert data["quick"] is True
        _check_rows(data["summary"])
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    warm = json.loads((tmp_path / "warm_invoke.json").read_text())
    assert set(warm["results_us"]) >= {"modelfn", "minimal handler", "seed-style app"}
    assert all(warm["answers_agree"].values())  # all three handlers answer the same probabilities
    large = json.loads((tmp_path / "large_request.json").read_text())
    assert large["answers_agree"] is True
    assert large["config"]["json_request_bytes"] > large["config"]["binary_request_bytes"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["meta"]["machine"]["cores"] >= 1
    assert summary["meta"]["figures"] == ["warm_invoke", "large_request"]
    md = (tmp_path / "summary.md").read_text()
    assert "| figure | metric | modelfn | baseline | ratio | target | met? |" in md
    assert summary["meta"]["machine"]["cpu"] in md
    assert (tmp_path / "summary.png").exists()


def test_s3_batch_tiny_scores_every_row_with_each_implementation() -> None:
    from bench import s3_batch

    res = s3_batch.run(True, rows=2000)
    for kind in ("modelfn", "pandas", "floor"):
        assert res["results"][kind]["rows"] == 2000
        assert res["results"][kind]["peak_rss_mb"] > 0
    assert res["results"]["modelfn"]["errors"] == 0
    assert res["outputs_agree"] is True
    _check_rows(res["summary"])


def test_wrk_output_is_parsed() -> None:
    from bench.loadgen import parse_wrk

    out = """Running 2s test @ http://127.0.0.1:9/predict
  1 threads and 8 connections
  Latency Distribution
     50%  612.00us
     75%    1.20ms
     90%    2.50ms
     99%   15.31ms
  4000 requests in 2.00s, 1.10MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1999.50
"""
    r = parse_wrk(out)
    assert r["requests_per_second"] == 1999.5
    assert r["requests"] == 4000
    assert r["latency_ms"] == {"p50": 0.612, "p75": 1.2, "p90": 2.5, "p99": 15.31}
    assert r["non_2xx"] == 3


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200 if body.startswith(b"{") else 400)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    _Echo.protocol_version = "HTTP/1.1"  # keep-alive, as the generator expects
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()
    server.server_close()


def test_python_load_generator_is_bounded_and_counts(echo_server: str) -> None:
    from bench.loadgen import load, run_python

    r = run_python(echo_server, '{"features": [1]}', connections=2, seconds=0.3)
    assert r["generator"] == "python-asyncio"
    assert r["requests"] > 0
    assert r["non_2xx"] == 0
    assert set(r["latency_ms"]) == {"p50", "p75", "p90", "p99"}
    assert load(echo_server, "[1]", 1, 0.2, prefer_wrk=False)["non_2xx"] > 0  # a 400 counts as an error
    with pytest.raises(ValueError, match="loopback"):
        run_python("http://192.0.2.1:80/predict", "{}", 1, 0.1)
