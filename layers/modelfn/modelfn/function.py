"""ModelFunction: one model bound to the Lambda handlers. Built at module import, which is the function's init
phase, so the model is fetched, verified, loaded and warmed before the first request (and before a SnapStart
snapshot is taken)."""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import cached_property
from typing import Any

from modelfn.adapters.events import is_http, is_item_batch, is_s3, is_sqs
from modelfn.errors import ModelfnError, StoreError
from modelfn.hooks import Hooks
from modelfn.model.loaded import LoadedModel
from modelfn.protocols.plain import Postprocess, Preprocess
from modelfn.registry import ModelRegistry
from modelfn.service.request import CACHE_HEADER
from modelfn.service.traffic import TrafficRouter
from modelfn.settings import Settings
from modelfn.store import ObjectStore, open_store
from modelfn.telemetry import names
from modelfn.telemetry.names import CAPTURE_DROPPED, CAPTURE_WRITTEN

log = logging.getLogger("modelfn")


class ModelFunction:
    def __init__(self, settings: Settings, hooks: Hooks | None = None, base_path: str = "/") -> None:
        if not settings.store or not settings.model:
            raise ValueError("a model function needs MODELFN_STORE and MODELFN_MODEL")
        from modelfn.observability import Observability

        self.settings = settings
        self.name: str = settings.model
        self.hooks = hooks or Hooks()
        self.base_path = base_path
        self.registry = ModelRegistry.from_uri(settings.store, settings, [self.name])
        self.traffic = TrafficRouter(self.registry)
        self.obs = Observability.for_model(self.name)
        self.load_ms: float | None = None
        self.load_error: str | None = None
        self.capture: Any = None
        """modelfn.capture.Capture when MODELFN_CAPTURE is set (and the service is built): flushed after invokes."""
        self._capture_dropped = 0
        """Capture's dropped records already reported as EMF."""
        self._load_reported = False
        self.load()
        self.http_handler = self.obs.wrap(self._http, "http")
        self.sqs_handler = self.obs.wrap(self._sqs, "sqs")
        self.s3_handler = self.obs.wrap(self._s3, "s3")
        self.batch_handler = self.obs.wrap(self._batch, "batch")
        self.handler = self.obs.wrap(self._any, "any")
        self._register_snapstart_hooks()

    @classmethod
    def from_env(
        cls,
        preprocess: Preprocess | None = None,
        postprocess: Postprocess | None = None,
        base_path: str | None = None,
        **overrides: Any,
    ) -> ModelFunction:
        """Settings from MODELFN_* (arguments win); MODELFN_BASE_PATH is the API mapping's base path to strip."""
        settings = Settings.load(**overrides)
        return cls(settings, Hooks(preprocess, postprocess), base_path or os.environ.get("MODELFN_BASE_PATH", "/"))

    # ---- model -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load now; a failure is kept (and answered as 503 per request) rather than crashing init, so the
        function says what is wrong instead of failing every cold start opaquely. The model's traffic.json is read
        beside it, so the first request does not wait for it."""
        started = time.perf_counter()
        traffic = self._read_traffic()
        try:
            self.registry.get(self.name, self.settings.version)
            self.load_error = None
        except ModelfnError as e:
            self.load_error = e.message
            log.error("model %r could not be loaded at init: %s", self.name, e.message)
        if traffic is not None:
            traffic.join()  # bounded by the store's own timeouts, as the load is; never left running into a freeze
        self.load_ms = (time.perf_counter() - started) * 1000

    def _read_traffic(self) -> threading.Thread | None:
        """traffic.json read in a thread (a store round trip the model's own reads need not wait for), unless
        MODELFN_VERSION pins the version: then requests never consult it."""
        if self.settings.version is not None:
            return None
        thread = threading.Thread(target=self.traffic.current, args=(self.name,), name="modelfn-traffic", daemon=True)
        thread.start()
        return thread

    def model(self) -> LoadedModel:
        """The current model: label moves are picked up within MODELFN_LABEL_TTL, loading the new version once."""
        return self.registry.get(self.name, self.settings.version)

    def results(self) -> ObjectStore:
        if not self.settings.results:
            raise StoreError("MODELFN_RESULTS is not set: batch handlers have nowhere to write")
        return self._results_store

    @cached_property
    def _results_store(self) -> ObjectStore:
        return open_store(self.settings.results or "")

    # ---- handlers ----------------------------------------------------------------------------------------
    @cached_property
    def service(self) -> Any:
        """The service core: the same route table and data plane `modelfn serve` runs (never a batcher: one
        Lambda environment serves one request at a time)."""
        from modelfn.service.dispatch import Service

        service = Service(
            self.registry, default_model=self.name, hooks={self.name: self.hooks}, title=self.name, traffic=self.traffic
        )
        if self.obs.metrics_on:
            from modelfn.telemetry.lambda_requests import LambdaRequests

            service.observers.append(LambdaRequests(service, self.obs))
        if self.settings.capture:  # imported only when asked for: the cold start pays nothing otherwise
            from modelfn.capture import Capture

            self.capture = Capture.install(service)
        return service

    @cached_property
    def _http_adapter(self) -> Any:
        from modelfn.adapters.lambda_http import LambdaHttp

        return LambdaHttp(self.service, self.base_path)

    @cached_property
    def _sqs_adapter(self) -> Any:
        from modelfn.adapters.sqs import RequestSource, SqsHandler

        service = self.service
        source = RequestSource.from_settings(self.settings)
        return SqsHandler(service.plane, self.model, self.results, self.name, source, service._observed)

    @cached_property
    def _s3_adapter(self) -> Any:
        from modelfn.adapters.s3 import S3Handler

        prefix = self.settings.input_prefix
        return S3Handler(self.model, self.results, self.name, prefix)

    def _report_load(self) -> None:
        if not self._load_reported and self.load_ms is not None:
            self.obs.load_time(self.load_ms)
            self._load_reported = True

    def _timed(self, kind: str, fn: Any, event: dict[str, Any], context: Any) -> Any:
        if not self._load_reported:
            self._report_load()
        started = time.perf_counter()
        try:
            result = fn(event, context)
        except Exception:
            self.obs.count("Errors")
            raise
        finally:
            self.obs.latency(kind, (time.perf_counter() - started) * 1000)
            if self.capture is not None:
                self._flush_capture()
        return result

    def _flush_capture(self) -> None:
        """At the end of an invoke, when the capture buffer is old or full: no thread runs in a frozen environment,
        so this is when captured records are written (README: what a reclaimed environment can lose)."""
        try:
            written = self.capture.flush_if_due()
        except Exception:  # capture must never fail an invoke
            log.exception("capture: flush failed")
            return
        if written:
            self.obs.count(CAPTURE_WRITTEN.emf_name, written)
        dropped = sum(self.capture.dropped.values())
        if dropped > self._capture_dropped:
            self.obs.count(CAPTURE_DROPPED.emf_name, dropped - self._capture_dropped)
            self._capture_dropped = dropped

    def _http(self, event: dict[str, Any], context: Any) -> Any:
        response = self._timed("Http", self._http_adapter, event, context)
        status = int(response.get("statusCode", 500))
        if status >= 500:
            self.obs.count("Errors")
        elif status >= 400:
            self.obs.count("ClientErrors")
        self._report_strategies(response)
        return response

    def _report_strategies(self, response: dict[str, Any]) -> None:
        """The response cache's hit or miss and the shadow's comparison of this invoke, as EMF metrics under the
        catalogue's names (telemetry/names.py), so Lambda and servers name them alike."""
        cache = (response.get("headers") or {}).get(CACHE_HEADER)
        if cache is not None:
            self.obs.count((names.CACHE_HITS if cache == "hit" else names.CACHE_MISSES).emf_name)
        shadows = self.service.shadows
        compared = shadows.last
        if compared is None:
            return
        shadows.last = None
        self.obs.count(names.SHADOW_REQUESTS.emf_name)
        if compared.error is not None:
            self.obs.count(names.SHADOW_ERRORS.emf_name)
            return
        if compared.rows:
            self.obs.ratio(names.SHADOW_AGREEMENT.emf_name, compared.agreeing_rows / compared.rows)
        self.obs.ratio(names.SHADOW_MAX_ABS_DIFF.emf_name, compared.max_abs_diff)
        self.obs.latency("ShadowPrimary", compared.primary_seconds * 1000)
        self.obs.latency("ShadowCandidate", compared.shadow_seconds * 1000)

    def _sqs(self, event: dict[str, Any], context: Any) -> Any:
        response = self._timed("Sqs", self._sqs_adapter, event, context)
        failed = len(response.get("batchItemFailures", []))
        self.obs.count("MessagesProcessed", len(event.get("Records", [])) - failed)
        self.obs.count("MessagesFailed", failed)
        return response

    def _s3(self, event: dict[str, Any], context: Any) -> Any:
        response = self._timed("S3", self._s3_adapter, event, context)
        for r in response["results"]:
            self.obs.count("RowsScored", r.get("scored", 0))
            self.obs.count("RowsFailed", r.get("errors", 0))
        return response

    def _items(self, event: dict[str, Any], context: Any) -> Any:
        from modelfn.adapters.s3 import score_items

        response = self._timed("Items", lambda e, c: score_items(self.model(), e), event, context)
        self.obs.count("RowsScored", len(response["scored"]))
        self.obs.count("RowsFailed", len(response["errors"]))
        return response

    def _batch(self, event: dict[str, Any], context: Any) -> Any:
        if is_sqs(event):
            return self._sqs(event, context)
        if is_s3(event):
            return self._s3(event, context)
        if is_item_batch(event):
            return self._items(event, context)
        raise ValueError("the batch handler takes SQS, S3 or Step Functions item-batch events")

    def _any(self, event: dict[str, Any], context: Any) -> Any:
        return self._http(event, context) if is_http(event) else self._batch(event, context)

    def warm_http(self) -> None:
        """Answer one internal request and build the OpenAPI document, so their first-call costs are paid now: run
        before a SnapStart snapshot (where init time is free). Inference never needs either."""
        from modelfn.service.request import Request

        self.service.handle(Request("GET", "/health"))
        self.service.openapi_document  # noqa: B018 - built and cached

    # ---- SnapStart -----------------------------------------------------------------------------------------
    def _register_snapstart_hooks(self) -> None:
        """With SnapStart the init phase runs once, before the snapshot: make sure the model and the HTTP app are
        in it; after a restore, drop what must not be shared between restored environments (S3 connections,
        cached label resolutions)."""
        try:
            from snapshot_restore_py import register_after_restore, register_before_snapshot  # Lambda runtime only
        except ImportError:
            return
        register_before_snapshot(self.before_snapshot)
        register_after_restore(self.after_restore)

    def before_snapshot(self) -> None:
        if self.load_error is not None:
            self.load()
        self.warm_http()

    def after_restore(self) -> None:
        from modelfn.store.s3 import s3_client

        s3_client.cache_clear()
        self.registry.cache.forget_labels()
        self.traffic.forget()
