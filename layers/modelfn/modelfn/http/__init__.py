"""The HTTP edge: one FastAPI app for Lambda (via Mangum), `modelfn serve` and the GPU container alike."""

from modelfn.http.app import create_app

__all__ = ["create_app"]
