"""Transport-neutral inference on a JSON request, for the paths that have no route to say the protocol
(SQS messages): a v2 request has `inputs` as a list of named tensors, a TF Serving one `instances` or `inputs`."""

from __future__ import annotations

from typing import Any

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.protocols import tfserving, v2


def is_v2(request: dict[str, Any]) -> bool:
    inputs = request.get("inputs")
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(i, dict) and "name" in i for i in inputs)


def infer_json(model: LoadedModel, body: bytes | str) -> bytes:
    """Run one JSON request and answer what its protocol defines (v2 response or TF `predictions`/`outputs`)."""
    request = jsonio.loads(body, "inference request")
    if not isinstance(request, dict):
        raise InvalidInput("an inference request must be a JSON object (v2 'inputs' or TF 'instances'/'inputs')")
    if is_v2(request):
        req = v2.decode_parsed(request, memoryview(b""), model)
        content, _ = v2.encode_response(model, model.predict(req.inputs, req.outputs or None), set(), req.id)
        return content
    if "instances" in request or "inputs" in request:
        rid = request.pop("id", None)
        req_tf = tfserving.decode_parsed(request, model)
        answer = tfserving.encode_response(model.predict(req_tf.inputs), req_tf.row_format)
        if rid is not None:
            answer["id"] = rid
        return jsonio.dumps(answer)
    raise InvalidInput(
        "unrecognised request: expected v2 {'inputs': [{name, datatype, shape, data}]} or TF 'instances'"
    )
