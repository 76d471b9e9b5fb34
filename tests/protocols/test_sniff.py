"""protocol_of: which protocol a parsed request body speaks, for the transports that have no route to say it (SQS
messages, SageMaker /invocations). v2 first, then TF Serving, then plain; anything else a 400 that says what to send."""

from __future__ import annotations

from typing import Any

import pytest

from modelfn.errors import InvalidInput
from modelfn.protocols.sniff import protocol_of

V2_TENSOR = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"inputs": [V2_TENSOR]}, "v2"),
        ({"inputs": [V2_TENSOR, {"name": "y"}], "outputs": [{"name": "z"}], "id": "a"}, "v2"),
        ({"inputs": [{"name": "x"}], "instances": [[1]], "features": [1]}, "v2"),  # v2 wins
        ({"instances": [[1.0, 2.0]]}, "tf"),
        ({"instances": [{"x": [1.0, 2.0]}], "signature_name": "serving_default"}, "tf"),
        ({"inputs": [[1.0, 2.0]]}, "tf"),  # columnar, one unnamed input
        ({"inputs": {"x": [[1.0, 2.0]]}}, "tf"),
        ({"inputs": [{"x": 1.0}]}, "tf"),  # objects without a name are not v2 tensors
        ({"inputs": [V2_TENSOR, [1.0]]}, "tf"),  # every tensor must be named for v2
        ({"inputs": []}, "tf"),  # not v2 (which needs a non-empty list): TF Serving decoding says what is wrong
        ({"inputs": None}, "tf"),
        ({"instances": [[1]], "features": [1]}, "tf"),  # TF before plain
        ({"features": [1.0, 2.0]}, "plain"),
        ({"features": [[1.0, 2.0]], "id": "p"}, "plain"),
    ],
)
def test_protocol_of_a_parsed_body(request_body: Any, expected: str) -> None:
    assert protocol_of(request_body) == expected


@pytest.mark.parametrize("header", [{"inputs": [V2_TENSOR]}, {"instances": [[1]]}, {}, None, b"\x00\x01"])
def test_binary_bodies_are_v2_whatever_they_hold(header: Any) -> None:
    """With v2's binary tensor extension the JSON header is v2's to decode (and to refuse)."""
    assert protocol_of(header, binary=True) == "v2"


@pytest.mark.parametrize("body", [[{"name": "x"}], "inputs", 3, None, True])
def test_a_body_that_is_not_an_object_is_a_400_naming_its_type(body: Any) -> None:
    with pytest.raises(InvalidInput) as err:
        protocol_of(body)
    assert err.value.status == 400
    assert "must be a JSON object" in err.value.message and type(body).__name__ in err.value.message


def test_an_unknown_object_is_a_400_naming_its_keys_and_what_to_send() -> None:
    with pytest.raises(InvalidInput) as err:
        protocol_of({"rows": [[1.0]], "model": "iris"})
    message = err.value.message
    assert err.value.status == 400
    assert "cannot tell the protocol" in message and "'rows', 'model'" in message
    assert "'inputs': [{name, datatype, shape, data}]" in message and "'instances'" in message
    assert "{'features': ...}" in message


def test_keys_in_the_message_are_bounded() -> None:
    body = {f"{'k' * 1000}{i}": i for i in range(50)}
    with pytest.raises(InvalidInput) as err:
        protocol_of(body)
    assert len(err.value.message) < 500
    with pytest.raises(InvalidInput, match=r"its keys: none"):
        protocol_of({})
