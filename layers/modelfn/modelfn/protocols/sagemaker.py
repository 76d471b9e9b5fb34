"""SageMaker's CustomAttributes as modelfn uses them between the Lambda proxy (handlers/sagemaker_proxy.py) and
the container's /invocations (http/container.py): `key=value` pairs separated by `;`, values percent-encoded.

InvokeEndpoint hands the container no header of the caller's but this one (`X-Amzn-SageMaker-Custom-Attributes`,
up to 1024 visible ASCII characters), and returns the container's response header of the same name as the
response's CustomAttributes."""

from __future__ import annotations

from urllib.parse import quote, unquote

HEADER = "x-amzn-sagemaker-custom-attributes"
PATH = "modelfn-path"
"""The route the invocation stands for: `METHOD /path?query`."""
BINARY_LENGTH = "inference-header-content-length"
"""The v2 binary extension's JSON length, request and response (the Inference-Header-Content-Length header)."""
FORWARDED_HEADERS = (BINARY_LENGTH, "content-encoding")
"""Request headers that travel as attributes and become headers again in the container."""


def parse_attributes(value: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (value or "").split(";"):
        key, sep, val = part.strip().partition("=")
        if sep and key:
            out[key.strip().lower()] = unquote(val.strip())
    return out


def format_attributes(attrs: dict[str, str]) -> str:
    return "; ".join(f"{k}={quote(v, safe='/:')}" for k, v in attrs.items())
