"""Lambda's per-request metric: `Requests` (EMF) under the catalogue's labels (model, version, route, status
class), as servers count `modelfn_requests` in Prometheus. It is what `modelfn rollout --max-error-rate` reads: the
new version's share of 5xx answers. Failed requests are attributed to the version they would have run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelfn.service.request import Request, Response
from modelfn.telemetry.names import REQUESTS, UNMATCHED, status_class
from modelfn.telemetry.observers import Attribution

if TYPE_CHECKING:
    from modelfn.observability import Observability
    from modelfn.service.dispatch import Service


class LambdaRequests:
    """A Service observer (Lambda has no /invocations, so no response is reported twice). Kept lean: it runs on
    every warm invoke."""

    def __init__(self, service: Service, obs: Observability) -> None:
        self.add = obs.metrics.add_keyed
        self.name = REQUESTS.emf_name
        self.attribution = Attribution(service.table, service.plane)

    def __call__(self, request: Request, response: Response, seconds: float) -> None:
        if response.status < 400:
            model, version = response.model, response.version
        else:
            model, version = self.attribution(request, response)
        dimensions = {
            "model": model or "",
            "version": "" if version is None else str(version),
            "route": response.route or UNMATCHED,
            "status_class": status_class(response.status),
        }
        self.add(dimensions, self.name, "Count", 1.0)
