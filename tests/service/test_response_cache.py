"""The response cache (contract "Response cache"): a hit is the body a miss gives with the caller's own `id`, keys
never mix models, versions, shapes or outputs, a label move never serves a stale answer, two servers share hits
through a real Redis server, and a Redis that dies makes misses, never errors."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modelfn_tools.examples import build_mlp
from modelfn_tools.localserver import redis_process, serve_process
from modelfn_tools.publish import publish, set_label

from modelfn.registry import ModelRegistry
from modelfn.service.cache import ResponseCache, cache_key, pack, unpack
from modelfn.service.dispatch import Service
from modelfn.service.request import CACHE_HEADER, VERSION_HEADER, Request, Response
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]


def _v2(rows: list[list[float]], rid: str | None = None, outputs: list[str] | None = None) -> bytes:
    body: dict[str, Any] = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 4], "data": rows}]}
    if rid is not None:
        body["id"] = rid
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return json.dumps(body).encode()


def _post(service: Service, path: str, body: bytes) -> Response:
    return service.handle(Request("POST", path, "", {"content-type": "application/json"}, body))


def _mlp(tmp_path: Path, seed: int) -> Path:
    return build_mlp(tmp_path / f"mlp-{seed}.onnx", sizes=(4, 16, 3), seed=seed)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """`iris`: a 4→16→3 MLP, v1 (stable), in a local store of this test's own."""
    uri = str(tmp_path / "store")
    publish(_mlp(tmp_path, 0), uri, "iris", labels=["stable"], progress=False)
    return uri


def _service(store: str, tmp_path: Path, **settings: Any) -> Service:
    cfg = Settings(store=store, cache_dir=tmp_path / "cache", response_cache_mb=1, **settings)
    return Service(ModelRegistry.from_uri(store, cfg))


# ---- the key -------------------------------------------------------------------------------------------------
def test_the_key_covers_model_version_route_outputs_names_types_shapes_and_values() -> None:
    x = {"input": np.ones((2, 4), np.float32)}
    base = cache_key("m", "sha-a", "v2", None, x)
    assert base == cache_key("m", "sha-a", "v2", None, {"input": np.ones((2, 4), np.float32)})
    different = [
        cache_key("n", "sha-a", "v2", None, x),
        cache_key("m", "sha-b", "v2", None, x),
        cache_key("m", "sha-a", "tf", None, x),
        cache_key("m", "sha-a", "v2", ["label"], x),
        cache_key("m", "sha-a", "v2", None, {"other": np.ones((2, 4), np.float32)}),
        cache_key("m", "sha-a", "v2", None, {"input": np.ones((2, 4), np.float64)}),
        cache_key("m", "sha-a", "v2", None, {"input": np.ones((4, 2), np.float32)}),
        cache_key("m", "sha-a", "v2", None, {"input": np.ones((1, 8), np.float32)}),
        cache_key("m", "sha-a", "v2", None, {"input": np.full((2, 4), 2, np.float32)}),
    ]
    assert len({base, *different}) == len(different) + 1


def test_strings_pack_and_key_by_value() -> None:
    words = np.array([b"a", "é".encode()], dtype=object)
    assert cache_key("m", "s", "v2", None, {"t": words}) != cache_key(
        "m", "s", "v2", None, {"t": np.array([b"a", b"e"], dtype=object)}
    )
    results = {"label": np.array([1, 2], np.int64), "words": words, "p": np.zeros((2, 3), np.float32)}
    back = unpack(pack(results))
    assert list(back) == list(results)
    for name, array in results.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert (back[name] == array).all()


def test_the_lru_is_bounded_in_bytes_and_entries_expire() -> None:
    cache = ResponseCache(max_bytes=4096, ttl=0.2)
    for i in range(20):
        cache.put(bytes([i]) * 32, {"y": np.zeros(256, np.float32)})  # 1 KiB + overhead each
    snap = cache.snapshot()
    assert snap["bytes"] <= 4096 and snap["entries"] == 3 and snap["evictions"] == 17
    assert cache.get("m", bytes([19]) * 32) is not None and cache.get("m", bytes([0]) * 32) is None
    time.sleep(0.25)
    assert cache.get("m", bytes([19]) * 32) is None


# ---- through the service -------------------------------------------------------------------------------------
def test_a_hit_echoes_the_new_id_and_is_otherwise_the_body_a_miss_gives(store: str, tmp_path: Path) -> None:
    service = _service(store, tmp_path)
    first = _post(service, "/v2/models/iris/infer", _v2([ROW], "a"))
    second = _post(service, "/v2/models/iris/infer", _v2([ROW], "b"))
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == ("miss", "hit")
    one, two = json.loads(first.body), json.loads(second.body)
    assert (one.pop("id"), two.pop("id")) == ("a", "b")
    assert one == two
    uncached = Service(ModelRegistry.from_uri(store, Settings(store=store, cache_dir=tmp_path / "c2")))
    plain = _post(uncached, "/v2/models/iris/infer", _v2([ROW], "b"))
    assert plain.body == second.body and CACHE_HEADER not in plain.headers


def test_other_shapes_outputs_routes_and_binary_are_not_answered_from_another_entry(store: str, tmp_path: Path) -> None:
    service = _service(store, tmp_path)
    assert _post(service, "/v2/models/iris/infer", _v2([ROW])).headers[CACHE_HEADER] == "miss"
    two_rows = _post(service, "/v2/models/iris/infer", _v2([ROW, ROW]))
    assert two_rows.headers[CACHE_HEADER] == "miss" and json.loads(two_rows.body)["outputs"][0]["shape"][0] == 2
    only_label = _post(service, "/v2/models/iris/infer", _v2([ROW], outputs=["logits"]))
    assert only_label.headers[CACHE_HEADER] == "miss"
    assert [o["name"] for o in json.loads(only_label.body)["outputs"]] == ["logits"]
    tf = _post(service, "/v1/models/iris:predict", json.dumps({"instances": [ROW]}).encode())
    assert tf.headers[CACHE_HEADER] == "miss" and "predictions" in json.loads(tf.body)
    assert (
        _post(service, "/v1/models/iris:predict", json.dumps({"instances": [ROW]}).encode()).headers[CACHE_HEADER]
        == "hit"
    )


def test_a_label_move_never_serves_a_stale_answer(store: str, tmp_path: Path) -> None:
    service = _service(store, tmp_path, label_ttl=0)
    before = _post(service, "/v2/models/iris/infer", _v2([ROW]))
    assert before.headers[VERSION_HEADER] == "1"
    assert _post(service, "/v2/models/iris/infer", _v2([ROW])).headers[CACHE_HEADER] == "hit"
    publish(_mlp(tmp_path, 1), store, "iris", progress=False)  # the same graph, other weights
    set_label(store, "iris", "stable", 2)
    after = _post(service, "/v2/models/iris/infer", _v2([ROW]))
    assert after.headers[VERSION_HEADER] == "2" and after.headers[CACHE_HEADER] == "miss"
    assert json.loads(after.body)["outputs"] != json.loads(before.body)["outputs"]
    assert _post(service, "/v2/models/iris/infer", _v2([ROW])).headers[CACHE_HEADER] == "hit"


def test_errors_are_never_cached(store: str, tmp_path: Path) -> None:
    service = _service(store, tmp_path)
    bad = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    for _ in range(2):
        answer = _post(service, "/v2/models/iris/infer", bad.encode())
        assert answer.status == 400 and CACHE_HEADER not in answer.headers


# ---- the shared tier, on real servers -------------------------------------------------------------------------
def _infer(base: str, rid: str) -> httpx.Response:
    return httpx.post(f"{base}/v2/models/iris/infer", content=_v2([ROW], rid), timeout=30)


def test_two_servers_share_hits_through_redis(store: str, tmp_path: Path) -> None:
    for d in "abr":
        (tmp_path / d).mkdir()
    with redis_process(tmp_path / "r") as url:
        env = {"MODELFN_RESPONSE_CACHE_URL": url, "MODELFN_RESPONSE_CACHE_MB": "0"}
        with (
            serve_process(["--store", store], tmp_path / "a", env=env) as a,
            serve_process(["--store", store], tmp_path / "b", env=env) as b,
        ):
            first = _infer(a, "from-a")
            second = _infer(b, "from-b")
    assert first.status_code == second.status_code == 200
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == ("miss", "hit")
    assert second.json()["id"] == "from-b"
    assert {**first.json(), "id": None} == {**second.json(), "id": None}


def test_redis_killed_mid_run_gives_misses_not_errors(store: str, tmp_path: Path) -> None:
    for d in "ar":
        (tmp_path / d).mkdir()
    with ExitStack() as stack:
        redis = ExitStack()
        url = redis.enter_context(redis_process(tmp_path / "r"))
        stack.push(redis)
        env = {"MODELFN_RESPONSE_CACHE_URL": url, "MODELFN_RESPONSE_CACHE_MB": "0"}
        a = stack.enter_context(serve_process(["--store", store], tmp_path / "a", env=env))
        expected = _infer(a, "1")
        assert expected.headers[CACHE_HEADER] == "miss"
        assert _infer(a, "2").headers[CACHE_HEADER] == "hit"
        redis.close()  # Redis stops while the server runs
        answers = [_infer(a, str(i)) for i in range(20)]
    assert [r.status_code for r in answers] == [200] * 20
    assert {r.headers[CACHE_HEADER] for r in answers} == {"miss"}
    assert all(r.json()["outputs"] == expected.json()["outputs"] for r in answers)
