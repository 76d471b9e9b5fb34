"""The inference fast path, transport-neutral: v2 infer, TF Serving :predict and /predict from (method, path,
query, headers, body) straight to (status, body, headers), without a web framework in between.

The Lambda handler (handlers/fast.py) and the server's ASGI middleware (http/fast_asgi.py) both put it in front of
the FastAPI app, which answers everything else (metadata, readiness, docs, OpenAPI, unknown routes) and is built
only when first needed. Both share the protocol modules with the app and answer alike (the parity tests compare
the Lambda path with `modelfn serve`)."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError, ModelNotFound, PayloadTooLarge
from modelfn.hooks import Hooks
from modelfn.model.loaded import LoadedModel
from modelfn.protocols import plain, tfserving, v2
from modelfn.registry import ModelRegistry

log = logging.getLogger("modelfn")
JSON = "application/json"
Answer = tuple[int, bytes, dict[str, str]]
Handler = Callable[[bytes], tuple[bytes, dict[str, str]]]

V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
TF_PREDICT = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?:predict$"
)


INLINE_BYTES = 256 * 1024
"""Requests up to this size for a loaded model run on an event loop (tens of microseconds); larger ones go to a
worker thread."""


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes (MODELFN_MAX_BODY_BYTES)")


def error_answer(e: Exception) -> Answer:
    """The `{"error": ...}` answer the app's exception handlers give for the same exception."""
    if isinstance(e, ModelfnError):
        if e.status >= 500:
            log.warning("%s", e.message)
        return e.status, jsonio.dumps({"error": e.message}), {"content-type": JSON}
    log.exception("unhandled error")
    return 500, jsonio.dumps({"error": f"internal error: {type(e).__name__}: {e}"}), {"content-type": JSON}


@dataclass(frozen=True)
class Route:
    name: str | None  # None: /predict on a server of several models, without ?model=
    version: str | None
    run: Handler
    template: str  # the app's route path, for metrics labels (as Starlette's scope["route"].path)
    params: dict[str, str]


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body under its Content-Encoding (gzip or deflate, as tritonclient offers), inflated only up to `limit`
    bytes: a small compressed body cannot expand past the size limit in memory."""
    encoding = encoding.lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidInput(f"body is not valid {encoding} data: {e}") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    return out


class FastPath:
    def __init__(
        self,
        registry: ModelRegistry,
        default_model: str | None = None,
        hooks: Mapping[str, Hooks] | None = None,
    ) -> None:
        self.registry = registry
        self.default_model = default_model
        self.hooks = dict(hooks or {})
        self.limit = registry.settings.max_body_bytes

    def route(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> Route | None:
        """The route of an inference request, or None for anything else (the app answers it)."""
        if method != "POST":
            return None
        if m := V2_INFER.match(path):
            name, version, header = m["name"], m["version"], headers.get(v2.HEADER.lower())
            template = "/v2/models/{name}" + ("/versions/{version}" if version else "") + "/infer"
            params = {k: v for k, v in m.groupdict().items() if v is not None}
            return Route(name, version, lambda body: self._v2(name, version, header, body), template, params)
        if m := TF_PREDICT.match(path):
            name, number, label = m["name"], m["version"], m["label"]
            where = "/versions/{version}" if number else "/labels/{label}" if label else ""
            params = {k: v for k, v in m.groupdict().items() if v is not None}
            run: Handler = lambda body: self._tf(name, number, label, body)  # noqa: E731
            return Route(name, number or label, run, f"/v1/models/{{name}}{where}:predict", params)
        if path == "/predict":
            named = parse_qs(query).get("model")
            model = named[-1] if named else None
            target = model or self.default_model
            if target is None:  # the only model a server serves, when known without a store round trip
                names = self.registry.cached_model_names()
                target = names[0] if names is not None and len(names) == 1 else None
            version = self.registry.settings.version if target is not None and target == self.default_model else None
            return Route(target, version, lambda body: self._plain(model, body), "/predict", {})
        return None

    def answer(self, route: Route, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            content, out = route.run(self.decode_body(body, headers))
            return 200, content, out
        except Exception as e:
            return error_answer(e)

    def is_quick(self, route: Route, body_size: int) -> bool:
        """Whether the answer takes microseconds, so an event loop may run it inline: a small body for a model
        that is already loaded (a load, or a big tensor, goes to a worker thread instead)."""
        if body_size > INLINE_BYTES or route.name is None:
            return False
        try:
            return self.registry.peek(route.name, self.registry.resolve(route.name, route.version)) is not None
        except ModelfnError:
            return True  # answered at once, with the error

    def decode_body(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        if len(body) > self.limit:
            raise too_large(self.limit)
        return decompress(body, headers.get("content-encoding", "identity"), self.limit)

    def _v2(self, name: str, version: str | None, header: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
        model = self.registry.get(name, version)
        try:
            header_len = int(header) if header is not None else None
        except ValueError as e:
            raise InvalidInput(f"{v2.HEADER} must be an integer, got {header!r}") from e
        req = v2.decode_request(body, header_len, model)
        results = model.predict(req.inputs, req.outputs or None)
        content, json_len = v2.encode_response(model, results, req.binary_outputs, req.id)
        if json_len is None:
            return content, {"content-type": JSON}
        return content, {"content-type": "application/octet-stream", v2.HEADER.lower(): str(json_len)}

    def _tf(self, name: str, number: str | None, label: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
        if number is not None and not number.isdigit():  # /versions/N takes a number; labels go by /labels/L
            raise InvalidInput(f"version must be a positive integer, got {number!r}")
        version = number or label
        model = self.registry.get(name, version)
        req = tfserving.decode_request(body, model)
        answer = tfserving.encode_response(model.predict(req.inputs), req.row_format)
        return jsonio.dumps(answer), {"content-type": JSON}

    def _plain(self, name: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
        target = name or self.default_model or self.only_model()
        version = self.registry.settings.version if target == self.default_model else None
        model: LoadedModel = self.registry.get(target, version)
        hooks = self.hooks.get(target, Hooks())
        inputs = plain.decode_request(body, model, hooks.preprocess)
        answer = plain.encode_response(model.predict(inputs), model, hooks.postprocess)
        return jsonio.dumps(answer), {"content-type": JSON}

    def only_model(self) -> str:
        """/predict without a model name on a server of several models names none: say how to name one."""
        names = self.registry.model_names()
        if len(names) != 1:
            raise ModelNotFound(
                f"/predict needs one model, this server has {len(names)}: add ?model=NAME or use /v2/models/NAME/infer"
            )
        return names[0]
