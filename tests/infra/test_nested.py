"""modelfn_tools.invoke_nested.flatten: a nested application read as part of its parent, as CloudFormation would
deploy it (parameters bound, names prefixed, conditions decided where literals decide them, outputs resolved,
each template's own Globals), and `modelfn invoke` running a function of a nested application."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modelfn_tools.invoke import InvokeError, load_template, resolve_function
from modelfn_tools.invoke_nested import NestedTemplateError, flatten

CHILD = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Name: {Type: String}
  Bucket: {Type: String}
  Layer: {Type: String}
  Auth: {Type: String}
  Url: {Type: String, Default: "false"}
  Extra: {Type: String, Default: fallback}
Conditions:
  UseJwt: !Equals [!Ref Auth, JWT]
  HasUrl: !Equals [!Ref Url, "true"]
  Other: !Equals [!Ref Auth, IAM]
Globals:
  Function:
    CodeUri: !Sub "../functions/${Name}/"
    Runtime: python3.12
    Layers: [!Ref Layer]
    Environment:
      Variables:
        FROM_CHILD_GLOBALS: !Ref Name
Resources:
  Fn:
    Type: AWS::Serverless::Function
    DependsOn: [Log]
    Properties:
      Handler: app.handler
      Environment:
        Variables:
          STORE: !Sub "s3://${Bucket}/${Name}/${!Literal}"
          EXTRA: !Ref Extra
          AUTH: !If [UseJwt, jwt, iam]
          URL: !If [HasUrl, "yes", "no"]
  Log:
    Type: AWS::Logs::LogGroup
    Properties:
      LogGroupName: !Sub "/x/${Name}-${Fn}"
  Url:
    Type: AWS::Lambda::Url
    Condition: HasUrl
    Properties:
      AuthType: AWS_IAM
      TargetFunctionArn: !GetAtt Fn.Arn
  Other:
    Type: AWS::SNS::Topic
    Condition: Other
Outputs:
  FunctionArn:
    Value: !GetAtt Fn.Arn
  UrlOut:
    Condition: HasUrl
    Value: !GetAtt Url.FunctionUrl
"""

PARENT = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  ApiAuth: {Type: String, Default: IAM}
Conditions:
  UseJwt: !Equals [!Ref ApiAuth, JWT]
Globals:
  Function:
    Environment:
      Variables:
        FROM_PARENT_GLOBALS: "yes"
Resources:
  Layer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
  Data:
    Type: AWS::S3::Bucket
  Alpha:
    Type: AWS::Serverless::Application
    Properties:
      Location: nested/child.yaml
      Parameters:
        Name: alpha
        Bucket: !Ref Data
        Layer: !Ref Layer
        Auth: !Ref ApiAuth
        Url: "true"
  Beta:
    Type: AWS::Serverless::Application
    Properties:
      Location: nested/child.yaml
      Parameters:
        Name: beta
        Bucket: !GetAtt Data.Arn
        Layer: !Ref Layer
        Auth: JWT
        Extra: !If [UseJwt, a, b]
  Gated:
    Type: AWS::Serverless::Application
    Condition: UseJwt
    Properties:
      Location: nested/child.yaml
  Root:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/root/
      Handler: app.handler
      Runtime: python3.12
      Environment:
        Variables:
          ALPHA: !GetAtt Alpha.Outputs.FunctionArn
          BETA: !Sub "arn=${Beta.Outputs.FunctionArn}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "child.yaml").write_text(CHILD)
    (tmp_path / "template.yaml").write_text(PARENT)
    for folder in ("functions/alpha", "functions/beta", "functions/root", "layer"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "functions" / "alpha" / "app.py").write_text("def handler(event, context):\n    return event\n")
    return tmp_path


def flat(project: Path) -> dict[str, Any]:
    return flatten(load_template(project / "template.yaml"), project, load_template)


def test_parameters_names_and_paths(project: Path) -> None:
    t = flat(project)
    alpha = t["Resources"]["AlphaFn"]
    assert alpha["DependsOn"] == ["AlphaLog"]
    p = alpha["Properties"]
    assert p["CodeUri"] == "functions/alpha/"  # relative to the parent's folder
    assert p["Layers"] == [{"Ref": "Layer"}]
    env = p["Environment"]["Variables"]
    assert env["STORE"] == {"Fn::Sub": "s3://${Data}/alpha/${!Literal}"}  # a Ref becomes ${X}, literals text
    assert env["EXTRA"] == "fallback"  # the child's default
    assert env["AUTH"] == {"Fn::If": ["UseJwt", "jwt", "iam"]}  # the parent's identical condition
    assert env["URL"] == "yes"  # decided by a literal
    assert env["FROM_CHILD_GLOBALS"] == "alpha" and "FROM_PARENT_GLOBALS" not in env  # each template's Globals
    assert t["Resources"]["AlphaLog"]["Properties"]["LogGroupName"] == {"Fn::Sub": "/x/alpha-${AlphaFn}"}
    beta = t["Resources"]["BetaFn"]["Properties"]["Environment"]["Variables"]
    assert beta["STORE"] == {"Fn::Sub": "s3://${Data.Arn}/beta/${!Literal}"}  # a GetAtt becomes ${X.Attr}
    assert beta["EXTRA"] == {"Fn::If": ["UseJwt", "a", "b"]} and beta["AUTH"] == "jwt" and beta["URL"] == "no"
    assert t["Resources"]["Root"]["Properties"]["Environment"]["Variables"]["FROM_PARENT_GLOBALS"] == "yes"
    assert "Globals" not in t


def test_conditions_are_decided_renamed_or_shared(project: Path) -> None:
    t = flat(project)
    assert "AlphaUrl" in t["Resources"] and "Condition" not in t["Resources"]["AlphaUrl"]  # Url: "true"
    assert "BetaUrl" not in t["Resources"]  # Url defaulted to "false": not deployed
    assert t["Resources"]["AlphaOther"]["Condition"] == "AlphaOther"  # not the parent's: prefixed
    assert "BetaOther" not in t["Resources"]  # Auth: JWT, so Other is false
    assert t["Conditions"]["AlphaOther"] == {"Fn::Equals": [{"Ref": "ApiAuth"}, "IAM"]}
    assert sorted(t["Conditions"]) == ["AlphaOther", "UseJwt"]


def test_outputs_are_lifted_and_resolved_in_the_parent(project: Path) -> None:
    t = flat(project)
    assert t["Outputs"]["AlphaFunctionArn"] == {"Value": {"Fn::GetAtt": ["AlphaFn", "Arn"]}}
    assert t["Outputs"]["AlphaUrlOut"] == {"Value": {"Fn::GetAtt": ["AlphaUrl", "FunctionUrl"]}}
    assert "BetaUrlOut" not in t["Outputs"]
    env = t["Resources"]["Root"]["Properties"]["Environment"]["Variables"]
    assert env["ALPHA"] == {"Fn::GetAtt": ["AlphaFn", "Arn"]}
    assert env["BETA"] == {"Fn::Sub": "arn=${BetaFn.Arn}"}
    assert t["Resources"]["Gated"]["Type"] == "AWS::Serverless::Application"  # conditional: left as a stack
    assert not [lid for lid in t["Resources"] if lid.startswith("Gated") and lid != "Gated"]


def test_a_missing_parameter_or_template_is_an_error(project: Path) -> None:
    doc = load_template(project / "template.yaml")
    del doc["Resources"]["Alpha"]["Properties"]["Parameters"]["Bucket"]
    with pytest.raises(NestedTemplateError, match="Alpha: parameter Bucket of nested is not given"):
        flatten(doc, project, load_template)
    (project / "nested" / "child.yaml").unlink()
    with pytest.raises(InvokeError, match="cannot read template"):
        flat(project)


def test_invoke_resolves_a_nested_function_by_either_name(project: Path) -> None:
    doc = load_template(project / "template.yaml")
    for name in ("AlphaFn", "Alpha/Fn"):
        spec = resolve_function(doc, name, project, {"AlphaFn": {"STORE": "s3://b/alpha"}})
        assert spec.logical_id == "AlphaFn" and spec.code_uri == (project / "functions" / "alpha").resolve()
        assert spec.layers == [(project / "layer").resolve()]
        assert spec.environment["STORE"] == "s3://b/alpha"  # env.json's entry, by the inlined id
        assert spec.environment["FROM_CHILD_GLOBALS"] == "alpha" and spec.environment["URL"] == "yes"
        assert "FROM_PARENT_GLOBALS" not in spec.environment, json.dumps(spec.environment)
