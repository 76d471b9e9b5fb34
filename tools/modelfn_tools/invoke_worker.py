"""The process `modelfn invoke` starts for one invocation: `python -m modelfn_tools.invoke_worker JOB.json RESULT.json`.

It plays the Lambda Python runtime for a single cold invoke: imports the handler module (timed: the init phase),
builds a context object like Lambda's, calls the handler on the event (timed, limited by the job's timeout), and
writes {"result", "error", "init_ms", "duration_ms", "max_memory_mb"} to RESULT.json. The handler's own stdout and
stderr stay untouched (the parent shows them as logs). Exit status: 0 on success, 1 when the function failed.

Standard library only, so that nothing but the function's own imports counts towards the init duration.
"""

from __future__ import annotations

import decimal
import importlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any


class LambdaContext:
    """What the Lambda Python runtime passes as `context` (awslambdaric's LambdaContext, same attribute types)."""

    def __init__(self, request_id: str, deadline_ms: int | None, invoked_function_arn: str) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        # A string on Lambda too (it is read from AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.invoked_function_arn = invoked_function_arn
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{self.function_name}")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        if self._deadline_ms is None:
            return 900_000  # no limit given: Lambda's maximum
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, msg: str) -> None:
        sys.stdout.write(msg)
        sys.stdout.flush()

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r}, "
            f"memory_limit_in_mb={self.memory_limit_in_mb!r}, invoked_function_arn={self.invoked_function_arn!r})"
        )


def _json_default(obj: Any) -> Any:
    # The Lambda Python runtime serializes Decimal (DynamoDB numbers) as its string form.
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def _user_frames(exc: BaseException) -> list[str]:
    """The stack trace Lambda shows: the function's frames, without this worker's or importlib's."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename != __file__ and not f.filename.startswith(("<frozen importlib", _IMPORTLIB_DIR))
    ]
    return traceback.format_list(frames)


def error_object(exc: BaseException, request_id: str, error_type: str | None = None, message: str | None = None) -> Any:
    return {
        "errorMessage": str(exc) if message is None else message,
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": _user_frames(exc),
    }


def max_memory_mb() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    per_mb = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return -(-peak // per_mb)


class _Reporter:
    """Writes RESULT.json exactly once, whoever comes first: the handler returning or the timeout watchdog."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.done = False

    def write(self, result: Any, error: bool, init_ms: float, duration_ms: float) -> bool:
        with self.lock:
            if self.done:
                return False
            self.done = True
            try:
                body = json.dumps(
                    {
                        "result": result,
                        "error": error,
                        "init_ms": init_ms,
                        "duration_ms": duration_ms,
                        "max_memory_mb": max_memory_mb(),
                    },
                    default=_json_default,
                )
            except (TypeError, ValueError) as e:
                result = {"errorMessage": f"Unable to marshal response: {e}", "errorType": "Runtime.MarshalError"}
                body = json.dumps(
                    {
                        "result": result,
                        "error": True,
                        "init_ms": init_ms,
                        "duration_ms": duration_ms,
                        "max_memory_mb": max_memory_mb(),
                    }
                )
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(body, encoding="utf-8")
            tmp.replace(self.path)
            return True


def _import_handler(module_name: str, attribute: str, request_id: str) -> tuple[Any, Any]:
    """(handler, None) or (None, Lambda's init error object)."""
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as e:
        return None, error_object(
            e, request_id, "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}"
        )
    except ImportError as e:
        return None, error_object(
            e, request_id, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}"
        )
    except SystemExit as e:
        return None, error_object(
            e, request_id, "Runtime.ExitError", f"Runtime exited with error: exit status {e.code}"
        )
    except Exception as e:
        return None, error_object(e, request_id)
    handler = getattr(module, attribute, None)
    if handler is None or not callable(handler):
        return None, {
            "errorMessage": f"Handler '{attribute}' missing on module '{module_name}'",
            "errorType": "Runtime.HandlerNotFound",
            "requestId": request_id,
            "stackTrace": [],
        }
    return handler, None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m modelfn_tools.invoke_worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    reporter = _Reporter(Path(args[1]))
    request_id: str = job["request_id"]
    timeout: float | None = job.get("timeout")

    # Init phase: the handler module's import (where a modelfn function builds its ModelFunction and loads its model).
    t0 = time.perf_counter()
    handler, init_error = _import_handler(job["module"], job["attribute"], request_id)
    init_ms = (time.perf_counter() - t0) * 1000.0
    if init_error is not None:
        reporter.write(init_error, True, init_ms, 0.0)
        return 1

    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    arn = f"arn:aws:lambda:{job.get('region', 'us-east-1')}:{job.get('account_id', '123456789012')}:function:{name}"
    deadline_ms = None if timeout is None else int(time.time() * 1000 + timeout * 1000)
    context = LambdaContext(request_id, deadline_ms, arn)

    t1 = time.perf_counter()
    if timeout is not None:

        def timed_out() -> None:
            elapsed = (time.perf_counter() - t1) * 1000.0
            message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
            if reporter.write({"errorMessage": message, "errorType": "Sandbox.Timedout"}, True, init_ms, elapsed):
                sys.stdout.flush()
                os._exit(1)

        watchdog = threading.Timer(timeout, timed_out)
        watchdog.daemon = True
        watchdog.start()
    try:
        result, error = handler(job.get("event"), context), False
    except SystemExit as e:
        result = error_object(e, request_id, "Runtime.ExitError", f"Runtime exited with error: exit status {e.code}")
        error = True
    except Exception as e:
        result, error = error_object(e, request_id), True
    duration_ms = (time.perf_counter() - t1) * 1000.0
    if not reporter.write(result, error, init_ms, duration_ms):  # the watchdog got there first
        time.sleep(60)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
