"""Request and response shapes for the OpenAPI document. Handlers decode bodies themselves (binary tensors do
not fit a pydantic body), so these models only describe the wire format to /docs readers and client generators."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class V2Tensor(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES")
    shape: list[int]
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size: the tensor's byte count in the binary part of the body"
    )
    data: list[Any] | None = Field(default=None, description="Row-major values, flat or nested")


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data: true for a binary output")


class V2InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data_output: all outputs binary")
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class TFPredictRequest(BaseModel):
    signature_name: str | None = "serving_default"
    instances: list[Any] | None = Field(default=None, description="Row format: one entry (or object) per example")
    inputs: Any | None = Field(default=None, description="Columnar format: a tensor or {input name: tensor}")


class TFPredictResponse(BaseModel):
    predictions: list[Any] | None = None
    outputs: Any | None = None


class PredictRequest(BaseModel):
    features: list[Any] = Field(description="One row of features, or a list of rows")


class PredictResponse(BaseModel):
    predictions: list[dict[str, Any]]


class ErrorResponse(BaseModel):
    error: str


def schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined: OpenAPI resolves `#/$defs/...` against the whole
    document, which has no `$defs`, so pydantic's nested-model references would dangle in /openapi.json."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: inline(v) for k, v in node.items() if k != "$ref"}
            return {**inline(defs[ref.removeprefix("#/$defs/")]), **rest}
        return {k: inline(v) for k, v in node.items()}

    return dict(inline(raw))


def body(request: type[BaseModel], response: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for a raw-body route: the request schema plus 200 and error responses."""
    error = {"content": {"application/json": {"schema": schema(ErrorResponse)}}}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema(request)}}},
        "responses": {
            "200": {"content": {"application/json": {"schema": schema(response)}}},
            "400": {"description": "The request does not fit the model's signature", **error},
            "404": {"description": "Unknown model, version or label", **error},
            "413": {"description": "Body over MODELFN_MAX_BODY_BYTES", **error},
            "503": {"description": "The version cannot be served (integrity check or load failed)", **error},
        },
    }
