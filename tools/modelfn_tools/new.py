"""`modelfn new NAME --model FILE [--store URI]`: a new model in the Lambda deployment, in one command.

It checks everything before it changes anything (the name: a new, valid model name whose logical id is free in
template.yaml; the file: an ONNX model onnxruntime loads), then
1. publishes the model to the store (default: the one `make demo` serves, s3://modelfn-models/models),
2. writes functions/NAME/app.py (the runtime's handlers, with pre- and post-processing hook stubs) and
   events/NAME/ (HTTP API v2 events for /predict and /v2/models/NAME/infer whose bodies fit the model's signature,
   and an SQS event), which `modelfn invoke` runs as they are,
3. adds the model to template.yaml: a copy of the last model's nested application (infra/model-function.yaml)
   with the new name, its S3 notification, a <Model>ModelVersion parameter, and the name in DriftFunction's
   MODELFN_DRIFT_MODELS; and its two functions to env.json (`modelfn invoke --env-vars`), as the last model's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.model.signature import TensorSpec
from modelfn_tools.invoke import parse_template

MODEL_TEMPLATE = "infra/model-function.yaml"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")  # infra/model-function.yaml's ModelName pattern
LOCATION_LINE = f"      Location: {MODEL_TEMPLATE}"
DRIFT_MODELS = re.compile(r"^(\s+MODELFN_DRIFT_MODELS: )(\S+)$", re.M)

APP_PY = '''"""{name} as a Lambda function (written by `modelfn new`). The runtime does the work: the model is fetched,
verified and loaded in the init phase; the hooks below shape /predict's requests and answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelfn import LoadedModel, ModelFunction
from modelfn.protocols.plain import decode_parsed


def preprocess(features: Any, model: LoadedModel) -> Mapping[str, np.ndarray]:
    """/predict's "features" -> the model's inputs. As written it decodes them as modelfn does without a hook
    (the single input, one row or many); change it to derive the inputs from another shape of request."""
    return decode_parsed({{"features": features}}, model)


def postprocess(rows: list[dict[str, Any]], model: LoadedModel) -> list[dict[str, Any]]:
    """Each /predict answer row ({{"<output>": value, ...}}); add or rename fields here (class names, top-k)."""
    return rows


fn = ModelFunction.from_env(model="{name}", preprocess=preprocess, postprocess=postprocess)
http_handler = fn.http_handler
batch_handler = fn.batch_handler
sqs_handler = fn.sqs_handler
s3_handler = fn.s3_handler
'''


def logical_id(name: str) -> str:
    """`fraud-score` -> `FraudScore`: the nested application's id, the prefix of its functions' ids."""
    return "".join(part.capitalize() for part in name.split("-"))


def check_new(name: str, root: Path) -> str:
    """The model's logical id, if NAME is valid and new to this repository; else InvalidInput saying why."""
    if not NAME.match(name) or "--" in name or name.endswith("-"):
        raise InvalidInput(
            f"invalid model name {name!r}: a lowercase letter, then lowercase letters, digits or single '-' "
            "(at most 40): it names the functions, log groups and state machine"
        )
    template = root / "template.yaml"
    if not template.is_file() or not (root / MODEL_TEMPLATE).is_file():
        raise InvalidInput(f"{root} has no template.yaml and {MODEL_TEMPLATE}: run `modelfn new` in the repository")
    doc = parse_template(template.read_text(encoding="utf-8"), str(template))
    lid = logical_id(name)
    names = [r.get("Properties", {}).get("Parameters", {}).get("ModelName") for r in doc["Resources"].values()]
    taken = {
        f"model {name!r} is already in template.yaml": name in names,
        f"template.yaml already has {lid} or {lid}ModelVersion": bool(
            {lid, f"{lid}ModelVersion"} & (set(doc["Resources"]) | set(doc.get("Parameters") or {}))
        ),
        f"functions/{name}/ already exists": (root / "functions" / name).exists(),
        f"events/{name}/ already exists": (root / "events" / name).exists(),
    }
    for why, clash in taken.items():
        if clash:
            raise InvalidInput(f"cannot add {name!r}: {why}")
    return lid


# ---- events ------------------------------------------------------------------------------------------------------
def sample(spec: TensorSpec, rows: int = 2) -> np.ndarray:
    """Values that fit one input: `rows` rows for the batch dimension, 1 for other free dimensions."""
    shape = [rows if i == 0 and d == -1 else max(d, 1) for i, d in enumerate(spec.shape)] or [rows]
    n = int(np.prod(shape))
    if spec.datatype == "BYTES":
        return np.array([f"v{i % 3}" for i in range(n)], dtype=object).reshape(shape)
    if spec.datatype == "BOOL":
        values: np.ndarray = np.arange(n) % 2 == 0
    elif spec.datatype.startswith(("INT", "UINT")):
        values = (np.arange(n) % 3).astype(spec.dtype)
    else:
        values = np.round(np.sin(np.arange(n) * 0.7), 3).astype(spec.dtype)
    return values.reshape(shape)


def http_event(method: str, path: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as the routes of the model's application deliver it."""
    text = json.dumps(body, separators=(",", ":"))
    headers = {"content-type": "application/json", "content-length": str(len(text)), "host": "api.example.com"}
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "api.example.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.168.0.1"},
            "requestId": request_id,
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "timeEpoch": 1583348638390,
        },
        "body": text,
        "isBase64Encoded": False,
    }


def sqs_event(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """One SQS message with a v2 request, as the model's queue delivers it to its batch function."""
    record = {
        "messageId": f"{name}-1",
        "receiptHandle": "MessageReceiptHandle1",
        "body": json.dumps(body, separators=(",", ":")),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1523232000000"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:modelfn-{name}",
        "awsRegion": "us-east-1",
    }
    return {"Records": [record]}


def events(name: str, inputs: list[TensorSpec]) -> dict[str, dict[str, Any]]:
    """events/NAME/*.json by file name: /v2/models/NAME/infer and SQS always, /predict for a single input."""
    tensors = [
        {"name": s.name, "datatype": s.datatype, "shape": list(a.shape), "data": a.ravel().tolist()}
        for s, a in ((s, sample(s)) for s in inputs)
    ]
    out = {
        "http-api-v2-infer.json": http_event(
            "POST", f"/v2/models/{name}/infer", {"id": f"{name}-1", "inputs": tensors}, f"{name}-infer"
        ),
        "sqs.json": sqs_event(name, {"id": f"{name}-sqs-1", "inputs": tensors}),
    }
    if len(inputs) == 1:
        out["http-api-v2-predict.json"] = http_event(
            "POST", "/predict", {"features": sample(inputs[0]).tolist()}, f"{name}-predict"
        )
    return out


# ---- template.yaml -----------------------------------------------------------------------------------------------
def _block_end(lines: list[str], start: int) -> int:
    """The index after a top-level entry (two-space indent) that starts at `start`: its next sibling or section."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("   ")):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _last_model(lines: list[str]) -> tuple[int, str]:
    """Where the last model's application starts in template.yaml, and its logical id."""
    last = max(i for i, line in enumerate(lines) if line == LOCATION_LINE)
    start = max(i for i in range(last) if re.match(r"^  [A-Za-z0-9]+:$", lines[i]))
    return start, lines[start].strip().rstrip(":")


def add_to_env_vars(text: str, prev_lid: str, lid: str) -> str:
    """env.json with the new functions' entries, as the last model's."""
    env = json.loads(text)
    for kind in ("HttpFunction", "BatchFunction"):
        if f"{prev_lid}{kind}" in env:
            env[f"{lid}{kind}"] = dict(env[f"{prev_lid}{kind}"])
    return json.dumps(env, indent=2) + "\n"


def add_to_template(text: str, name: str, lid: str) -> str:
    """template.yaml with the model added after the last model (see the module docstring)."""
    lines = text.split("\n")
    start, prev_lid = _last_model(lines)
    app = lines[start : _block_end(lines, start)]
    prev_name = next(line.split(": ", 1)[1] for line in app if line.startswith("        ModelName: "))
    block = [f"  {lid}:"]
    for line in app[1:]:
        if line.startswith("        FunctionUrl:"):
            continue
        renamed = line.replace(f"!Ref {prev_lid}ModelVersion", f"!Ref {lid}ModelVersion")
        block.append(f"        ModelName: {name}" if line.startswith("        ModelName: ") else renamed)
    at = _block_end(lines, start)
    lines[at:at] = ["", *block]
    # its S3 notification, after the last one
    notify = max(i for i, line in enumerate(lines) if ".Outputs.BatchFunctionAlias" in line)
    entry = lines[notify - 1 : notify + 2]
    lines[notify + 2 : notify + 2] = [
        line.replace(f"{prev_lid}.Outputs.", f"{lid}.Outputs.").replace(f"}}{prev_name}/", f"}}{name}/")
        for line in entry
    ]
    # its version parameter, after the last model's
    param = lines.index(f"  {prev_lid}ModelVersion:")
    p_end = _block_end(lines, param)
    lines[p_end:p_end] = [
        line.replace(f"{prev_lid}ModelVersion", f"{lid}ModelVersion").replace(f"of the {prev_name} ", f"of the {name} ")
        for line in lines[param:p_end]
    ]
    out = "\n".join(lines)
    return DRIFT_MODELS.sub(lambda m: f"{m.group(1)}{m.group(2)},{name}", out, count=1)


# ---- the command -------------------------------------------------------------------------------------------------
def new_model(name: str, model: Path, store: str | None = None, root: Path = Path(".")) -> dict[str, Any]:
    """Publish, scaffold and deploy-wire one model (see the module docstring); returns what it did."""
    from modelfn_tools.dev import STORE
    from modelfn_tools.publish import inspect, publish

    lid = check_new(name, root)
    if not model.is_file():
        raise InvalidInput(f"--model {model} is not a file")
    inputs = inspect(model).inputs  # not ONNX, or not loadable: refused before anything is written
    template, env_vars = root / "template.yaml", root / "env.json"
    text = template.read_text(encoding="utf-8")
    updated = add_to_template(text, name, lid)
    parse_template(updated, str(template))
    env_text = None
    if env_vars.is_file():
        env_text = add_to_env_vars(env_vars.read_text(encoding="utf-8"), _last_model(text.split("\n"))[1], lid)
    record = publish(model, store or STORE, name, progress=False)
    function = root / "functions" / name
    function.mkdir(parents=True)
    (function / "app.py").write_text(APP_PY.format(name=name), encoding="utf-8")
    (function / "requirements.txt").write_text(
        "# Dependencies come from the modelfn layer (layers/modelfn/requirements.txt).\n", encoding="utf-8"
    )
    folder = root / "events" / name
    folder.mkdir(parents=True)
    written = []
    for file, event in sorted(events(name, inputs).items()):
        (folder / file).write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
        written.append(f"events/{name}/{file}")
    template.write_text(updated, encoding="utf-8")
    if env_text is not None:
        env_vars.write_text(env_text, encoding="utf-8")
        written.append("env.json")
    return {
        "published": record,
        "functions": [f"{lid}HttpFunction", f"{lid}BatchFunction"],
        "files": [f"functions/{name}/app.py", f"functions/{name}/requirements.txt", *written, "template.yaml"],
    }
