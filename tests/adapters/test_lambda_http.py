"""Event-source details of the Lambda HTTP adapter: query strings keep their meaning (REST v1 decodes them, ALB
does not), a body that claims to be base64 and is not is a 400, and an unknown event is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelfn.adapters.lambda_http import Alb, HttpApi, LambdaHttp, RestApi, source_of
from modelfn.service.request import Request, Response, json_response


class Echo:
    """Answers with what the service would have been handed."""

    def handle(self, request: Request) -> Response:
        return json_response(
            {
                "method": request.method,
                "path": request.path,
                "model": request.query_param("model"),
                "body": request.body.decode(),
            }
        )


def _rest(query: dict[str, list[str]], body: str = "", b64: bool = False) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "path": "/predict",
        "multiValueQueryStringParameters": query,
        "headers": {},
        "requestContext": {"stage": "prod"},
        "body": body,
        "isBase64Encoded": b64,
    }


def test_rest_v1_query_values_are_encoded_again() -> None:
    out = LambdaHttp(Echo())(_rest({"model": ["iris&evil=1"]}))
    assert json.loads(out["body"])["model"] == "iris&evil=1"


def test_alb_query_values_stay_as_the_client_encoded_them() -> None:
    event = {**_rest({}), "requestContext": {"elb": {}}, "queryStringParameters": {"model": "iris%26evil%3D1"}}
    del event["multiValueQueryStringParameters"]
    assert isinstance(source_of(event), Alb)
    assert json.loads(LambdaHttp(Echo())(event)["body"])["model"] == "iris&evil=1"


def test_http_api_raw_query() -> None:
    event = {
        "version": "2.0",
        "rawPath": "/prod/predict",
        "rawQueryString": "model=iris%26evil%3D1",
        "headers": {},
        "requestContext": {"stage": "prod", "http": {"method": "POST", "path": "/prod/predict"}},
    }
    assert isinstance(source_of(event), HttpApi)
    answer = json.loads(LambdaHttp(Echo())(event)["body"])
    assert answer["model"] == "iris&evil=1" and answer["path"] == "/predict"


def test_a_body_that_is_not_base64_is_a_400() -> None:
    out = LambdaHttp(Echo())(_rest({}, body="not base64!!", b64=True))
    assert out["statusCode"] == 400 and "base64" in json.loads(out["body"])["error"]
    ok = LambdaHttp(Echo())(_rest({}, body="eyJhIjogMX0=", b64=True))
    assert json.loads(ok["body"])["body"] == '{"a": 1}'


def test_base_path_is_stripped() -> None:
    event = {**_rest({}), "path": "/models/predict"}
    assert isinstance(source_of(event), RestApi)
    assert json.loads(LambdaHttp(Echo(), base_path="/models")(event)["body"])["path"] == "/predict"


def test_an_event_of_no_http_source_is_refused() -> None:
    with pytest.raises(ValueError, match="not an HTTP event"):
        LambdaHttp(Echo())({"Records": []})
