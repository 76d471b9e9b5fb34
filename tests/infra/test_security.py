"""The AWS deployment's security as its templates state it, checked offline: every route of the HTTP API is
authenticated (IAM by default, JWT by parameter, never anonymous) and throttled, function URLs take IAM only, every
IAM policy is least privilege (read from the roles' inline policies, the SAM translator's output and the AWS managed
policies they attach), every bucket aborts incomplete multipart uploads and refuses plain HTTP, and checkov finds
nothing that is not skipped with a reason. What each setting protects: docs/security-aws.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode
from moto.iam.aws_managed_policies import aws_managed_policies_data

from tests.infra.test_template import (
    MODEL_TEMPLATE,
    NO_VALUE,
    PSEUDO,
    ROOT,
    TEMPLATE,
    Intrinsics,
    as_list,
    load_sam,
    ref_id,
    translate,
)

ENDPOINT = ROOT / "infra" / "sagemaker" / "endpoint.yaml"
# endpoint.yaml's ImageUri has no default: a namespaced repository pinned by digest, the hardest form to parse
ENDPOINT_PARAMS = {"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/modelfn-gpu@sha256:0123abcd"}

# Actions whose API accepts no resource ARN, so "*" is the least a policy can name; each with why it is needed.
STAR_ONLY = {
    "xray:PutTraceSegments": "X-Ray has no resource types: the functions' and state machines' traces (Tracing)",
    "xray:PutTelemetryRecords": "X-Ray has no resource types: the tracing daemon's telemetry",
    "xray:GetSamplingRules": "X-Ray has no resource types: AWSXrayWriteOnlyAccess, SAM's for a traced state machine",
    "xray:GetSamplingTargets": "X-Ray has no resource types: AWSXrayWriteOnlyAccess, SAM's for a traced state machine",
    "xray:GetSamplingStatisticSummaries": "X-Ray has no resource types: AWSXrayWriteOnlyAccess, as above",
    "ecr:GetAuthorizationToken": "the registry login is account-wide: SageMaker's pull of the GPU image",
    "cloudwatch:PutMetricData": "metrics have no ARN (narrowed by a cloudwatch:namespace condition): the endpoint",
}


@dataclass(frozen=True)
class Grant:
    """One Allow statement and where it comes from."""

    where: str
    statement: dict[str, Any]

    def actions(self) -> list[str]:
        return [str(a) for a in as_list(self.statement["Action"])]


def parameter_values(template: dict[str, Any], **overrides: str) -> dict[str, Any]:
    """Parameter values as CloudFormation hands them to Ref: defaults (or overrides) as text, lists split."""
    values: dict[str, Any] = dict(PSEUDO)
    for name, p in template.get("Parameters", {}).items():
        raw = overrides.get(name, p.get("Default"))
        if raw is None:
            continue
        raw = str(raw)
        values[name] = raw.split(",") if p["Type"] == "CommaDelimitedList" else raw
    return values


def intrinsics(template: dict[str, Any], **overrides: str) -> Intrinsics:
    return Intrinsics(parameter_values(template, **overrides), template.get("Conditions", {}))


@cache
def managed_policies() -> dict[str, dict[str, Any]]:
    """AWS managed policy documents by ARN, as moto ships them (IAM itself would need credentials)."""
    data = json.loads(aws_managed_policies_data)
    return {f"arn:aws:iam::aws:policy{p['Path']}{name}": p["Document"] for name, p in data.items()}


def documents(resources: dict[str, Any], ev: Intrinsics) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, policy document) for every identity and resource policy among `resources`."""
    for lid, r in resources.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                yield f"{lid}/{p['PolicyName']}", p["PolicyDocument"]
            for arn in map(ev.text, props.get("ManagedPolicyArns", [])):
                assert arn in managed_policies(), f"{lid}: managed policy {arn} unknown, cannot check it"
                yield f"{lid}/{arn}", managed_policies()[arn]
        elif r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy"):
            yield lid, props["PolicyDocument"]
        elif r["Type"] == "AWS::SQS::QueuePolicy":
            yield lid, props["PolicyDocuments"]


def allows(resources: dict[str, Any], ev: Intrinsics) -> list[Grant]:
    return [
        Grant(where, st)
        for where, doc in documents(resources, ev)
        for st in as_list(doc["Statement"])
        if st["Effect"] == "Allow"
    ]


def least_privilege_violations(grants: list[Grant], ev: Intrinsics) -> list[str]:
    """What a least-privilege reviewer would reject in these Allow statements."""
    bad = []
    for g in grants:
        st = g.statement
        if "NotAction" in st or "NotResource" in st:
            bad.append(f"{g.where}: NotAction / NotResource in an Allow")
            continue
        if st.get("Principal") in ("*", {"AWS": "*"}):
            bad.append(f"{g.where}: allows anyone")
        bad += [f"{g.where}: wildcard action {a}" for a in g.actions() if "*" in a]
        for resource in map(ev.text, as_list(st.get("Resource", []))):
            if resource == "*":
                bad += [f"{g.where}: {a} on '*' (it takes a resource ARN)" for a in g.actions() if a not in STAR_ONLY]
            elif resource.startswith("arn:") and too_broad(resource):
                bad.append(f"{g.where}: {resource} is any region, account or resource")
    return bad


def too_broad(arn: str) -> bool:
    """Any region or account, or any resource of its type (`repository/*`, `log-group:*`, an S3 `*` bucket)."""
    _, _, service, region, account, rest = arn.split(":", 5)
    name = rest if service in ("s3", "sqs", "sns") else [*re.split("[:/]", rest, maxsplit=1), ""][1]
    return "*" in (region, account) or name.startswith("*")


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam()


@pytest.fixture(scope="module")
def res(sam: dict[str, Any]) -> dict[str, Any]:
    return dict(translate(sam)["Resources"])


@pytest.fixture(scope="module")
def endpoint() -> dict[str, Any]:
    parsed, problems = decode(str(ENDPOINT))
    assert not problems and parsed is not None, problems
    return dict(parsed)


# ---------------------------------------------------------------------------------------------------------------
# least privilege
def test_every_policy_in_both_templates_is_least_privilege(
    sam: dict[str, Any], res: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    ev = intrinsics(sam)
    grants = allows(res, ev)
    roles = [lid for lid, r in res.items() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 15 and len(grants) > 40  # 9 functions, 3 state machines, CodeDeploy (one per model)
    assert least_privilege_violations(grants, ev) == []
    ep = intrinsics(endpoint, **ENDPOINT_PARAMS)
    ep_grants = allows(endpoint["Resources"], ep)
    assert least_privilege_violations(ep_grants, ep) == []
    # every "*" left is one of the allow-listed APIs, and each of those is in use
    stars = {a for g in grants + ep_grants if "*" in as_list(g.statement["Resource"]) for a in g.actions()}
    assert stars == set(STAR_ONLY)


def test_the_checker_rejects_what_sams_default_roles_and_the_old_ecr_pull_granted(sam: dict[str, Any]) -> None:
    """The managed policies SAM attaches by default (logs, SQS, CodeDeploy) and an ECR pull on any repository."""
    ev = intrinsics(sam)
    arns = [
        f"arn:aws:iam::aws:policy/service-role/{name}"
        for name in ("AWSLambdaBasicExecutionRole", "AWSLambdaSQSQueueExecutionRole", "AWSCodeDeployRoleForLambda")
    ]
    defaults = {"SamDefaults": {"Type": "AWS::IAM::Role", "Properties": {"ManagedPolicyArns": arns}}}
    found = least_privilege_violations(allows(defaults, ev), ev)
    for action in (
        "logs:PutLogEvents",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "lambda:UpdateAlias",
        "s3:GetObject",
    ):
        assert any(f" {action} on '*'" in f for f in found), (action, found)
    ecr = {"Resource": {"Fn::Sub": "arn:${AWS::Partition}:ecr:*:*:repository/*"}, "Action": "ecr:BatchGetImage"}
    assert least_privilege_violations([Grant("Pull", ecr)], ev) == [
        "Pull: arn:aws:ecr:*:*:repository/* is any region, account or resource"
    ]
    assert least_privilege_violations([Grant("All", {"Action": "s3:*", "Resource": "arn:aws:s3:::b/*"})], ev) == [
        "All: wildcard action s3:*"
    ]
    public = {"Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    assert least_privilege_violations([Grant("Public", public)], ev) == ["Public: allows anyone"]


def test_each_function_has_its_own_role_writing_only_its_own_log_group(res: dict[str, Any]) -> None:
    functions = {lid: r["Properties"] for lid, r in res.items() if r["Type"] == "AWS::Lambda::Function"}
    assert len(functions) == 9
    roles = [p["Role"]["Fn::GetAtt"][0] for p in functions.values()]
    assert sorted(roles) == sorted(f"{lid}Role" for lid in functions)  # one each, none shared
    for lid, p in functions.items():
        role = res[f"{lid}Role"]["Properties"]
        assert "ManagedPolicyArns" not in role, lid
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
        group = ref_id(p["LoggingConfig"]["LogGroup"])
        assert res[group]["Properties"]["RetentionInDays"] > 0
        sts = [st for pol in role["Policies"] for st in pol["PolicyDocument"]["Statement"]]
        logs = [st for st in sts if any(a.startswith("logs:") for a in as_list(st["Action"]))]
        assert [(st["Action"], st["Resource"]) for st in logs] == [
            (["logs:CreateLogStream", "logs:PutLogEvents"], {"Fn::GetAtt": [group, "Arn"]})
        ], lid


def test_the_endpoint_role_pulls_only_its_own_images_repository(endpoint: dict[str, Any]) -> None:
    ep = intrinsics(endpoint, **ENDPOINT_PARAMS)
    (pull,) = (g for g in allows(endpoint["Resources"], ep) if g.statement.get("Sid") == "PullImage")
    assert [ep.text(r) for r in pull.statement["Resource"]] == [
        "arn:aws:ecr:us-east-1:123456789012:repository/team",
        "arn:aws:ecr:us-east-1:123456789012:repository/team/*",
    ]
    plain = intrinsics(endpoint, ImageUri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/modelfn-gpu:1.0")
    assert plain.text(pull.statement["Resource"][0]) == "arn:aws:ecr:eu-west-1:123456789012:repository/modelfn-gpu"


# ---------------------------------------------------------------------------------------------------------------
# who may call
def routes(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in res.items() if r["Type"] == "AWS::ApiGatewayV2::Route"}


def test_api_auth_is_iam_by_default_jwt_by_parameter_and_never_anonymous(sam: dict[str, Any]) -> None:
    param = sam["Parameters"]["ApiAuth"]
    assert (param["Default"], param["AllowedValues"]) == ("IAM", ["IAM", "JWT"])
    authorizer = sam["Resources"]["HttpApiJwtAuthorizer"]
    assert authorizer["Properties"]["AuthorizerType"] == "JWT"
    assert authorizer["Properties"]["IdentitySource"] == ["$request.header.Authorization"]
    assert authorizer["Properties"]["JwtConfiguration"] == {
        "Issuer": {"Ref": "JwtIssuer"},
        "Audience": {"Ref": "JwtAudience"},
    }
    expected = {"IAM": ("AWS_IAM", []), "JWT": ("JWT", ["<HttpApiJwtAuthorizer>"])}
    for choice, (auth_type, authorizer_ids) in expected.items():
        ev = intrinsics(sam, ApiAuth=choice)
        assert ev.condition(authorizer["Condition"]) is (choice == "JWT")
        for lid, r in routes(sam["Resources"]).items():
            p = ev.value(r["Properties"])
            assert (p["AuthorizationType"], as_list(p.get("AuthorizerId", []))) == (auth_type, authorizer_ids), lid


def test_every_route_of_every_api_is_authenticated(res: dict[str, Any]) -> None:
    """The HTTP API's routes are Route resources, each checked above: no API carries routes of its own in an OpenAPI
    body (where SAM events would add unauthenticated ones), and there is no other HTTP entry point."""
    assert len(routes(res)) == 35  # 29, and TorchServe's two per model function
    apis = [r for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    assert len(apis) == 1 and not {"Body", "BodyS3Location", "Target"} & set(apis[0]["Properties"])
    for lid, r in routes(res).items():
        assert r["Properties"]["AuthorizationType"] == {"Fn::If": ["UseJwtAuth", "JWT", "AWS_IAM"]}, lid
    types = {r["Type"] for r in res.values()}
    assert not {"AWS::ApiGateway::RestApi", "AWS::ElasticLoadBalancingV2::Listener", "AWS::AppSync::GraphQLApi"} & types


def test_jwt_cannot_be_chosen_without_issuer_and_audience(sam: dict[str, Any]) -> None:
    rule = sam["Rules"]["JwtNeedsIssuerAndAudience"]

    def passes(**values: str) -> bool:
        ev = intrinsics(sam, **values)
        return not ev.value(rule["RuleCondition"]) or all(ev.value(a["Assert"]) for a in rule["Assertions"])

    issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example"
    assert passes() and passes(ApiAuth="IAM")
    assert not passes(ApiAuth="JWT")
    assert not passes(ApiAuth="JWT", JwtIssuer=issuer)
    assert not passes(ApiAuth="JWT", JwtIssuer=issuer, JwtAudience="client,")
    assert passes(ApiAuth="JWT", JwtIssuer=issuer, JwtAudience="client-a,client-b")


def test_the_stage_throttles_every_route_by_parameter(sam: dict[str, Any], res: dict[str, Any]) -> None:
    stages = [r["Properties"] for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    assert len(stages) == 1 and stages[0]["StageName"] == "$default" and stages[0]["AutoDeploy"] is True
    assert stages[0]["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
    }
    assert "RouteSettings" not in stages[0]  # no route is exempted from the default
    for name, ceiling in (("ApiThrottlingRateLimit", 10000), ("ApiThrottlingBurstLimit", 5000)):
        p = sam["Parameters"][name]
        assert 1 <= p["MinValue"] <= p["Default"] <= p["MaxValue"] <= ceiling, name  # never 0 (closed), never unset
    assert "$context.identity.userArn" in stages[0]["AccessLogSettings"]["Format"]  # who called is logged
    assert "$context.authorizer.claims.sub" in stages[0]["AccessLogSettings"]["Format"]


def test_function_urls_take_iam_only_and_nothing_is_invocable_by_anyone(res: dict[str, Any]) -> None:
    urls = {lid: r["Properties"] for lid, r in res.items() if r["Type"] == "AWS::Lambda::Url"}
    assert sorted(urls) == ["IrisHttpFunctionUrl", "MlpImageFunctionUrl"]
    assert {p["AuthType"] for p in urls.values()} == {"AWS_IAM"}
    for lid, r in res.items():
        if r["Type"] == "AWS::Lambda::Permission":
            assert r["Properties"]["Principal"] != "*", lid
            # a service invokes it for this API only, or (S3 events, where SAM cannot name the bucket) this account
            assert {"SourceArn", "SourceAccount"} & set(r["Properties"]), lid


def test_reserved_concurrency_caps_every_function_unless_set_to_zero(sam: dict[str, Any], res: dict[str, Any]) -> None:
    functions = {lid: r["Properties"] for lid, r in res.items() if r["Type"] == "AWS::Lambda::Function"}
    for values, http, batch in (({}, "50", "80"), ({"HttpReservedConcurrency": "0"}, NO_VALUE, "80")):
        ev = intrinsics(sam, **values)
        for lid, p in functions.items():
            want = 1 if lid == "DriftFunction" else batch if "Batch" in lid else http  # drift: one run at a time
            assert ev.value(p["ReservedConcurrentExecutions"]) == want, lid


# ---------------------------------------------------------------------------------------------------------------
# buckets
def buckets(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in res.items() if r["Type"] == "AWS::S3::Bucket"}


def test_every_bucket_aborts_incomplete_multipart_uploads_after_a_day(res: dict[str, Any]) -> None:
    found = buckets(res)
    assert sorted(found) == ["AccessLogsBucket", "InputBucket", "ModelBucket", "ResultsBucket"]
    for lid, p in found.items():
        rules = [r for r in p["LifecycleConfiguration"]["Rules"] if "AbortIncompleteMultipartUpload" in r]
        assert len(rules) == 1, lid
        assert rules[0]["Status"] == "Enabled" and rules[0]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": 1
        }, lid
        assert not {"Prefix", "Filter", "TagFilters"} & set(rules[0]), f"{lid}: the rule must cover the whole bucket"


def test_every_bucket_is_private_versioned_logged_and_tls_only(res: dict[str, Any]) -> None:
    policies = {
        ref_id(r["Properties"]["Bucket"]): r["Properties"]["PolicyDocument"]["Statement"]
        for r in res.values()
        if r["Type"] == "AWS::S3::BucketPolicy"
    }
    for lid, p in buckets(res).items():
        assert all(p["PublicAccessBlockConfiguration"].values()) and len(p["PublicAccessBlockConfiguration"]) == 4
        assert p["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}, lid
        assert p["VersioningConfiguration"] == {"Status": "Enabled"}, lid
        if lid != "AccessLogsBucket":
            assert ref_id(p["LoggingConfiguration"]["DestinationBucketName"]) == "AccessLogsBucket", lid
        (deny,) = (st for st in policies[lid] if st["Effect"] == "Deny")
        assert (deny["Principal"], deny["Action"]) == ("*", "s3:*"), lid
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, lid
        assert deny["Resource"] == [{"Fn::GetAtt": [lid, "Arn"]}, {"Fn::Sub": f"${{{lid}.Arn}}/*"}], lid


# ---------------------------------------------------------------------------------------------------------------
# checkov
def checkov() -> str:
    """checkov lives in a venv of its own (`make install` makes .venv/checkov): it pins boto3, packaging and
    networkx to versions the development environment must not be downgraded to."""
    for candidate in (ROOT / ".venv" / "checkov" / "bin" / "checkov", Path(sys.executable).with_name("checkov")):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("checkov")
    if found is None:
        pytest.fail("checkov is not installed: `make install` puts it in .venv/checkov")
    return found


@pytest.mark.slow
def test_checkov_finds_nothing_and_every_skip_says_why() -> None:
    cmd = [checkov(), "--skip-download", "-o", "json", "-f", str(TEMPLATE), "-f", str(MODEL_TEMPLATE)]
    cmd += ["-f", str(ENDPOINT)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    reports = json.loads(p.stdout)
    (report,) = reports if isinstance(reports, list) else [reports]
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert (summary["failed"], summary["parsing_errors"], failed) == (0, 0, []), p.stderr[-2000:]
    assert summary["passed"] > 100
    skipped = report["results"]["skipped_checks"]
    files = {"template.yaml", "infra/model-function.yaml", "infra/sagemaker/endpoint.yaml"}
    assert {c["file_path"].lstrip("/") for c in skipped} == files
    for c in skipped:
        reason = c["check_result"].get("suppress_comment", "")
        assert len(reason) > 40 and reason != "No comment provided", (c["check_id"], c["resource"], reason)
