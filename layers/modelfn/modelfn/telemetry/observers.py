"""What the service's observers share: each response seen once, and a failed request attributed to the model
version it would have run (found in memory only), so error metrics and failure logs name it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from modelfn.errors import ModelfnError
from modelfn.service.request import Request, Response

if TYPE_CHECKING:
    from modelfn.service.dataplane import DataPlane
    from modelfn.service.routes import Route, RouteTable


class ResponseObserver(ABC):
    """A Service observer that sees each response once. SageMaker's /invocations running an explicit route reports
    one response twice (as the inner route's, then as /invocations'): the second report is ignored."""

    _last: Response | None = None

    def __call__(self, request: Request, response: Response, seconds: float) -> None:
        if response is self._last:
            return
        self._last = response
        self.observe(request, response, seconds)

    @abstractmethod
    def observe(self, request: Request, response: Response, seconds: float) -> None:
        """One answered request (see Service.observers): quick, and never raising."""


class Attribution:
    """The model and version a request ran, or for a failed inference the ones it would have run: its route's
    target resolved from memory (no I/O, never waiting on the store), and only a version loaded in this process,
    so what is returned is a name the registry vouches for, never raw client input."""

    def __init__(self, table: RouteTable, plane: DataPlane) -> None:
        self.plane = plane
        self._inference: dict[str, Route] = {r.template: r for r in table.routes if r.codec is not None}

    def __call__(self, request: Request, response: Response) -> tuple[str | None, int | None]:
        if response.model is not None or response.status < 400:
            return response.model, response.version
        route = self._inference.get(response.route or "")
        found = route.pattern.match(request.path) if route is not None else None
        if route is None or route.codec is None or found is None:  # not an inference, or /invocations' inner route
            return None, None
        try:
            target = self.plane.target(route.codec, found.groupdict(), request, cached_only=True)
        except ModelfnError:
            return None, None
        model = None if target is None else self.plane.registry.lookup(target.name, target.version)
        return (model.name, model.version) if model is not None else (None, None)
