"""A store outage keeps serving the last good resolution (labels, default versions, the model list), with a
warning, retried once per MODELFN_LABEL_TTL; a store that is stopped and one that hangs alike. What the store says
does not exist (404) is an answer, not an outage."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from modelfn_tools.embedded import EmbeddedAWS

from modelfn.errors import ModelNotFound, StoreError
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.registry.loader import ModelCache
from modelfn.settings import Settings
from modelfn.store import ModelRepository
from modelfn.store.s3 import S3Store
from tests.registry.versions import write_labels, write_version

TTL = 1.0
TIMEOUT = 0.5  # botocore's connect and read timeouts here (a deployment keeps its own defaults)


def short_client(endpoint: str) -> Any:
    """An S3 client that gives up quickly and never retries, so a test sees the outage in a fraction of a second."""
    config = Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"mode": "standard", "max_attempts": 1})
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def bucket_name(request: pytest.FixtureRequest) -> str:
    return f"outage-{abs(hash(request.node.name)) % 10**8}-{int(time.time() * 1000) % 10**6}"


def store_with_iris(endpoint: str, bucket: str, example_dir: Path) -> S3Store:
    """iris versions 1 and 2, `stable` on 1, in a new bucket."""
    client = short_client(endpoint)
    client.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "models", client=client)
    for version in (1, 2):
        write_version(store, "iris", version, example_dir / "iris.onnx")
    write_labels(store, "iris", {"stable": 1})
    return store


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "re-read" in r.getMessage()]


@pytest.fixture
def own_aws() -> Iterator[EmbeddedAWS]:
    """moto's server of this test alone, which it may stop (and start again on the same port)."""
    server = EmbeddedAWS("127.0.0.1", 0).start()
    yield server
    server.stop()


def test_a_stopped_store_keeps_the_last_good_resolution(
    own_aws: EmbeddedAWS,
    example_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    store = store_with_iris(own_aws.endpoint, bucket_name(request), example_dir)
    reg = ModelRegistry(ModelRepository(store), Settings(cache_dir=tmp_path / "c", label_ttl=TTL), cache=ModelCache())
    model = reg.get("iris")
    assert model.version == 1
    assert reg.resolve("iris", "stable") == 1
    assert reg.model_names() == ["iris"]
    assert reg.get("iris", 2).version == 2

    own_aws.stop()
    time.sleep(TTL + 0.05)
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        assert reg.get("iris") is model  # the default version, re-read and failed: the last good one
        assert reg.resolve("iris", "stable") == 1
        assert reg.model_names() == ["iris"]
        for _ in range(5):  # retried once per TTL, not per request
            assert reg.resolve("iris") == 1
            assert reg.lookup("iris") is model  # fresh again: an event loop needs no thread hop meanwhile
    warnings = outage_warnings(caplog)
    assert len(warnings) == 3
    assert any("'iris' default version" in w and "keeping 1" in w for w in warnings)
    assert any("'iris' label 'stable'" in w for w in warnings)
    assert any("the models of" in w for w in warnings)
    assert reg.get("iris", 2).version == 2  # a loaded version needs no store at all

    # After a SnapStart restore the resolutions are re-read, yet still kept while the store does not answer.
    reg.cache.forget_labels()
    assert reg.lookup("iris", "stable") is None
    assert reg.resolve("iris", "stable") == 1

    # With nothing good to fall back on, an outage is an error (502), and it leaves nothing behind.
    labels = reg.cache.sizes()["labels"]
    with pytest.raises(StoreError) as e:
        reg.resolve("iris", "canary")
    assert e.value.status == 502
    assert reg.cache.sizes()["labels"] == labels

    # The store comes back with `stable` moved during the outage: picked up within the TTL.
    back = EmbeddedAWS("127.0.0.1", own_aws.port).start()
    try:
        write_labels(store, "iris", {"stable": 2})
        deadline = time.monotonic() + 10
        while reg.resolve("iris", "stable") != 2 and time.monotonic() < deadline:
            time.sleep(TTL / 3)
        assert reg.resolve("iris", "stable") == 2
        assert reg.get("iris").version == 2
    finally:
        back.stop()


class HangingRelay:
    """A TCP relay to a live server that, once `hang()` is called, still accepts connections and reads requests but
    never answers: the store neither refuses nor responds, the hardest outage for a caller."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hanging = threading.Event()
        self.swallowed = threading.Event()  # a request arrived while hanging
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        self.hanging.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                if self.hanging.is_set():
                    self.swallowed.set()
                else:
                    dst.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_a_hanging_store_keeps_the_last_good_resolution(
    aws: EmbeddedAWS,
    example_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    relay = HangingRelay(aws.port)
    try:
        store = store_with_iris(relay.endpoint, bucket_name(request), example_dir)
        settings = Settings(cache_dir=tmp_path / "c", label_ttl=TTL)
        reg = ModelRegistry(ModelRepository(store), settings, cache=ModelCache())
        model = reg.get("iris")
        assert reg.model_names() == ["iris"]

        relay.hang()
        time.sleep(TTL + 0.05)
        with caplog.at_level(logging.WARNING, logger="modelfn"):
            # One request finds out (waiting for the timeout); the others meanwhile answer at once.
            slow: list[LoadedModel] = []
            started = time.monotonic()
            finder = threading.Thread(target=lambda: slow.append(reg.get("iris")))
            finder.start()
            assert relay.swallowed.wait(timeout=10)  # its request is out, and will never be answered
            quick = time.monotonic()
            assert reg.get("iris") is model
            assert time.monotonic() - quick < TIMEOUT / 2
            finder.join(timeout=30)
            assert slow == [model]
            assert time.monotonic() - started >= TIMEOUT

            quick = time.monotonic()  # and the store is not asked again before the TTL has passed
            assert reg.get("iris") is model
            assert time.monotonic() - quick < TIMEOUT / 2
            time.sleep(TTL + 0.05)
            assert reg.model_names() == ["iris"]
        assert len(outage_warnings(caplog)) == 2
        assert all("keeping" in w for w in outage_warnings(caplog))
    finally:
        relay.close()


def test_a_missing_label_is_an_answer_not_an_outage(fresh_bucket: str, example_dir: Path, tmp_path: Path) -> None:
    """A label deleted from labels.json is gone within the TTL (404), and a deleted default falls back to the highest
    version, as for a process that never knew them."""
    store = S3Store(fresh_bucket.removeprefix("s3://").split("/")[0], "models")
    for version in (1, 2):
        write_version(store, "iris", version, example_dir / "iris.onnx")
    write_labels(store, "iris", {"stable": 1, "canary": 2})
    reg = ModelRegistry(ModelRepository(store), Settings(cache_dir=tmp_path / "c", label_ttl=TTL), cache=ModelCache())
    assert reg.resolve("iris", "canary") == 2
    assert reg.resolve("iris") == 1
    labels = reg.cache.sizes()["labels"]

    write_labels(store, "iris", {})
    time.sleep(TTL + 0.05)
    with pytest.raises(ModelNotFound, match="no label 'canary'") as e:
        reg.resolve("iris", "canary")
    assert e.value.status == 404
    assert reg.cache.sizes()["labels"] == labels - 1
    assert reg.resolve("iris") == 2
