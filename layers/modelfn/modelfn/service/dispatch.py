"""The service: one route table, one data plane, one error mapping, for every transport. `handle` answers in the
calling thread (Lambda, one request per environment); `handle_async` answers on a server's event loop without ever
blocking it (see runner.py). Admission (API keys, then the rate limit) runs first, before the route is matched,
so an unauthenticated client learns nothing but 401; with neither configured it costs one attribute check."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import cached_property
from time import perf_counter
from types import ModuleType
from typing import TYPE_CHECKING, Any

from modelfn.hooks import Hooks
from modelfn.registry import ModelRegistry
from modelfn.service.auth import ApiKeys
from modelfn.service.dataplane import DataPlane
from modelfn.service.limits import RateLimiter
from modelfn.service.request import Request, Response, error_response, json_response
from modelfn.service.routes import CORE_ROUTES, Match, Route, RouteTable
from modelfn.service.stats import InferenceStatistics
from modelfn.service.traffic import Shadows, TrafficRouter, traffic_report
from modelfn.store.layout import check_name
from modelfn.telemetry.failures import FailedRequests

if TYPE_CHECKING:  # servers only: the Lambda path never imports asyncio or the batcher (cold start)
    from modelfn.batching.batcher import Batcher
    from modelfn.service.runner import Runner

log = logging.getLogger("modelfn")

Action = Callable[[Request, Mapping[str, str]], Response | Awaitable[Response]]
ActionFactory = Callable[["Service"], Action]
Observer = Callable[[Request, Response, float], None]
"""Called after every answered request with the request, its response (`route`, `model`, `version`, and on an
inference's 200 the `record` of what ran) and the seconds the service spent on it: statistics, metrics, capture.
An observer must be quick (an append, a counter); one that raises is logged and never changes the response."""
"""Builds an action of a route added to the core table (the container's /ping, /invocations), given the service."""


def _triton() -> ModuleType:
    """Triton's extensions (service/triton.py), imported by their first request: no cold start needs them."""
    from modelfn.service import triton

    return triton


class Service:
    def __init__(
        self,
        registry: ModelRegistry,
        default_model: str | None = None,
        hooks: Mapping[str, Hooks] | None = None,
        batcher: Batcher | None = None,
        routes: tuple[Route, ...] = CORE_ROUTES,
        actions: Mapping[str, ActionFactory] | None = None,
        title: str = "modelfn",
        traffic: TrafficRouter | None = None,
    ) -> None:
        """`traffic`: a router already holding what it read (a Lambda function reads traffic.json at init)."""
        self.registry = registry
        self.default_model = default_model
        self.plane = DataPlane(registry, default_model, hooks, traffic)
        self.batcher = batcher
        self.shadows = Shadows(registry)
        self.table = RouteTable(routes)
        self.title = title
        settings = registry.settings
        self.keys = ApiKeys.parse(settings.api_keys.get_secret_value() if settings.api_keys else None)
        self.rates = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.guarded = self.keys is not None or self.rates is not None
        self.actions: dict[str, Action] = {**self._builtin(), **{k: make(self) for k, make in (actions or {}).items()}}
        self.observers: list[Observer] = []
        self.observers.append(InferenceStatistics(self.table, self.plane))
        self.observers.append(FailedRequests(self.table, self.plane))  # one structured log line per failure
        missing = {r.action for r in routes if r.codec is None} - set(self.actions)
        if missing:
            raise ValueError(f"routes without an action: {sorted(missing)}")

    def _builtin(self) -> dict[str, Action]:
        plane = self.plane
        return {
            "server_metadata": lambda r, p: plane.server_metadata(),
            "live": lambda r, p: json_response({"live": True}),
            "ready": lambda r, p: plane.ready(),
            "v2_model": lambda r, p: plane.v2_model(*plane.model_version(p, tf=False)),
            "v2_model_ready": lambda r, p: plane.v2_model_ready(*plane.model_version(p, tf=False)),
            "tf_status": lambda r, p: plane.tf_status(*plane.model_version(p, tf=True)),
            "tf_metadata": lambda r, p: plane.tf_metadata(*plane.model_version(p, tf=True)),
            "health": lambda r, p: plane.health({"batching": self.batcher.snapshot()} if self.batcher else None),
            "traffic": lambda r, p: json_response(
                traffic_report(self.registry, plane.traffic, self.shadows, check_name(p["name"]))
            ),
            "openapi": lambda r, p: Response(200, self.openapi_document, {"content-type": "application/json"}),
            "docs": lambda r, p: self.docs_page(r),
            "triton_config": lambda r, p: _triton().config_response(plane, p),
            "triton_index": lambda r, p: _triton().repository_index(plane, r),
            "triton_stats": lambda r, p: _triton().statistics_response(
                InferenceStatistics.of(self.observers), plane, p
            ),
        }

    # ---- admission ---------------------------------------------------------------------------------------
    def admit(self, request: Request) -> None:
        """401 without a valid key, 429 over the rate, for every path but the public ones. Servers call it from
        the headers alone, before reading the body (then `handle_async(..., admitted=True)`), so a client without
        a key cannot make the server buffer a body. Without keys the rate is per client address (one shared
        bucket when the transport does not know it)."""
        if request.path in self.table.public:
            return
        who = self.keys.identify(request.headers) if self.keys is not None else f"addr:{request.client or ''}"
        if self.rates is not None:
            self.rates.take(who)

    # ---- dispatch ----------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        started = perf_counter()
        match: Match | None = None
        try:
            if self.guarded:
                self.admit(request)
            match = self.table.match(request.method, request.path)
            route = match.route
            if route.codec is not None:
                target = self.plane.target(route.codec, match.params, request)
                assert target is not None
                response = self.plane.infer(route.codec, target, request)
                if target.shadow is not None and response.record is not None:
                    self.shadows.run(target.name, target.shadow, response.record)  # Lambda: after the answer is built
            else:
                answer = self.actions[route.action](request, match.params)
                if inspect.isawaitable(answer):
                    raise TypeError(f"{route.template} answers only on a server's event loop")
                response = answer
        except Exception as e:
            response = error_response(e)
        return self._observed(request, self._tagged(response, match), started)

    async def handle_async(self, request: Request, admitted: bool = False) -> Response:
        """`admitted`: the caller already ran `admit` for this request (the ASGI adapter, from the headers; SageMaker
        /invocations for the route it runs inside an admitted request, which is not charged twice)."""
        started = perf_counter()
        match: Match | None = None
        try:
            if self.guarded and not admitted:
                self.admit(request)
            match = self.table.match(request.method, request.path)
            response = await self._dispatch_async(match, request)
        except Exception as e:
            response = error_response(e)
        return self._observed(request, self._tagged(response, match), started)

    @cached_property
    def runner(self) -> Runner:
        from modelfn.service.runner import Runner

        return Runner(self.plane, self.batcher)

    async def _dispatch_async(self, match: Match, request: Request) -> Response:
        import asyncio

        from modelfn.service.runner import in_thread

        route = match.route
        if route.codec is not None:
            target = self.plane.target(route.codec, match.params, request, cached_only=True)
            if target is None:
                target = await in_thread(self.plane.target, route.codec, match.params, request)
            assert target is not None
            response = await self.runner.infer(route.codec, target, request)
            if target.shadow is not None and response.record is not None and self.shadows.claim(target.name):
                # off the response path: the answer goes out while a worker thread scores the shadow
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, self.shadows.run, target.name, target.shadow, response.record, True)
            return response
        action = self.actions[route.action]
        answer = await in_thread(action, request, match.params) if route.blocking else action(request, match.params)
        return await answer if inspect.isawaitable(answer) else answer

    async def infer_async(self, route: Route, params: Mapping[str, str], request: Request, parsed: Any) -> Response:
        """An inference route run on a body the caller already inflated and parsed (SageMaker /invocations)."""
        from modelfn.service.runner import in_thread

        try:
            assert route.codec is not None
            target = await in_thread(self.plane.target, route.codec, params, request)
            assert target is not None
            response = await self.runner.infer(route.codec, target, request, parsed)
        except Exception as e:
            response = error_response(e)
        return self._tagged(response, Match(route, dict(params)))

    def _observed(self, request: Request, response: Response, started: float) -> Response:
        if self.observers:
            seconds = perf_counter() - started
            for observe in self.observers:
                try:
                    observe(request, response, seconds)
                except Exception:
                    log.exception("observer %r failed; the response is unchanged", observe)
        return response

    @staticmethod
    def _tagged(response: Response, match: Match | None) -> Response:
        """The matched route's template, unless an inner route already answered (SageMaker /invocations runs
        one: metrics then show the route that ran)."""
        if response.route is None and match is not None:
            response.route = match.route.template
        return response

    # ---- documentation -----------------------------------------------------------------------------------
    @cached_property
    def openapi_document(self) -> bytes:
        """Generated from the route table on first request (FastAPI is imported only then)."""
        from modelfn.http.openapi import openapi_document

        return openapi_document(self)

    def docs_page(self, request: Request) -> Response:
        from modelfn.http.openapi import docs_html

        return Response(200, docs_html(self.title), {"content-type": "text/html; charset=utf-8"})
