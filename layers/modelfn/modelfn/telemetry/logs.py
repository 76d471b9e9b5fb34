"""Structured logs on Lambda: the `modelfn` logger's records as one JSON object per line, with the fields
Powertools' Logger writes (level, location, message, timestamp, service, cold_start, function_name,
function_memory_size, function_arn, function_request_id, xray_trace_id) and a record's `extra` fields, without
importing Powertools on the cold path. Its level follows POWERTOOLS_LOG_LEVEL, else AWS_LAMBDA_LOG_LEVEL, else
INFO, so deployments configured for Powertools keep working."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from modelfn import jsonio

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class LambdaContextFields:
    """The current invoke's context, as log fields; one invoke at a time per Lambda environment."""

    def __init__(self, service: str) -> None:
        self.fields: dict[str, Any] = {"service": service, "cold_start": True}
        self._cold = True

    def begin(self, context: Any) -> None:
        fields = self.fields
        fields["cold_start"] = self._cold
        self._cold = False
        fields["function_name"] = getattr(context, "function_name", None)
        fields["function_memory_size"] = getattr(context, "memory_limit_in_mb", None)
        fields["function_arn"] = getattr(context, "invoked_function_arn", None)
        fields["function_request_id"] = getattr(context, "aws_request_id", None)
        trace = os.environ.get("_X_AMZN_TRACE_ID", "")
        fields["xray_trace_id"] = trace.split(";", 1)[0].removeprefix("Root=") or None


class JsonFormatter(logging.Formatter):
    def __init__(self, context: LambdaContextFields) -> None:
        super().__init__()
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            **self.context.fields,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
            entry["exception_name"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return jsonio.dumps(entry).decode()


def log_level() -> int:
    name = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "INFO"
    level = logging.getLevelName(name.upper())
    return level if isinstance(level, int) else logging.INFO


def install(service: str, logger_name: str = "modelfn") -> LambdaContextFields:
    """JSON lines for `logger_name` (once per process: a second function in the same process shares them). Inside
    Lambda the records stop there (the runtime's own root handler would print them a second time, as text);
    elsewhere they also propagate, so local runs and tests see them as usual."""
    logger = logging.getLogger(logger_name)
    for handler in logger.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return handler.formatter.context
    context = LambdaContextFields(service)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(context))
    logger.addHandler(handler)
    logger.setLevel(log_level())
    logger.propagate = not os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    return context
