"""The ObjectStore interface, run identically on LocalStore (a tmp folder) and S3Store (moto's server over HTTP)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import boto3
import pytest

from modelfn.errors import InvalidInput, ModelNotFound, PublishError, StoreError
from modelfn.store import ObjectStore, open_store, split_uri
from modelfn.store.base import CHUNK
from modelfn.store.local import LocalStore
from modelfn.store.s3 import S3Store, s3_client


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    uri: str = request.getfixturevalue("fresh_bucket")
    return open_store(uri)


def _blob(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


def test_write_then_read(store: ObjectStore) -> None:
    store.write_bytes("m/1/a.txt", b"hello")
    assert store.read_bytes("m/1/a.txt") == b"hello"
    store.write_bytes("m/1/a.txt", b"replaced")  # a plain write overwrites
    assert store.read_bytes("m/1/a.txt") == b"replaced"
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""


def test_write_if_absent_refuses(store: ObjectStore) -> None:
    store.write_bytes("m/1/manifest.json", b"first", if_absent=True)
    with pytest.raises(PublishError) as e:
        store.write_bytes("m/1/manifest.json", b"second", if_absent=True)
    assert e.value.status == 400
    assert "already exists" in e.value.message
    assert "m/1/manifest.json" in e.value.message
    assert store.read_bytes("m/1/manifest.json") == b"first"


def test_missing_key_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(ModelNotFound) as e:
        store.read_bytes("nope/model.onnx")
    assert e.value.status == 404
    assert "nope/model.onnx" in e.value.message
    with pytest.raises(ModelNotFound):
        list(store.iter_chunks("nope/model.onnx"))
    assert not store.exists("nope/model.onnx")


def test_iter_chunks_streams_whole_object(store: ObjectStore) -> None:
    data = _blob(2 * CHUNK + 12345)
    store.write_bytes("big.bin", data)
    chunks = list(store.iter_chunks("big.bin"))
    assert len(chunks) >= 3
    assert all(0 < len(c) <= CHUNK for c in chunks)
    assert b"".join(chunks) == data


def test_upload_file_reports_progress(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = _blob(CHUNK + 4321, seed=1)
    src.write_bytes(data)
    moved: list[int] = []
    store.upload_file("m/2/model.onnx", src, progress=moved.append)
    assert moved, "the progress callback was never called"
    assert sum(moved) == len(data)
    assert store.read_bytes("m/2/model.onnx") == data
    store.upload_file("m/2/other.onnx", src)  # progress is optional
    assert store.exists("m/2/other.onnx")


def test_download_verified(store: ObjectStore, tmp_path: Path) -> None:
    data = _blob(CHUNK + 99, seed=2)
    sha = hashlib.sha256(data).hexdigest()
    store.write_bytes("m/1/model.onnx", data)
    out = tmp_path / "dl"

    # No expectation: downloaded and hashed.
    plain = out / "plain.onnx"
    assert store.download_verified("m/1/model.onnx", plain) == sha
    assert plain.read_bytes() == data

    # Matching expectation: renamed into place; progress sums to the size.
    good = out / "good.onnx"
    moved: list[int] = []
    assert store.download_verified("m/1/model.onnx", good, sha, progress=moved.append) == sha
    assert good.read_bytes() == data
    assert sum(moved) == len(data)

    # Mismatch: the real digest is returned and dest never appears; no partial file is left behind.
    bad = out / "bad.onnx"
    assert store.download_verified("m/1/model.onnx", bad, "0" * 64) == sha
    assert not bad.exists()
    assert sorted(p.name for p in out.iterdir()) == ["good.onnx", "plain.onnx"]

    with pytest.raises(ModelNotFound):
        store.download_verified("m/9/model.onnx", out / "missing.onnx", sha)
    assert not (out / "missing.onnx").exists()
    assert sorted(p.name for p in out.iterdir()) == ["good.onnx", "plain.onnx"]


def test_list_dirs(store: ObjectStore) -> None:
    for key in ("m/1/model.onnx", "m/2/manifest.json", "m/10/manifest.json", "m/labels.json", "n/x", "top.txt"):
        store.write_bytes(key, b"x")
    assert store.list_dirs("") == ["m", "n"]
    assert sorted(store.list_dirs("m")) == ["1", "10", "2"]
    assert store.list_dirs("m/") == store.list_dirs("m")
    assert store.list_dirs("n") == []
    assert store.list_dirs("absent") == []


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("m/1/manifest.json")
    store.write_bytes("m/1/manifest.json", b"{}")
    assert store.exists("m/1/manifest.json")
    assert not store.exists("m/1/model.onnx")


def test_join_names_the_object(store: ObjectStore) -> None:
    assert store.join("m/1/model.onnx") == store.uri.rstrip("/") + "/m/1/model.onnx"


def test_s3_prefix_maps_to_bucket_keys(fresh_bucket: str) -> None:
    store = open_store(fresh_bucket)
    assert isinstance(store, S3Store)
    store.write_bytes("m/1/model.onnx", b"abc")
    body = boto3.client("s3").get_object(Bucket=store.bucket, Key="models/m/1/model.onnx")["Body"].read()
    assert body == b"abc"
    sibling = open_store(f"s3://{store.bucket}/other")
    assert not sibling.exists("m/1/model.onnx")
    assert sibling.list_dirs("") == []
    assert open_store(f"s3://{store.bucket}").list_dirs("") == ["models"]


def test_threads_asking_for_the_s3_client_at_once_get_one_client(fresh_bucket: str) -> None:
    """A function's init reads traffic.json in a thread beside the model's reads: one client is built, not two."""
    s3_client.cache_clear()
    start = threading.Barrier(8)
    clients: list[object] = []

    def first_call() -> None:
        start.wait()
        clients.append(s3_client())

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(clients) == 8 and len({id(c) for c in clients}) == 1
    assert open_store(fresh_bucket).exists("nothing") is False  # and it works


def test_local_keys_cannot_escape_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        store.write_bytes("../outside.txt", b"x")
    assert not (tmp_path / "outside.txt").exists()


def test_local_failed_if_absent_write_claims_nothing(tmp_path: Path) -> None:
    """An if_absent write that fails half-way (disk full, a crash) must not leave an empty object that would claim
    the key forever: the object appears whole or not at all."""
    store = LocalStore(tmp_path)
    with pytest.raises(TypeError):
        store.write_bytes("m/1/manifest.json", "not bytes", if_absent=True)  # type: ignore[arg-type]
    assert not store.exists("m/1/manifest.json")
    assert os.listdir(tmp_path / "m" / "1") == []
    store.write_bytes("m/1/manifest.json", b"{}", if_absent=True)
    assert store.read_bytes("m/1/manifest.json") == b"{}"


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("m/1/a", b"1")
    store.write_bytes("m/1/b", b"2", if_absent=True)
    src = tmp_path / "src"
    src.write_bytes(b"3")
    store.upload_file("m/1/c", src)
    assert sorted(os.listdir(tmp_path / "m" / "1")) == ["a", "b", "c"]
    assert oct((tmp_path / "m" / "1" / "a").stat().st_mode & 0o777) == "0o644"


# --- open_store URI parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix", "norm"),
    [
        ("s3://bucket/prefix", "bucket", "prefix", "s3://bucket/prefix"),
        ("s3://bucket/a/b/", "bucket", "a/b", "s3://bucket/a/b"),
        ("s3://bucket", "bucket", "", "s3://bucket"),
        ("s3://bucket/", "bucket", "", "s3://bucket"),
    ],
)
def test_open_store_s3(uri: str, bucket: str, prefix: str, norm: str) -> None:
    store = open_store(uri)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.uri) == (bucket, prefix, norm)


def test_open_store_file_uri(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/models")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "models").resolve()
    assert store.uri == (tmp_path / "models").resolve().as_uri()
    spaced = open_store(f"file://{tmp_path}/with%20space")
    assert isinstance(spaced, LocalStore)
    assert spaced.root.name == "with space"
    on_localhost = open_store(f"file://localhost{tmp_path}")
    assert isinstance(on_localhost, LocalStore)
    assert on_localhost.root == tmp_path.resolve()


def test_open_store_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(str(tmp_path / "abs"))
    assert isinstance(absolute, LocalStore)
    assert absolute.root == (tmp_path / "abs").resolve()
    monkeypatch.chdir(tmp_path)
    relative = open_store("rel/models")
    assert isinstance(relative, LocalStore)
    assert relative.root == (tmp_path / "rel" / "models").resolve()
    relative.write_bytes("k", b"v")
    assert (tmp_path / "rel" / "models" / "k").read_bytes() == b"v"


@pytest.mark.parametrize(
    "uri",
    [
        "gs://bucket/prefix",
        "http://example.com/models",
        "ftp://host/x",
        "s3:///no-bucket",
        "file://models/x",  # a host, not a path: would silently mean /x
        "file://./models",
        "s3//bucket/x",  # would silently be the local folder ./s3/bucket/x
        "file//tmp/models",
        "s3:/bucket",
        "s3:bucket/x",
        "s3://",
        "s3://user@bucket/x",
        "s3://bucket:9000/x",
        "s3://bucket/models?versionId=1",
        "s3://bucket/models#frag",
        "file://rel",
        "file:rel/models",
        "file:",
        "file:///tmp/x?y=1",
        "",
        " ./models",
        "./models ",
    ],
)
def test_open_store_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="store URI") as e:
        open_store(uri)
    assert isinstance(e.value, InvalidInput)  # a 400 for the edges; still a ValueError for older callers
    assert e.value.status == 400
    assert "s3://bucket/prefix" in e.value.message
    assert "file:///abs/path" in e.value.message
    assert "plain path" in e.value.message


def test_open_store_accepts_the_documented_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for uri in ("models", "./models", "models/sub", "models//sub", f"file:{tmp_path}/models", f"{tmp_path}//a"):
        store = open_store(uri)
        assert isinstance(store, LocalStore), uri
    assert open_store("./models").uri == open_store("models").uri == (tmp_path / "models").resolve().as_uri()


@pytest.mark.parametrize("uri", ["s3//bucket/key.csv", "s3:/bucket/key.csv", "s3://bucket", "file://rel/x.csv"])
def test_split_uri_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidInput, match="s3://") as e:
        split_uri(uri)
    assert isinstance(e.value, ValueError)


# --- conditional writes -----------------------------------------------------------------------------------------


def test_write_if_is_compare_and_swap(store: ObjectStore) -> None:
    assert store.read_with_token("m/labels.json") == (None, None)
    assert store.write_if("m/labels.json", b"first", None)  # None: only while absent
    assert not store.write_if("m/labels.json", b"again", None)
    data, token = store.read_with_token("m/labels.json")
    assert (data, token is not None) == (b"first", True)
    assert store.write_if("m/labels.json", b"second", token)
    assert not store.write_if("m/labels.json", b"stale", token)  # based on a state that is gone
    assert store.read_bytes("m/labels.json") == b"second"
    assert not store.write_if("m/absent.json", b"x", token)  # a token for an object that does not exist
    assert not store.exists("m/absent.json")


def test_update_never_loses_a_concurrent_change(store: ObjectStore) -> None:
    """Threads incrementing one counter through `update`: a read-modify-write without the conditional write loses
    increments; with it every one lands."""
    from concurrent.futures import ThreadPoolExecutor

    def increment(current: bytes | None) -> bytes:
        return str(int(current or b"0") + 1).encode()

    def work() -> None:
        for _ in range(10):
            store.update("counter", increment)

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(work) for _ in range(4)]:
            f.result()
    assert store.read_bytes("counter") == b"40"


def test_update_retries_on_a_fresh_read(store: ObjectStore) -> None:
    """Another writer slips in between update's read and its write: the write is refused and `change` runs again on
    what the other writer wrote."""
    store.write_bytes("k", b"a")
    seen: list[bytes | None] = []

    def change(current: bytes | None) -> bytes:
        seen.append(current)
        if len(seen) == 1:
            store.write_bytes("k", b"b")  # the interloper
        return (current or b"") + b"+"

    assert store.update("k", change) == b"b+"
    assert seen == [b"a", b"b"]
    assert store.read_bytes("k") == b"b+"


def test_update_gives_up_with_a_store_error(store: ObjectStore) -> None:
    def always_interrupted(current: bytes | None) -> bytes:
        store.write_bytes("k", os.urandom(8))
        return b"mine"

    with pytest.raises(StoreError, match="other writers kept changing it") as e:
        store.update("k", always_interrupted, attempts=3)
    assert e.value.status == 502
    assert store.read_bytes("k") != b"mine"


def test_local_write_if_leaves_only_its_lock_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.update("m/labels.json", lambda _: b"{}")
    assert sorted(os.listdir(tmp_path / "m")) == [".labels.json.lock", "labels.json"]
    assert store.list_dirs("") == ["m"]
