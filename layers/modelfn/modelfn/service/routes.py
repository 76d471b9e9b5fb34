"""The one route table: every route modelfn serves, as data. The service dispatches from it, the Lambda and ASGI
adapters reach it through the service, and the OpenAPI document (http/openapi.py) is generated from it, so a
route is defined exactly once and the document describes exactly what is served."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from modelfn.errors import ModelfnError

Codec = Literal["v2", "tf", "plain"]
_PARAM = re.compile(r"\{(\w+)\}")


class MethodNotAllowed(ModelfnError):
    status = 405


class RouteNotFound(ModelfnError):
    status = 404


@dataclass(frozen=True)
class Route:
    """`action` names the data-plane operation that answers; `codec` marks an inference route and its protocol.
    `blocking`: the action may wait on the store or load a model, so servers run it off the event loop.
    `public`: answered without an API key (health checks and the documentation), see service/auth.py."""

    method: str
    template: str
    action: str
    tags: tuple[str, ...]
    summary: str
    codec: Codec | None = None
    blocking: bool = False
    documented: bool = True
    public: bool = False
    query: tuple[str, ...] = ()
    """Query parameters the route reads (documented in OpenAPI)."""

    def __post_init__(self) -> None:
        if self.public and self.params:
            raise ValueError(f"{self.template}: a public route must be a fixed path (admission compares paths)")

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """Compiled on first use, not when the table is built: a cold start's first request (a fixed path such as
        /predict, matched by dictionary) compiles none of the table's thirty patterns."""
        # A parameter is one path segment without ':' (TF Serving's `:predict` follows the model name).
        parts = _PARAM.split(self.template)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/:]+)" for i, p in enumerate(parts))
        return re.compile(f"^{regex}$")

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.template)


V2 = "/v2/models/{name}"
V2V = "/v2/models/{name}/versions/{version}"
TF = "/v1/models/{name}"
TFV = "/v1/models/{name}/versions/{version}"
TFL = "/v1/models/{name}/labels/{label}"

CORE_ROUTES: tuple[Route, ...] = (
    # Open Inference Protocol (KServe v2)
    Route("GET", "/v2", "server_metadata", ("v2",), "Server metadata"),
    Route("GET", "/v2/health/live", "live", ("v2",), "Server liveness", public=True),
    Route(
        "GET", "/v2/health/ready", "ready", ("v2",), "Server readiness: the store answers", blocking=True, public=True
    ),
    *(Route("GET", p, "v2_model", ("v2",), "Model metadata", blocking=True) for p in (V2, V2V)),
    *(Route("GET", f"{p}/ready", "v2_model_ready", ("v2",), "Model readiness", blocking=True) for p in (V2, V2V)),
    *(
        Route("POST", f"{p}/infer", "infer", ("v2",), "Inference (JSON tensors or binary tensor data)", codec="v2")
        for p in (V2, V2V)
    ),
    Route(
        "GET",
        f"{V2}/traffic",
        "traffic",
        ("traffic",),
        "Traffic in effect (split, sticky header, shadow) and this process's shadow comparison",
        blocking=True,
    ),
    # Triton's HTTP extensions: model configuration, repository index, inference statistics
    *(
        Route("GET", f"{p}/config", "triton_config", ("triton",), "Model configuration, as Triton's", blocking=True)
        for p in (V2, V2V)
    ),
    Route(
        "POST",
        "/v2/repository/index",
        "triton_index",
        ("triton",),
        "Repository index: every served model version and its state",
        blocking=True,
    ),
    Route("GET", "/v2/models/stats", "triton_stats", ("triton",), "Inference statistics of every model", blocking=True),
    *(
        Route("GET", f"{p}/stats", "triton_stats", ("triton",), "Inference statistics of a model", blocking=True)
        for p in (V2, V2V)
    ),
    # TensorFlow Serving REST
    *(Route("GET", p, "tf_status", ("tfserving",), "Model status", blocking=True) for p in (TF, TFV, TFL)),
    *(Route("GET", f"{p}/metadata", "tf_metadata", ("tfserving",), "Metadata", blocking=True) for p in (TF, TFV, TFL)),
    *(
        Route(
            "POST",
            f"{p}:predict",
            "infer",
            ("tfserving",),
            "Predict (row `instances` or columnar `inputs`)",
            codec="tf",
        )
        for p in (TF, TFV, TFL)
    ),
    # plain
    Route(
        "POST",
        "/predict",
        "infer",
        ("plain",),
        "Predict with the function's own model",
        codec="plain",
        query=("model",),
    ),
    # TorchServe's inference API
    *(
        Route("POST", p, "infer", ("torchserve",), "Predict (the body /predict takes)", codec="plain")
        for p in ("/predictions/{name}", "/predictions/{name}/{version}")
    ),
    # process
    Route("GET", "/health", "health", ("health",), "Process health and the models loaded in it", public=True),
    Route("GET", "/openapi.json", "openapi", ("docs",), "This document", blocking=True, documented=False, public=True),
    Route("GET", "/docs", "docs", ("docs",), "The OpenAPI UI", documented=False, public=True),
)

SERVER_ROUTES: tuple[Route, ...] = (
    Route("GET", "/metrics", "metrics", ("server",), "Prometheus metrics (telemetry/names.py)", documented=False),
    *(
        Route("GET", f"/docs/{asset}", "docs_asset", ("docs",), "The OpenAPI UI's files", documented=False, public=True)
        for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
    ),
)
"""Routes of long-running servers (`modelfn serve`, the container), never of Lambda: /metrics (Lambda emits EMF)
and the OpenAPI UI's assets, served from the `server` extra's swagger-ui-bundle so /docs works offline."""

CONTAINER_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/ping",
        "ping",
        ("container",),
        "SageMaker health check: 200 once the served models are loaded",
        public=True,
    ),
    Route(
        "POST",
        "/invocations",
        "invocations",
        ("container",),
        "SageMaker inference: a v2, TF Serving or {'features'} request, or any route via X-Modelfn-Path",
    ),
)


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: dict[str, str]


class RouteTable:
    """Static paths by dictionary lookup, templated ones by their patterns, in table order."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self.public = frozenset(r.template for r in routes if r.public)
        """Paths answered without an API key, whatever the method (a wrong one is still a 405)."""
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: list[Route] = []
        for r in routes:
            if r.params:
                self._dynamic.append(r)
            else:
                self._static[(r.method, r.template)] = r

    def route(self, method: str, template: str) -> Route:
        """The route of a template, for callers that pick one themselves (SageMaker /invocations)."""
        for r in self.routes:
            if r.method == method and r.template == template:
                return r
        raise KeyError(f"{method} {template}")

    def match(self, method: str, path: str) -> Match:
        """The route and its path parameters; 404 for an unknown path, 405 for a known path's other methods."""
        route = self._static.get((method, path))
        if route is not None:
            return Match(route, {})
        allowed: list[str] = [m for (m, t) in self._static if t == path]
        for r in self._dynamic:
            found = r.pattern.match(path)
            if found is None:
                continue
            if r.method == method:
                return Match(r, found.groupdict())
            allowed.append(r.method)
        if allowed:
            raise MethodNotAllowed(f"{path} takes {' or '.join(sorted(set(allowed)))}, not {method}")
        raise RouteNotFound(f"no route {method} {path}")
