"""Write events/mlp/http-api-v2-binary.json: an API Gateway HTTP API (payload v2.0) event carrying a KServe v2
binary-tensor request for mlp, as tritonclient.http sends it.

The body is a JSON inference header followed by the raw tensor bytes: one row of 256 little-endian float32 values
(`binary_data_size` 1024). `Inference-Header-Content-Length` is the length of the JSON part; API Gateway hands a
binary body to Lambda base64-encoded with `isBase64Encoded: true`. The event's other fields follow the layout of
`sam local generate-event apigateway http-api-proxy`.

    python events/make_binary_event.py            # rewrites the event file (deterministic: same bytes every run)
"""

from __future__ import annotations

import base64
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

ROWS = 1
FEATURES = 256
OUT = Path(__file__).resolve().parent / "mlp" / "http-api-v2-binary.json"


def tensor_values(rows: int = ROWS, features: int = FEATURES) -> list[float]:
    """Deterministic feature values in [-1, 1], exactly representable as float32 after rounding."""
    return [
        struct.unpack("<f", struct.pack("<f", round(math.sin(0.37 * i + 0.11 * r), 4)))[0]
        for r in range(rows)
        for i in range(features)
    ]


def request_body(values: list[float], rows: int = ROWS, features: int = FEATURES) -> tuple[bytes, int]:
    """(body, inference header length): the JSON header then the float32 tensor bytes."""
    raw = struct.pack(f"<{len(values)}f", *values)
    header = {
        "id": "mlp-binary-1",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [rows, features],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": False}},
            {"name": "logits", "parameters": {"binary_data": False}},
        ],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, len(head)


def make_event() -> dict[str, Any]:
    body, header_length = request_body(tensor_values())
    path = "/v2/models/mlp/infer"
    return {
        "version": "2.0",
        "routeKey": "ANY /v2/models/mlp/{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "accept-encoding": "gzip, deflate",
            "content-length": str(len(body)),
            "content-type": "application/octet-stream",
            "host": "id.execute-api.us-east-1.amazonaws.com",
            "inference-header-content-length": str(header_length),
            "user-agent": "Python-urllib/3.12",
            "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e",
            "x-forwarded-for": "192.168.0.1",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "id.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "id",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.168.0.1",
                "userAgent": "Python-urllib/3.12",
            },
            "requestId": "id-mlp-binary",
            "routeKey": "ANY /v2/models/mlp/{proxy+}",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": base64.b64encode(body).decode(),
        "pathParameters": {"proxy": "infer"},
        "isBase64Encoded": True,
    }


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(make_event(), indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
