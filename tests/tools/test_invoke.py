"""`modelfn invoke`: a tiny SAM project (template, function, two layers) written to tmp_path, no model needed."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from modelfn_tools.invoke import (
    FunctionSpec,
    InvokeError,
    invoke,
    load_template,
    parse_template,
    report_line,
    resolve_function,
)

TEMPLATE = """\
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
Conditions:
  IsDev: !Equals [!Ref Stage, dev]
  IsProd: !And [!Not [!Condition IsDev], !Equals ["1", "1"]]
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    MemorySize: 512
    Layers:
      - !Ref FlatLayer
    Environment:
      Variables:
        FROM_GLOBALS: g
        SHARED: global
        MODELFN_STORE: !Sub "s3://${ModelBucket}/models"
Resources:
  ModelBucket:
    Type: AWS::S3::Bucket
  FlatLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layers/flat
  BuiltLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layers/built/
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      MemorySize: 1769
      Layers:
        - !Ref BuiltLayer
        - arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:7
      Environment:
        Variables:
          SHARED: function
          REGION_REF: !Ref AWS::Region
          STAGE: !Ref Stage
          SUBBED: !Sub "${AWS::AccountId}-${Stage}-${!Literal}"
          JOINED: !Join ["-", [a, !Ref Stage]]
          BUCKET_ARN: !GetAtt ModelBucket.Arn
          LABEL_TTL: 30
          DEV_ONLY: !If [IsDev, yes-dev, !Ref AWS::NoValue]
          PROD_ONLY: !If [IsProd, yes-prod, !Ref AWS::NoValue]
          FROM_PARAMS: template
          FROM_FUNCTION: template
  FailFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src
      Handler: app.fail
      Layers:
        - !Ref BuiltLayer
  SlowInitFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: slow
      Handler: slow_app.handler
  BrokenFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src
      Handler: broken.handler
  ImageFunction:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
    Metadata:
      Dockerfile: Dockerfile
      DockerContext: .
  PlainLambda:
    Type: AWS::Lambda::Function
    Properties:
      Code: src
      Handler: app.handler
      Runtime: python3.12
      Role: !GetAtt SomeRole.Arn
      Environment:
        Variables:
          PLAIN: "yes"
"""

APP = """\
import os
import sys
import time

import builtlib
import flatlib

COUNTER = 0


def handler(event, context):
    global COUNTER
    COUNTER += 1
    print("hello from the handler")
    print("and from its stderr", file=sys.stderr)
    time.sleep(event.get("sleep", 0))
    return {
        "pid": os.getpid(),
        "counter": COUNTER,
        "cwd": os.getcwd(),
        "layers": [flatlib.NAME, builtlib.NAME],
        "env": {k: os.environ.get(k) for k in event.get("env", [])},
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "log_group_name": context.log_group_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }


def fail(event, context):
    print("about to fail")
    raise ValueError(f"bad input: {event.get('x')}")
"""

SLOW_APP = """\
import time

time.sleep(0.2)  # the init phase: where a modelfn function loads its model


def handler(event, context):
    time.sleep(0.1)
    return {"ok": True}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    files = {
        "template.yaml": TEMPLATE,
        "src/app.py": APP,
        "src/broken.py": "import not_a_module_anywhere_xyz\n",
        "slow/slow_app.py": SLOW_APP,
        "layers/flat/flatlib.py": 'NAME = "flat"\n',
        "layers/flat/requirements.txt": "",
        "layers/built/python/builtlib.py": 'NAME = "built"\n',
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("MODELFN_STORE", raising=False)
    return tmp_path


def spec_of(project: Path, name: str, overrides: dict[str, Any] | None = None) -> FunctionSpec:
    return resolve_function(load_template(project / "template.yaml"), name, project, overrides)


def cli(project: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AWS_REGION="eu-west-1")
    env.pop("MODELFN_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "modelfn_tools.cli", "invoke", *args, "--template", str(project / "template.yaml")],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_short_form_tags_load_as_long_form() -> None:
    tags = ["Sub", "GetAtt", "If", "Join", "Select", "Split", "FindInMap", "ImportValue"]
    tags += ["Equals", "Not", "And", "Or", "Base64", "Cidr", "GetAZs"]
    body = "\n".join(f"  T{t}: !{t} [a, b]" for t in tags)
    doc = parse_template(
        "AWSTemplateFormatVersion: 2010-09-09\nResources: {}\nOutputs:\n"
        f"{body}\n  Ref1: !Ref Thing\n  Cond: !Condition IsProd\n  Att: !GetAtt Bucket.Arn\n"
        '  Sub2: !Sub ["${A}-x", {A: !Ref B}]\n  Nested: !Select [0, !GetAZs ""]\n  Map: !Base64 {k: v}\n'
    )
    out = doc["Outputs"]
    assert doc["AWSTemplateFormatVersion"] == "2010-09-09"  # not a date
    for t in tags:
        assert out[f"T{t}"] == {f"Fn::{t}": ["a", "b"]}
    assert out["Ref1"] == {"Ref": "Thing"}
    assert out["Cond"] == {"Condition": "IsProd"}
    assert out["Att"] == {"Fn::GetAtt": ["Bucket", "Arn"]}
    assert out["Sub2"] == {"Fn::Sub": ["${A}-x", {"A": {"Ref": "B"}}]}
    assert out["Nested"] == {"Fn::Select": [0, {"Fn::GetAZs": ""}]}
    assert out["Map"] == {"Fn::Base64": {"k": "v"}}


def test_load_template_and_errors(project: Path) -> None:
    t = load_template(project / "template.yaml")
    props = t["Resources"]["EchoFunction"]["Properties"]
    assert props["Layers"][0] == {"Ref": "BuiltLayer"}
    assert t["Globals"]["Function"]["Environment"]["Variables"]["MODELFN_STORE"] == {
        "Fn::Sub": "s3://${ModelBucket}/models"
    }
    with pytest.raises(InvokeError, match="cannot read template"):
        load_template(project / "nope.yaml")
    with pytest.raises(InvokeError, match="no Resources"):
        parse_template("just: text\n")


def test_resolve_merges_globals_and_resolves_paths(project: Path) -> None:
    spec = spec_of(project, "EchoFunction")
    assert (spec.module, spec.attribute, spec.runtime) == ("app", "handler", "python3.12")
    assert spec.code_uri == (project / "src").resolve()
    assert spec.memory_size == 1769  # the function wins over Globals
    assert spec.timeout == 10.0  # from Globals
    # Globals' layers first, then the function's; the ARN layer is skipped with a note
    assert spec.layers == [(project / "layers/flat").resolve(), (project / "layers/built").resolve()]
    assert any("arn:aws:lambda" in n and "skipped" in n for n in spec.notes)
    path = spec.python_path()
    assert path[:3] == [str(spec.code_uri), str(spec.layers[0]), str(spec.layers[1] / "python")]
    assert any(p.endswith("site-packages") for p in path)

    env = spec.environment
    assert env["FROM_GLOBALS"] == "g"
    assert env["SHARED"] == "function"
    assert env["REGION_REF"] == "eu-west-1"
    assert env["STAGE"] == "dev"
    assert env["SUBBED"] == "123456789012-dev-${Literal}"
    assert env["JOINED"] == "a-dev"
    assert env["LABEL_TTL"] == "30"
    assert env["DEV_ONLY"] == "yes-dev" and "PROD_ONLY" not in env  # Conditions evaluated, AWS::NoValue drops
    # only a deployed stack knows these: unset, with a note each
    assert "MODELFN_STORE" not in env and "BUCKET_ARN" not in env
    assert any(n.startswith("EchoFunction: MODELFN_STORE is not set") for n in spec.notes)
    assert not any("PROD_ONLY" in n for n in spec.notes)
    assert any("BUCKET_ARN" in n and "--env-vars" in n for n in spec.notes)


def test_plain_lambda_function_gets_no_globals(project: Path) -> None:
    spec = spec_of(project, "PlainLambda")
    assert spec.code_uri == (project / "src").resolve()
    assert (spec.memory_size, spec.timeout, spec.layers) == (128, 3.0, [])
    assert spec.environment == {"PLAIN": "yes"}


def test_env_vars_precedence(project: Path) -> None:
    overrides = {
        "Parameters": {"FROM_PARAMS": "p", "FROM_FUNCTION": "p", "NOT_DECLARED": "x", "MODELFN_STORE": "s3://b/m"},
        "EchoFunction": {"FROM_FUNCTION": "f", "MODELFN_EXTRA": "added", "UNDECLARED_FN": "y", "STAGE": True},
        "FailFunction": {"SHARED": "not for echo"},
    }
    spec = spec_of(project, "EchoFunction", overrides)
    env = spec.environment
    assert env["FROM_FUNCTION"] == "f"  # function-specific over Parameters
    assert env["FROM_PARAMS"] == "p"  # Parameters over the template
    assert env["SHARED"] == "function"  # the template where nothing overrides
    assert env["STAGE"] == "true"  # stringified as SAM does
    assert env["MODELFN_STORE"] == "s3://b/m"  # unresolvable in the template, given by the file
    assert env["MODELFN_EXTRA"] == "added"  # MODELFN_/AWS_/POWERTOOLS_ may be added
    assert "NOT_DECLARED" not in env and "UNDECLARED_FN" not in env  # SAM: overrides only, no additions
    assert any("UNDECLARED_FN ignored" in n for n in spec.notes)
    assert not any("MODELFN_STORE" in n for n in spec.notes)


def test_each_invoke_is_a_fresh_process(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # passes through, as for a local moto
    spec = spec_of(project, "EchoFunction")
    names = [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_EXECUTION_ENV",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "FROM_GLOBALS",
        "MODELFN_STORE",
    ]
    runs = []
    for _ in range(2):
        log = io.StringIO()
        r = invoke(spec, {"env": names}, log=log)
        assert not r.error, r.result
        assert "hello from the handler" in log.getvalue() and "and from its stderr" in r.logs
        runs.append(r)
    first, second = (r.result for r in runs)
    assert first["pid"] != os.getpid() and second["pid"] != os.getpid() and first["pid"] != second["pid"]
    assert first["counter"] == 1 and second["counter"] == 1
    assert first["layers"] == ["flat", "built"]
    assert first["cwd"] == str(spec.code_uri)
    assert first["env"] == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_LAMBDA_FUNCTION_NAME": "EchoFunction",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": str(spec.code_uri),
        "_HANDLER": "app.handler",
        "FROM_GLOBALS": "g",
        "MODELFN_STORE": None,
    }
    ctx = first["context"]
    assert ctx["aws_request_id"] == runs[0].request_id != runs[1].request_id
    assert ctx["function_name"] == "EchoFunction" and ctx["function_version"] == "$LATEST"
    assert ctx["memory_limit_in_mb"] == "1769"
    assert ctx["invoked_function_arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:EchoFunction"
    assert ctx["log_group_name"] == "/aws/lambda/EchoFunction"
    assert 0 < ctx["remaining_ms"] <= 10_000
    assert runs[0].max_memory_mb > 0


def test_init_and_invoke_durations(project: Path) -> None:
    spec = spec_of(project, "SlowInitFunction")
    r = invoke(spec, {}, log=io.StringIO())
    assert r.result == {"ok": True} and not r.error
    assert r.init_ms >= 200.0  # the module sleeps 0.2 s at import
    assert r.duration_ms >= 100.0  # the handler sleeps 0.1 s
    line = report_line(r, spec)
    assert line.startswith(f"REPORT RequestId: {r.request_id}\tInit Duration: ")
    assert "\tMemory Size: 512 MB\t" in line  # from Globals


def test_timeout_and_import_error(project: Path) -> None:
    spec = spec_of(project, "EchoFunction")
    r = invoke(spec, {"sleep": 5}, timeout=0.3, log=io.StringIO())
    assert r.error and r.result["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.30 seconds" in r.result["errorMessage"]

    r = invoke(spec_of(project, "BrokenFunction"), {}, log=io.StringIO())
    assert r.error and r.result["errorType"] == "Runtime.ImportModuleError"
    assert "not_a_module_anywhere_xyz" in r.result["errorMessage"]
    assert [line.split(",")[0] for line in r.result["stackTrace"]] == [
        f'  File "{(project / "src" / "broken.py").resolve()}"'
    ]


def test_cli_stdout_is_only_the_result(project: Path) -> None:
    (project / "event.json").write_text(json.dumps({"env": ["MODELFN_STORE", "FROM_FUNCTION", "FROM_PARAMS"]}))
    (project / "env.json").write_text(
        json.dumps(
            {
                "Parameters": {"MODELFN_STORE": "s3://bucket/models", "FROM_PARAMS": "p", "FROM_FUNCTION": "p"},
                "EchoFunction": {"FROM_FUNCTION": "f"},
            }
        )
    )
    p = cli(project, "EchoFunction", "--event", str(project / "event.json"), "--env-vars", str(project / "env.json"))
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1  # the handler's print() went to stderr
    out = json.loads(p.stdout)
    assert out["env"] == {"MODELFN_STORE": "s3://bucket/models", "FROM_FUNCTION": "f", "FROM_PARAMS": "p"}
    assert "hello from the handler" in p.stderr and "hello" not in p.stdout
    assert "note: EchoFunction: BUCKET_ARN is not set" in p.stderr
    report = re.search(
        r"REPORT RequestId: ([0-9a-f-]{36})\tInit Duration: [\d.]+ ms\tDuration: [\d.]+ ms\t"
        r"Billed Duration: \d+ ms\tMemory Size: 1769 MB\tMax Memory Used: \d+ MB",
        p.stderr,
    )
    assert report is not None, p.stderr
    assert out["context"]["aws_request_id"] == report.group(1)


def test_cli_handler_exception_exits_1(project: Path) -> None:
    p = cli(project, "FailFunction", "--event", "-", stdin='{"x": 7}')
    assert p.returncode == 1, p.stderr
    err = json.loads(p.stdout)
    assert err["errorType"] == "ValueError"
    assert err["errorMessage"] == "bad input: 7"
    assert any("app.py" in line and "in fail" in line for line in err["stackTrace"])
    assert not any("invoke_worker" in line or "importlib" in line for line in err["stackTrace"])
    assert "about to fail" in p.stderr and "REPORT RequestId: " in p.stderr


def test_cli_unknown_function_exits_2_listing_functions(project: Path) -> None:
    p = cli(project, "NoSuchFunction")
    assert p.returncode == 2
    assert p.stdout == ""
    assert "NoSuchFunction" in p.stderr
    assert "EchoFunction, FailFunction, SlowInitFunction, BrokenFunction, ImageFunction, PlainLambda" in p.stderr


def test_image_function_is_refused(project: Path) -> None:
    with pytest.raises(InvokeError, match="needs Docker"):
        spec_of(project, "ImageFunction")
    p = cli(project, "ImageFunction")
    assert p.returncode == 2
    assert "PackageType: Image" in p.stderr and "sam local invoke ImageFunction" in p.stderr
