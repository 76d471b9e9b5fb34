"""The HTTP server side: the ASGI app of the service (`create_app`), its OpenAPI document and request metrics."""

from modelfn.http.app import create_app

__all__ = ["create_app"]
