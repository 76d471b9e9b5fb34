"""The Tracer is built only where X-Ray can record; Logger and Metrics always wrap the handler."""

from __future__ import annotations

import pytest

from modelfn.observability import Observability, tracing_enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "fn"}, True),
        ({"AWS_LAMBDA_FUNCTION_NAME": "fn", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "fn", "AWS_SAM_LOCAL": "true"}, False),
    ],
)
def test_tracing_only_inside_lambda(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool) -> None:
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing_enabled() is expected
    obs = Observability.for_model("m")
    assert (obs.tracer is not None) is expected


def test_wrapped_handler_runs_without_a_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    obs = Observability.for_model("m")
    from modelfn_tools.dev_batch import LocalContext

    handler = obs.wrap(lambda event, context: {"echo": event["x"]}, "http")
    assert handler({"x": 1}, LocalContext("m")) == {"echo": 1}
    assert handler.__name__ == "http_handler"
