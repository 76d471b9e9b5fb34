"""The Open Inference Protocol's gRPC service on grpcio's asyncio server, answered by the same `Service` as HTTP.

Each call becomes the HTTP-shaped `Request` of its v2 route (ModelInfer: `POST /v2/models/{m}[/versions/{v}]/infer`
with the v2 binary body, translate.py) and goes through `Service.handle_async`: admission (the call's metadata are
its headers: `authorization`, `x-api-key`, a sticky traffic header), routing, value checks, size limits, batching,
the response cache and `Service.observers` are the ones HTTP requests get. A refusal comes back as the gRPC status
of its HTTP status (STATUS), with the error's message and its headers (`www-authenticate`, `retry-after`) as
trailing metadata; so do an answer's headers (`modelfn-version`, `modelfn-cache`), sent with the status rather
than in a send of their own (a fifth less time per small call than as initial metadata, measured).

Requests are parsed here, not by grpcio, so that a malformed message is INVALID_ARGUMENT rather than grpcio's
INTERNAL; a client that goes away mid-call cancels only its own call. Messages are bounded by MODELFN_MAX_BODY_BYTES
(plus room for the envelope), calls in flight by MODELFN_MAX_CONCURRENCY (RESOURCE_EXHAUSTED beyond it).

`run_with_grpc` runs uvicorn and this server on one event loop (`modelfn serve --grpc-port`, the container's
MODELFN_GRPC_PORT): gRPC listens before HTTP does, so the first HTTP answer means both are up, and a stop drains
both with the same grace.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc
from google.protobuf.message import DecodeError, Message

from modelfn import jsonio
from modelfn.adapters.grpc import oip_pb2 as pb
from modelfn.adapters.grpc import tfs_pb2 as tfs
from modelfn.adapters.grpc import tfserving, translate
from modelfn.errors import ModelfnError
from modelfn.service.dispatch import Service
from modelfn.service.request import Request, Response

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("modelfn")

SERVICE = "inference.GRPCInferenceService"
"""The protocol's service name: its methods are `/inference.GRPCInferenceService/<Rpc>` on the wire."""
TF_SERVICE = "tensorflow.serving.PredictionService"
"""TF Serving's, of which `Predict` is served (tfserving.py)."""
ENVELOPE = 64 * 1024
"""Room for a message's own fields above MODELFN_MAX_BODY_BYTES of tensor data."""

Code = grpc.StatusCode
STATUS: dict[int, grpc.StatusCode] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    408: Code.DEADLINE_EXCEEDED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}
"""An HTTP status as gRPC's status code (the mapping gRPC documents for HTTP/gRPC gateways)."""

NOT_FORWARDED = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "te", "host", "user-agent"}
    | {translate.LENGTH_HEADER}
)
"""Metadata that describe the gRPC transport, not the request: never passed to the service as headers (a client's
`content-encoding: gzip` would otherwise make the service inflate a body that is not compressed)."""


class Refusal(Exception):
    """A call answered with an error: its gRPC code, message and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.metadata = metadata


def code_of(status: int) -> grpc.StatusCode:
    return STATUS.get(status, Code.INTERNAL if status >= 500 else Code.INVALID_ARGUMENT)


def refusal(response: Response) -> Refusal:
    """The service's error answer (`{"error": ...}` and its headers) as a gRPC error."""
    try:
        message = str(jsonio.loads(response.body, "error answer")["error"])
    except (ModelfnError, KeyError, TypeError):
        message = f"HTTP status {response.status}"
    return Refusal(code_of(response.status), message, passed_headers(response.headers))


def passed_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """An answer's headers that mean something to a gRPC client (gRPC metadata keys are lower case)."""
    return tuple((k.lower(), v) for k, v in headers.items() if k.lower() not in NOT_FORWARDED)


def client_headers(metadata: Any) -> dict[str, str]:
    """A call's metadata as the request's headers: text values only (`-bin` keys are binary), transport keys left
    out."""
    headers: dict[str, str] = {}
    for key, value in metadata or ():
        name = key.lower()
        if isinstance(value, str) and name not in NOT_FORWARDED and not name.startswith((":", "grpc-")):
            headers[name] = value
    return headers


def peer_host(peer: str) -> str | None:
    """The client's address from grpcio's peer string (`ipv4:10.0.0.1:5000`, `ipv6:%5B::1%5D:5000`): rate limits
    without API keys are per address, as on HTTP."""
    kind, _, rest = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    return rest.rpartition(":")[0].strip("[]") or None


Answer = Callable[[Any, Any], Awaitable[Message]]


class InferenceServicer:
    """The six calls of the protocol that modelfn serves, and TF Serving's Predict, each one request to the
    service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def call(self, context: Any, method: str, path: str, body: bytes = b"", **headers: str) -> Response:
        metadata = client_headers(context.invocation_metadata())
        metadata.update(headers)
        return await self.service.handle_async(Request(method, path, "", metadata, body, peer_host(context.peer())))

    async def ok(self, context: Any, method: str, path: str, body: bytes = b"", **headers: str) -> Response:
        """The service's 200 answer; any other is raised as the call's error."""
        response = await self.call(context, method, path, body, **headers)
        if response.status != 200:
            raise refusal(response)
        context.set_trailing_metadata(passed_headers(response.headers))  # sent with the status: no extra send
        return response

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        response = await self.call(context, "GET", "/v2/health/live")
        return pb.ServerLiveResponse(live=response.status == 200)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        response = await self.call(context, "GET", "/v2/health/ready")
        return pb.ServerReadyResponse(ready=response.status == 200)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        response = await self.ok(context, "GET", "/v2")
        return translate.server_metadata(jsonio.loads(response.body))

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Ready or not, as Triton answers: an unknown model, or a version that cannot be served, is not ready
        (HTTP says 404 / 503); any other refusal (a bad name, a missing key) is the call's error."""
        response = await self.call(context, "GET", f"{translate.model_path(request.name, request.version)}/ready")
        if response.status in (404, 503):
            return pb.ModelReadyResponse(ready=False)
        if response.status != 200:
            raise refusal(response)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        response = await self.ok(context, "GET", translate.model_path(request.name, request.version))
        return translate.model_metadata(jsonio.loads(response.body))

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        path = translate.model_path(request.model_name, request.model_version)
        body, length = translate.infer_body(request, self.service.plane.limits)
        response = await self.ok(context, "POST", f"{path}/infer", body, **{translate.LENGTH_HEADER: str(length)})
        return translate.infer_response(response)

    async def predict(self, request: tfs.PredictRequest, context: Any) -> tfs.PredictResponse:
        """TF Serving's Predict: the same v2 request as ModelInfer (tfserving.py)."""
        path, inputs, outputs = tfserving.predict_request(request, self.service.plane.limits)
        body, length = translate.v2_body(inputs, outputs, "")
        response = await self.ok(context, "POST", f"{path}/infer", body, **{translate.LENGTH_HEADER: str(length)})
        return tfserving.predict_response(translate.infer_response(response))

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        rpcs: dict[str, tuple[type[Message], Answer]] = {
            "ServerLive": (pb.ServerLiveRequest, self.server_live),
            "ServerReady": (pb.ServerReadyRequest, self.server_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, self.server_metadata),
            "ModelReady": (pb.ModelReadyRequest, self.model_ready),
            "ModelMetadata": (pb.ModelMetadataRequest, self.model_metadata),
            "ModelInfer": (pb.ModelInferRequest, self.model_infer),
        }
        predict = unary("Predict", tfs.PredictRequest, self.predict)
        return (
            grpc.method_handlers_generic_handler(
                SERVICE, {name: grpc.unary_unary_rpc_method_handler(unary(name, *rpc)) for name, rpc in rpcs.items()}
            ),
            grpc.method_handlers_generic_handler(TF_SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)}),
        )


def unary(name: str, message: type[Message], answer: Answer) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """A call's handler on raw bytes: parse, answer, serialize; every failure becomes a status, never a crash."""

    async def handle(raw: bytes, context: Any) -> bytes:
        try:
            request = message.FromString(raw)
            answered: bytes = (await answer(request, context)).SerializeToString()
            return answered
        except DecodeError as e:
            failure = Refusal(Code.INVALID_ARGUMENT, f"malformed {name} request: {e}")
        except Refusal as e:
            failure = e
        except ModelfnError as e:
            failure = Refusal(code_of(e.status), e.message)
        except Exception as e:  # the service answers its own errors: this is a bug here, said without details
            log.exception("gRPC %s failed", name)
            failure = Refusal(Code.INTERNAL, f"internal error ({type(e).__name__})")
        await context.abort(failure.code, failure.message, failure.metadata)
        raise AssertionError("abort returned")  # grpc.aio's abort always raises

    return handle


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The protocol's gRPC server for one `Service`, on the running event loop."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.server: Any = None

    async def start(self) -> int:
        """Listen and serve; the port bound (useful with port 0). RuntimeError when the address cannot be bound."""
        settings = self.service.registry.settings
        server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.max_concurrency,
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes + ENVELOPE),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port another server holds is an error, not a shared port
            ],
        )
        server.add_generic_rpc_handlers(InferenceServicer(self.service).handlers())
        try:
            self.port = server.add_insecure_port(address(self.host, self.port))
        except RuntimeError as e:
            raise RuntimeError(f"cannot listen for gRPC on {address(self.host, self.port)}: {e}") from e
        await server.start()
        self.server = server
        return self.port

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let those in flight finish for up to `grace` seconds, then cancel the rest."""
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None


class GrpcThread:
    """The gRPC server on an event loop of its own in a daemon thread, for a caller without a running loop (tests,
    tools)."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        self.server = GrpcServer(service, host, port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="modelfn-grpc", daemon=True)

    def start(self) -> int:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result()

    def stop(self, grace: float | None = None) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


POLL_SECONDS = 0.1
"""How often the joint run looks whether uvicorn began to stop (uvicorn's own main loop ticks as often)."""


def run_with_grpc(server: uvicorn.Server, grpc_server: GrpcServer) -> bool:
    """Run uvicorn's `server` and `grpc_server` on one event loop (uvicorn's choice of loop) until a signal stops
    them; False when either could not listen. gRPC listens first, so the first HTTP answer means both are up; when
    uvicorn begins its graceful shutdown, gRPC begins its own with the same grace, both draining at once."""
    previous = {sig: signal.signal(sig, _stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            return runner.run(_serve_both(server, grpc_server))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopping(sig: int, _: FrameType | None) -> None:
    """uvicorn takes SIGTERM/SIGINT while it serves and raises the signal again once it has stopped: with this
    handler in place, that second delivery ends nothing while gRPC may still be draining."""
    log.info("received %s: stopped", signal.Signals(sig).name)


async def _serve_both(server: uvicorn.Server, grpc_server: GrpcServer) -> bool:
    try:
        port = await grpc_server.start()
    except RuntimeError as e:
        log.error("%s", e)
        return False
    log.info("gRPC (Open Inference Protocol) on %s", address(grpc_server.host, port))
    serving = asyncio.ensure_future(server.serve())
    try:
        while not (server.should_exit or serving.done()):
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await asyncio.gather(serving, grpc_server.stop(server.config.timeout_graceful_shutdown))
    return bool(server.started)
