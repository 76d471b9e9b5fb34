"""Which protocol a parsed JSON request speaks, for the transports that have no route to say it (SQS messages,
SageMaker `/invocations`). One function, so every such transport reads a body the same way."""

from __future__ import annotations

from typing import Any, Literal

from modelfn.errors import InvalidInput

Protocol = Literal["v2", "tf", "plain"]


def protocol_of(request: Any, binary: bool = False) -> Protocol:
    """The protocol of an already parsed body, checked in this order: v2 for `inputs` as a non-empty list of
    named tensors (and whenever the body uses v2's binary tensor extension, `binary`: its JSON header is v2's to
    decode); tf for TF Serving's `instances`, or `inputs` in any other form; plain for `{"features": ...}`."""
    if binary:
        return "v2"
    if not isinstance(request, dict):
        raise InvalidInput(
            f"an inference request must be a JSON object, not {type(request).__name__}: a v2 request "
            "({'inputs': [{name, datatype, shape, data}]}), a TF Serving one ('instances' or 'inputs'), "
            "or {'features': ...}"
        )
    inputs = request.get("inputs")
    if isinstance(inputs, list) and inputs and all(isinstance(t, dict) and "name" in t for t in inputs):
        return "v2"
    if "instances" in request or "inputs" in request:
        return "tf"
    if "features" in request:
        return "plain"
    keys = ", ".join(repr(k)[:40] for k in list(request)[:5]) or "none"
    raise InvalidInput(
        f"cannot tell the protocol of this request (its keys: {keys}): send a v2 request ('inputs': [{{name, "
        "datatype, shape, data}]), a TF Serving one ('instances' or 'inputs'), or {'features': ...}"
    )
