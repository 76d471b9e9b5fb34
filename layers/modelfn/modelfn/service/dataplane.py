"""The data plane: what each route does, transport-neutral (as MLServer's DataPlane). Inference is split in
steps — which model and version (`target`), decode (`codec`), predict (the runner), encode — so that servers can
run each step inline or in a worker thread and the batcher can sit between decode and encode; the Lambda path runs
them in a row. Every other action is a plain function of the registry.

The v2 and TF Serving codecs and the response cache are imported where they are first used: a Lambda function's
cold start serving /predict imports neither."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from time import perf_counter
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from modelfn import __version__, jsonio
from modelfn.errors import InvalidInput, ModelNotFound
from modelfn.hooks import Hooks
from modelfn.model.loaded import LoadedModel
from modelfn.protocols import plain
from modelfn.protocols.sizes import SizeLimits
from modelfn.registry import ModelRegistry
from modelfn.registry.loader import number_or_label
from modelfn.service.request import (
    CACHE_HEADER,
    JSON,
    VERSION_HEADER,
    InferenceRecord,
    Request,
    Response,
    json_response,
    request_body,
)
from modelfn.service.routes import Codec
from modelfn.service.traffic import TrafficRouter
from modelfn.store.layout import check_label, check_name

if TYPE_CHECKING:
    from modelfn.service.cache import ResponseCache, Results

Encoded = tuple[bytes, dict[str, str]]
NO_HOOKS = Hooks()


@dataclass(frozen=True, slots=True)
class Target:
    """The model a request runs and the version it asked for (an integer, a label, or None: the default). A
    request that named no version is `routed` by the model's traffic: `version` is then the split's pick (None:
    the default), and `shadow` the target that also scores it, if any."""

    name: str
    version: int | str | None
    routed: bool = False
    shadow: str | None = None


@dataclass(slots=True)
class Decoded:
    """A decoded inference request: the inputs to run, the outputs asked for, and how to encode the results."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None
    encode: Callable[[Mapping[str, np.ndarray]], Encoded]


def parse_version(raw: str | None) -> int | str | None:
    """A path's version: ASCII digits are a version number, anything else must be a valid label (so `%C2%B9`,
    a superscript one, is a 400, not an integer parse error)."""
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit():
        return int(raw)
    return check_label(raw)


def tf_version(version: str | None, label: str | None) -> int | str | None:
    """TF Serving: /versions/N takes a number, /labels/L a label."""
    if version is not None:
        if not (version.isascii() and version.isdigit()):
            raise InvalidInput(f"version must be a positive integer, got {version!r}")
        return int(version)
    return check_label(label) if label is not None else None


def _v2_header_length(headers: Mapping[str, str], header: str) -> int | None:
    raw = headers.get(header.lower())
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise InvalidInput(f"{header} must be a non-negative integer, got {raw!r}")
    return int(raw)


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        default_model: str | None = None,
        hooks: Mapping[str, Hooks] | None = None,
        traffic: TrafficRouter | None = None,
    ) -> None:
        self.registry = registry
        self.default_model = default_model
        self.hooks = dict(hooks or {})
        self.limits = SizeLimits.from_settings(registry.settings)
        self.cache: ResponseCache | None = None
        settings = registry.settings
        if settings.response_cache_mb or settings.response_cache_url:  # else off: its module is not even imported
            from modelfn.service.cache import ResponseCache, cache_key

            self.cache = ResponseCache.from_settings(settings)
            self._cache_key = cache_key
        self.traffic = traffic or TrafficRouter(registry)

    @cached_property
    def _v2(self) -> ModuleType:
        """modelfn.protocols.v2, imported on the first v2 request (then an attribute read, as a global would be)."""
        from modelfn.protocols import v2

        return v2

    @cached_property
    def _tf(self) -> ModuleType:
        """modelfn.protocols.tfserving, imported on the first TF Serving request."""
        from modelfn.protocols import tfserving

        return tfserving

    # ---- inference ---------------------------------------------------------------------------------------
    def target(
        self, codec: Codec, params: Mapping[str, str], request: Request, cached_only: bool = False
    ) -> Target | None:
        """Which model and version an inference request runs. With `cached_only`, None where finding out would
        need the store (/predict without a model name on a server whose model list has expired)."""
        if codec != "plain" or "name" in params:  # TorchServe's /predictions/{name} names it in the path
            name, version = self.model_version(params, tf=codec == "tf")
        else:
            found = (request.query and request.query_param("model")) or self.default_model
            if found is None:
                if cached_only and self.registry.cached_model_names() is None:
                    return None
                found = self.only_model()
            name = found if found == self._valid_default else check_name(found)
            version = self.pinned(found, None)
        if version is not None:
            return Target(name, version)
        return self.routed(name, request, cached_only)

    def routed(self, name: str, request: Request, cached_only: bool) -> Target | None:
        """A request that names no version: the split's pick and the shadow (see service/traffic.py)."""
        known = self.traffic.fresh(name)
        if known is None and cached_only:
            return None
        traffic = known[0] if known is not None else self.traffic.current(name)
        if traffic is None:  # no traffic.json: the default version, nothing drawn
            return Target(name, None, True)
        choice = self.traffic.choose(name, traffic, request.headers)
        return Target(name, number_or_label(choice.target), True, choice.shadow)

    def pinned(self, name: str, version: int | str | None) -> int | str | None:
        """The version asked for; when none, the function's own model runs MODELFN_VERSION (default: stable)."""
        if version is None and name == self.default_model:
            return self._default_version
        return version

    @cached_property
    def _default_version(self) -> int | str | None:
        """MODELFN_VERSION, parsed once (a bad one is refused on every request: an exception is not cached)."""
        return parse_version(self.registry.settings.version)

    @cached_property
    def _valid_default(self) -> str | None:
        """The default model's name once it has passed check_name (None: not yet, or none): /predict's requests
        then skip the check."""
        if self.default_model is None:
            return None
        try:
            return check_name(self.default_model)
        except InvalidInput:
            return None

    def only_model(self) -> str:
        """/predict without a model name: the only model served (from the cached list when there is one)."""
        names = self.registry.cached_model_names()
        if names is None:
            names = self.registry.model_names()
        if len(names) != 1:
            raise ModelNotFound(
                f"/predict needs one model, this server has {len(names)}: add ?model=NAME or use /v2/models/NAME/infer"
            )
        return names[0]

    def model(self, target: Target) -> LoadedModel:
        """From memory when the resolution is fresh (the warm path), else resolved and loaded; a routed request
        whose version cannot serve falls back to the version that last served it (TrafficRouter.model)."""
        model = self.registry.lookup(target.name, target.version)
        if model is not None:
            if target.routed:
                self.traffic.remember(target, model.version)
            return model
        if target.routed:
            return self.traffic.model(target)
        return self.registry.get(target.name, target.version)

    def decode(self, codec: Codec, model: LoadedModel, request: Request, parsed: Any = None) -> Decoded:
        """`parsed`: the body already inflated and parsed as JSON by whoever had to look inside it (SageMaker
        /invocations), so it is not parsed twice."""
        body = request_body(request, self.registry.settings.max_body_bytes) if parsed is None else b""
        headers = request.headers
        if codec == "v2":
            return self._decode_v2(model, body, headers, parsed)
        if codec == "tf":
            tfserving = self._tf
            tf = (
                tfserving.decode_parsed(parsed, model, self.limits)
                if parsed is not None
                else tfserving.decode_request(body, model, self.limits)
            )
            return Decoded(tf.inputs, None, lambda r: (jsonio.dumps(tfserving.encode_response(r, tf.row_format)), {}))
        hooks = self.hooks.get(model.name, NO_HOOKS)
        if parsed is not None:
            inputs = plain.decode_parsed(parsed, model, hooks.preprocess, self.limits)
        else:
            inputs = plain.decode_request(body, model, hooks.preprocess, self.limits)
        return Decoded(inputs, None, lambda r: (jsonio.dumps(plain.encode_response(r, model, hooks.postprocess)), {}))

    def _decode_v2(self, model: LoadedModel, body: bytes, headers: Mapping[str, str], parsed: Any) -> Decoded:
        v2, limits = self._v2, self.limits
        if parsed is not None:
            req = v2.decode_parsed(parsed, memoryview(b""), model, limits)
        else:
            req = v2.decode_request(body, _v2_header_length(headers, v2.HEADER), model, limits)

        def encode(results: Mapping[str, np.ndarray]) -> Encoded:
            content, json_len = v2.encode_response(model, results, req.binary_outputs, req.id)
            if json_len is None:
                return content, {}
            return content, {"content-type": "application/octet-stream", v2.HEADER.lower(): str(json_len)}

        return Decoded(req.inputs, req.outputs or None, encode)

    def cached(self, codec: Codec, model: LoadedModel, decoded: Decoded) -> tuple[bytes | None, Results | None]:
        """The response cache's key and hit for a decoded request: (None, None) with the cache off."""
        if self.cache is None:
            return None, None
        key = self._cache_key(model.name, model.content_id or model.sha256, codec, decoded.outputs, decoded.inputs)
        return key, self.cache.get(model.name, key)

    def predict(
        self, codec: Codec, model: LoadedModel, decoded: Decoded
    ) -> tuple[Results, InferenceRecord, bool | None]:
        """The model's results (from the response cache when it holds them), what ran, and whether it was a
        cache hit (None with the cache off)."""
        key, hit = (None, None) if self.cache is None else self.cached(codec, model, decoded)
        started = perf_counter()
        results = hit if hit is not None else model.predict(decoded.inputs, decoded.outputs)
        record = InferenceRecord(decoded.inputs, results, perf_counter() - started, model.content_id or model.sha256)
        if key is not None and hit is None:
            assert self.cache is not None
            self.cache.put(key, results)
        return results, record, None if key is None else hit is not None

    @staticmethod
    def answer(
        model: LoadedModel, encoded: Encoded, record: InferenceRecord | None = None, cache_hit: bool | None = None
    ) -> Response:
        content, headers = encoded
        out = {"content-type": JSON, **headers, VERSION_HEADER: str(model.version)}
        if cache_hit is not None:
            out[CACHE_HEADER] = "hit" if cache_hit else "miss"
        return Response(200, content, out, model=model.name, version=model.version, record=record)

    def run(self, codec: Codec, model: LoadedModel, request: Request, parsed: Any = None) -> Response:
        """Decode, predict and encode in the calling thread."""
        decoded = self.decode(codec, model, request, parsed)
        results, record, hit = self.predict(codec, model, decoded)
        return self.answer(model, decoded.encode(results), record, hit)

    def infer(self, codec: Codec, target: Target, request: Request, parsed: Any = None) -> Response:
        """The whole inference in the calling thread (Lambda, SQS, worker threads)."""
        return self.run(codec, self.model(target), request, parsed)

    # ---- everything else ---------------------------------------------------------------------------------
    def server_metadata(self) -> Response:
        return json_response({"name": "modelfn", "version": __version__, "extensions": ["binary_tensor_data"]})

    def ready(self) -> Response:
        self.registry.model_names()  # raises (502) when the store does not answer
        return json_response({"ready": True})

    def v2_model(self, name: str, version: int | str | None) -> Response:
        model = self.registry.get(name, version)
        answer = self._v2.metadata(model, self.registry.versions(name))
        return json_response(answer, headers={VERSION_HEADER: str(model.version)})

    def v2_model_ready(self, name: str, version: int | str | None) -> Response:
        status = self.registry.status(name, version)
        if not status.ready:
            return json_response({"error": status.error or "not ready"}, 503)
        answer = {"name": name, "version": str(status.version), "ready": True}
        return json_response(answer, headers={VERSION_HEADER: str(status.version)})

    def tf_status(self, name: str, version: int | str | None) -> Response:
        status = self.registry.status(name, version)
        return json_response(self._tf.status([(status.version, status.ready, status.error)]))

    def tf_metadata(self, name: str, version: int | str | None) -> Response:
        model = self.registry.get(name, version)
        return json_response(self._tf.metadata(model), headers={VERSION_HEADER: str(model.version)})

    def health(self, extra: Mapping[str, Any] | None = None) -> Response:
        loaded = {
            f"{m.name}/{m.version}": {"sha256": m.sha256, "load_ms": round(m.load_seconds * 1000, 1)}
            for m in self.registry.cache.loaded()
        }
        return json_response({"status": "ok", "version": __version__, "loaded": loaded, **(extra or {})})

    def model_version(self, params: Mapping[str, str], tf: bool) -> tuple[str, int | str | None]:
        """The (name, version) a model route's path names, pinned for the function's own model."""
        name = check_name(params["name"])
        version = tf_version(params.get("version"), params.get("label")) if tf else parse_version(params.get("version"))
        return name, self.pinned(name, version)
