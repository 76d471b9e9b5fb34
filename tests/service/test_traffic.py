"""Traffic (contract "Traffic: split, sticky, shadow"), through the service, the Lambda handler and real
`modelfn serve` processes: sticky shares follow the weights and a key keeps its version everywhere, explicit
versions bypass the split, the shadow never changes an answer and its comparison is right, and a version that
cannot load never takes traffic."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelfn_tools.examples import build_mlp
from modelfn_tools.localserver import serve_process
from modelfn_tools.publish import publish, set_label

from modelfn.function import ModelFunction
from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import Service
from modelfn.service.request import VERSION_HEADER, Request, Response
from modelfn.service.traffic import compare, pick, sticky_bucket
from modelfn.settings import Settings
from modelfn.store import open_store
from modelfn.store.traffic import dump_traffic, make_traffic, traffic_key
from tests.adapters.conftest import LambdaContext

ROW = [5.1, 3.5, 1.4, 0.2]
V2 = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [ROW]}]}).encode()
HEADER = "x-user-id"
SEEN = ("shadowed", "skipped")


def _write_traffic(store: str, traffic: dict[str, Any]) -> None:
    open_store(store).write_bytes(traffic_key("m"), dump_traffic(make_traffic(traffic)))


@pytest.fixture
def store(tmp_path: Path) -> str:
    """Model `m`: v1 (stable) and v2 (canary), 4→16→3 MLPs with different weights; v3 the same file as v1."""
    uri = str(tmp_path / "store")
    v1 = build_mlp(tmp_path / "a.onnx", sizes=(4, 16, 3), seed=0)
    publish(v1, uri, "m", labels=["stable"], progress=False)
    publish(build_mlp(tmp_path / "b.onnx", sizes=(4, 16, 3), seed=1), uri, "m", labels=["canary"], progress=False)
    publish(v1, uri, "m", labels=["twin"], progress=False)
    return uri


def _service(store: str, tmp_path: Path, **settings: Any) -> Service:
    cfg = Settings(store=store, cache_dir=tmp_path / "cache", **settings)
    return Service(ModelRegistry.from_uri(store, cfg))


def _infer(service: Service, user: str | None = None, path: str = "/v2/models/m/infer") -> Response:
    headers = {"content-type": "application/json", **({HEADER: user} if user is not None else {})}
    return service.handle(Request("POST", path, "", headers, V2))


# ---- the split ---------------------------------------------------------------------------------------------------
def test_sticky_shares_over_2000_keys_follow_the_weights_and_a_key_keeps_its_version(
    store: str, tmp_path: Path
) -> None:
    _write_traffic(store, {"split": {"stable": 70, "canary": 30}, "sticky": "X-User-Id"})
    service = _service(store, tmp_path)
    chosen = {f"user-{i}": _infer(service, f"user-{i}").headers[VERSION_HEADER] for i in range(2000)}
    shares = Counter(chosen.values())
    assert abs(shares["1"] / 2000 - 0.70) <= 0.05 and abs(shares["2"] / 2000 - 0.30) <= 0.05, shares
    again = {user: _infer(service, user).headers[VERSION_HEADER] for user in list(chosen)[:200]}
    assert again == {user: chosen[user] for user in again}


def test_without_the_header_each_request_draws_by_weight(store: str, tmp_path: Path) -> None:
    _write_traffic(store, {"split": {"stable": 50, "canary": 50}, "sticky": HEADER})
    service = _service(store, tmp_path)
    shares = Counter(_infer(service).headers[VERSION_HEADER] for _ in range(600))
    assert 0.40 <= shares["1"] / 600 <= 0.60, shares


def test_the_bucket_is_a_pure_function_of_model_and_value() -> None:
    assert sticky_bucket("m", "alice", 100) == sticky_bucket("m", "alice", 100)
    assert len({sticky_bucket("m", f"u{i}", 1000) for i in range(200)}) > 150
    assert pick({"a": 0, "b": 5}, 0) == "b" and pick({"a": 3, "b": 5}, 3) == "b"


def test_explicit_versions_and_labels_bypass_the_split(store: str, tmp_path: Path) -> None:
    _write_traffic(store, {"split": {"canary": 100}})
    service = _service(store, tmp_path)
    assert _infer(service).headers[VERSION_HEADER] == "2"
    assert _infer(service, path="/v2/models/m/versions/1/infer").headers[VERSION_HEADER] == "1"
    assert _infer(service, path="/v2/models/m/versions/stable/infer").headers[VERSION_HEADER] == "1"
    tf = service.handle(
        Request("POST", "/v1/models/m/labels/stable:predict", "", {}, json.dumps({"instances": [ROW]}).encode())
    )
    assert tf.headers[VERSION_HEADER] == "1"
    pinned = ModelFunction(Settings(store=store, model="m", version="1", cache_dir=tmp_path / "pin"))
    assert _infer(pinned.service).headers[VERSION_HEADER] == "1"  # MODELFN_VERSION overrides traffic.json


def test_a_function_reads_traffic_at_init_beside_its_model_and_a_pinned_one_never_does(
    store: str, tmp_path: Path
) -> None:
    _write_traffic(store, {"split": {"canary": 100}})
    fn = ModelFunction(Settings(store=store, model="m", cache_dir=tmp_path / "fn"))
    known = fn.traffic.fresh("m")  # read during init, before any request
    assert known is not None and known[0] is not None and dict(known[0].split) == {"canary": 100}
    open_store(store).write_bytes(traffic_key("m"), b"{}")  # the first request uses what init read (within the TTL)
    assert _infer(fn.service).headers[VERSION_HEADER] == "2"
    pinned = ModelFunction(Settings(store=store, model="m", version="1", cache_dir=tmp_path / "pin"))
    assert pinned.traffic.fresh("m") is None


def test_after_a_snapstart_restore_traffic_is_read_again(store: str, tmp_path: Path) -> None:
    _write_traffic(store, {"split": {"canary": 100}})
    fn = ModelFunction(Settings(store=store, model="m", cache_dir=tmp_path / "fn", label_ttl=3600))
    _write_traffic(store, {"split": {"stable": 100}})  # changed while the snapshot sat in storage
    assert _infer(fn.service).headers[VERSION_HEADER] == "2"  # within the TTL: what init read
    fn.after_restore()
    assert _infer(fn.service).headers[VERSION_HEADER] == "1"


def test_traffic_changes_are_picked_up_within_the_ttl_and_a_bad_file_never_stops_serving(
    store: str, tmp_path: Path
) -> None:
    service = _service(store, tmp_path, label_ttl=0)
    assert _infer(service).headers[VERSION_HEADER] == "1"
    _write_traffic(store, {"split": {"canary": 100}})
    assert _infer(service).headers[VERSION_HEADER] == "2"
    open_store(store).write_bytes(traffic_key("m"), b'{"split": {"canary": "all"}}')
    kept = _infer(service)  # the last good traffic stays in effect
    assert kept.status == 200 and kept.headers[VERSION_HEADER] == "2"
    fresh = _infer(_service(store, tmp_path / "new", label_ttl=0))  # nothing good known: the default version
    assert fresh.status == 200 and fresh.headers[VERSION_HEADER] == "1"


def test_a_version_that_cannot_load_never_takes_traffic(store: str, tmp_path: Path) -> None:
    service = _service(store, tmp_path, label_ttl=0)
    assert _infer(service).headers[VERSION_HEADER] == "1"
    broken = Path(store) / "m" / "2" / "model.onnx"
    broken.write_bytes(broken.read_bytes()[:-10] + b"0123456789")  # sha256 mismatch
    _write_traffic(store, {"split": {"stable": 50, "canary": 50}})
    answers = [_infer(service) for _ in range(40)]
    assert {a.status for a in answers} == {200} and {a.headers[VERSION_HEADER] for a in answers} == {"1"}
    set_label(store, "m", "stable", 2)  # the default moves to the broken version: the previous one keeps serving
    open_store(store).write_bytes(traffic_key("m"), b"{}")
    assert _infer(service).headers[VERSION_HEADER] == "1"
    explicit = _infer(service, path="/v2/models/m/versions/2/infer")
    assert explicit.status == 503 and "sha256" in json.loads(explicit.body)["error"]


# ---- shadow ------------------------------------------------------------------------------------------------------
def test_the_shadow_never_changes_the_answer_and_compares_right(store: str, tmp_path: Path) -> None:
    alone = _service(store, tmp_path)
    expected = _infer(alone)
    for target, agreement in (("twin", 1.0), ("canary", None), ("nope", None)):
        _write_traffic(store, {"shadow": {"target": "3" if target == "twin" else target, "percent": 100}})
        service = _service(store, tmp_path / target)
        answers = [_infer(service) for _ in range(5)]
        assert all(a.body == expected.body and a.headers == expected.headers for a in answers), target
        report = json.loads(service.handle(Request("GET", "/v2/models/m/traffic")).body)
        comparison = report["comparison"]
        assert comparison["shadowed"] == 5, comparison
        if target == "twin":
            assert comparison["agreement"] == agreement and comparison["max_abs_diff"] == 0.0
            assert comparison["shadow_errors"] == 0 and comparison["shadow_version"] == 3
            assert comparison["primary_ms"] > 0 and comparison["shadow_ms"] > 0
        elif target == "canary":
            assert comparison["max_abs_diff"] > 0 and comparison["shadow_version"] == 2
        else:
            assert comparison["shadow_errors"] == 5 and "nope" in comparison["last_error"]


def test_agreement_is_equal_labels_or_argmax_or_close_scores() -> None:
    import numpy as np

    labels = {"label": np.array([0, 1, 2, 2])}
    assert compare(labels, {"label": np.array([0, 1, 2, 1])})[:2] == (4, 3)
    scores = {"p": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}
    rows, agree, diff = compare(scores, {"p": np.array([[0.4, 0.6], [0.3, 0.7]], np.float32)})
    assert (rows, agree) == (2, 1) and abs(diff - 0.5) < 1e-6
    assert compare({"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 2.5])})[:2] == (2, 1)


def test_the_traffic_route_answers_the_split_in_effect(store: str, tmp_path: Path) -> None:
    _write_traffic(store, {"split": {"stable": 90, "canary": 10}, "sticky": HEADER, "shadow": {"target": "canary"}})
    report = json.loads(_service(store, tmp_path).handle(Request("GET", "/v2/models/m/traffic")).body)
    assert report["default_version"] == 1 and report["sticky"] == HEADER
    assert [(s["target"], s["weight"], s["version"]) for s in report["split"]] == [("canary", 10, 2), ("stable", 90, 1)]
    assert report["shadow"]["version"] == 2 and report["shadow"]["percent"] == 100
    missing = _service(store, tmp_path).handle(Request("GET", "/v2/models/nope/traffic"))
    assert missing.status == 404


# ---- every process and transport ---------------------------------------------------------------------------------
def _lambda_event(user: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v2/models/m/infer",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", HEADER: user},
        "requestContext": {"http": {"method": "POST", "path": "/v2/models/m/infer", "sourceIp": "127.0.0.1"}},
        "body": V2.decode(),
        "isBase64Encoded": False,
    }


def test_a_key_gets_the_same_version_from_two_servers_and_the_lambda_handler(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_traffic(store, {"split": {"stable": 50, "canary": 50}, "sticky": HEADER, "shadow": {"target": "canary"}})
    users = [f"user-{i}" for i in range(60)]
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    fn = ModelFunction(Settings(store=store, model="m", cache_dir=tmp_path / "fn"))
    on_lambda = {u: fn.http_handler(_lambda_event(u), LambdaContext())["headers"][VERSION_HEADER] for u in users}
    seen = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        with serve_process(["--store", store], tmp_path / d) as base, httpx.Client(base_url=base) as client:
            answers = {u: client.post("/v2/models/m/infer", content=V2, headers={HEADER: u}) for u in users}
            seen.append({u: r.headers[VERSION_HEADER] for u, r in answers.items()})
            deadline = time.monotonic() + 10
            # every request was shadowed, or skipped when 4 shadows were already running (servers bound them)
            while sum((c := client.get("/v2/models/m/traffic").json()["comparison"])[k] for k in SEEN) < 60:
                assert time.monotonic() < deadline, c
                time.sleep(0.05)
            assert c["shadowed"] > 0 and c["shadow_errors"] == 0 and c["shadow_version"] == 2
    assert seen[0] == seen[1] == on_lambda
    assert set(on_lambda.values()) == {"1", "2"}


def test_on_lambda_the_comparison_and_cache_hits_are_emf_metrics(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_traffic(store, {"shadow": {"target": "3"}})
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    fn = ModelFunction(Settings(store=store, model="m", cache_dir=tmp_path / "fn", response_cache_mb=1))
    capsys.readouterr()
    for _ in range(2):
        assert fn.http_handler(_lambda_event("u"), LambdaContext())["statusCode"] == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    first, second = [
        {k: v[0] if isinstance(v, list) else v for k, v in doc.items()} for doc in lines if "HttpLatency" in doc
    ]
    assert first["ShadowRequests"] == second["ShadowRequests"] == 1.0
    # the request's own count, as `modelfn rollout --max-error-rate` reads it
    assert first["Requests"] == 1.0 and (first["model"], first["version"], first["status_class"]) == ("m", "1", "2xx")
    assert first["route"] == "/v2/models/{name}/infer"
    directives = [d["Dimensions"] for d in lines[0]["_aws"]["CloudWatchMetrics"]]
    assert directives == [[["service"]], [["model", "version", "route", "status_class"]]]
    assert first["ShadowAgreement"] == 1.0 and first["ShadowMaxAbsDiff"] == 0.0
    assert first["CacheMisses"] == 1.0 and second["CacheHits"] == 1.0
