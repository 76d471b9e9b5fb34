"""infra/sagemaker/endpoint.yaml: cfn-lint clean, and it deploys what the container needs: the image with the
store and model in its environment, a role that can read only the store's prefix, a GPU endpoint, and target
tracking on invocations per instance."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "sagemaker" / "endpoint.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, problems = decode(str(TEMPLATE))
    assert not problems, problems
    assert parsed is not None
    return dict(parsed)


def cfn_lint() -> str:
    found = Path(sys.executable).with_name("cfn-lint")
    path = str(found) if found.exists() else shutil.which("cfn-lint")
    if path is None:
        pytest.fail("cfn-lint is not installed (pip install cfn-lint; it is in the dev extra)")
    return path


def test_cfn_lint_clean_including_informational() -> None:
    result = subprocess.run(
        [cfn_lint(), "--include-checks", "I", "--", str(TEMPLATE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_resources(template: dict[str, Any]) -> None:
    types = {name: r["Type"] for name, r in template["Resources"].items()}
    assert sorted(types.values()) == sorted(
        [
            "AWS::IAM::Role",
            "AWS::SageMaker::Model",
            "AWS::SageMaker::EndpointConfig",
            "AWS::SageMaker::Endpoint",
            "AWS::ApplicationAutoScaling::ScalableTarget",
            "AWS::ApplicationAutoScaling::ScalingPolicy",
        ]
    )


def test_model_container_environment(template: dict[str, Any]) -> None:
    model = template["Resources"]["Model"]["Properties"]
    container = model["PrimaryContainer"]
    assert container["Image"] == {"Ref": "ImageUri"}
    env = container["Environment"]
    assert env["MODELFN_STORE"] == {"Fn::Sub": "s3://${ModelBucketName}/${ModelPrefix}"}
    assert env["MODELFN_MODEL"] == {"Ref": "ModelName"}
    assert env["MODELFN_VERSION"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}  # unset unless given
    assert model["ExecutionRoleArn"] == {"Fn::GetAtt": ["ExecutionRole", "Arn"]}


def test_role_reads_only_the_store_prefix(template: dict[str, Any]) -> None:
    role = template["Resources"]["ExecutionRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    s3 = [s for s in statements if str(s["Action"]).startswith("s3:")]
    assert {s["Action"] for s in s3} == {"s3:GetObject", "s3:ListBucket"}
    get = next(s for s in s3 if s["Action"] == "s3:GetObject")
    assert get["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ModelBucketName}/${ModelPrefix}/*"}
    listing = next(s for s in s3 if s["Action"] == "s3:ListBucket")
    assert "s3:prefix" in listing["Condition"]["StringLike"]


def test_endpoint_config_and_scaling(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["InstanceType"]["Default"] == "ml.g5.xlarge"
    [variant] = template["Resources"]["EndpointConfig"]["Properties"]["ProductionVariants"]
    assert variant["InstanceType"] == {"Ref": "InstanceType"}
    assert variant["VariantName"] == "AllTraffic"
    endpoint = template["Resources"]["Endpoint"]["Properties"]
    assert endpoint["EndpointConfigName"] == {"Fn::GetAtt": ["EndpointConfig", "EndpointConfigName"]}
    target = template["Resources"]["ScalableTarget"]["Properties"]
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["ResourceId"] == {"Fn::Sub": "endpoint/${Endpoint.EndpointName}/variant/AllTraffic"}
    policy = template["Resources"]["InvocationsScalingPolicy"]["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == {"Ref": "TargetInvocationsPerInstance"}
    assert set(template["Outputs"]) >= {"EndpointName", "EndpointArn"}
