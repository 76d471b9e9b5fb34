"""Lambda's per-request metric: `Requests` (EMF) under the catalogue's labels (model, version, route, status
class), as servers count `modelfn_requests` in Prometheus. It is what `modelfn rollout --max-error-rate` reads: the
new version's share of 5xx answers. Failed requests are attributed to the version they would have run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelfn.service.request import Request, Response
from modelfn.telemetry.names import REQUESTS, UNMATCHED, status_class
from modelfn.telemetry.observers import Attribution, ResponseObserver

if TYPE_CHECKING:
    from modelfn.observability import Observability
    from modelfn.service.dispatch import Service


class LambdaRequests(ResponseObserver):
    def __init__(self, service: Service, obs: Observability) -> None:
        self.obs = obs
        self.attribution = Attribution(service.table, service.plane)

    def observe(self, request: Request, response: Response, seconds: float) -> None:
        model, version = self.attribution(request, response)
        dimensions = {
            "model": model or "",
            "version": "" if version is None else str(version),
            "route": response.route or UNMATCHED,
            "status_class": status_class(response.status),
        }
        self.obs.keyed(dimensions, REQUESTS.emf_name, 1)
