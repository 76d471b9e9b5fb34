"""The server's event loop never waits on the store: with the store hung and a label's TTL expired, requests that
must re-resolve wait in worker threads while liveness, health and other requests keep answering at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import serve_process

ROW = [5.1, 3.5, 1.4, 0.2]
V2 = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}


class StallingProxy:
    """A TCP proxy to moto's server that, once stalled, swallows every request byte: the store hangs."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.stalled = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request_side: bool) -> None:
        try:
            while data := src.recv(65536):
                if request_side and self.stalled.is_set():
                    continue  # the request never reaches the store; no answer ever comes
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.closing = True
        self.listener.close()


@pytest.fixture
def proxy(aws: EmbeddedAWS) -> Iterator[StallingProxy]:
    p = StallingProxy(aws.endpoint)
    yield p
    p.close()


def test_a_hung_store_never_blocks_the_event_loop(s3_store: str, proxy: StallingProxy, tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": proxy.url, "MODELFN_LABEL_TTL": "1"}
    with serve_process(["--store", s3_store, "--models", "iris"], tmp_path, env=env) as base:
        assert httpx.post(f"{base}/v2/models/iris/infer", json=V2, timeout=30).status_code == 200
        proxy.stalled.set()
        time.sleep(1.5)  # the default version's resolution is now stale: the next request must ask the store
        with ThreadPoolExecutor(4) as pool:
            stuck = [pool.submit(httpx.post, f"{base}/v2/models/iris/infer", json=V2, timeout=3) for _ in range(3)]
            time.sleep(0.3)
            for path in ("/v2/health/live", "/health", "/v2"):
                started = time.perf_counter()
                r = httpx.get(base + path, timeout=5)
                assert r.status_code == 200, (path, r.text)
                assert time.perf_counter() - started < 1.0, path
            pending = [f for f in stuck if not f.done()]
        assert pending, "the re-resolving requests should have been waiting on the hung store"
