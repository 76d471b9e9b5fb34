"""template.yaml and the per-model template it nests (infra/model-function.yaml, one application per model): cfn-lint
reports nothing on either, the SAM translator turns each into CloudFormation without AWS credentials, and the two read
as one template (modelfn_tools.invoke_nested.flatten: each model's resources named <Model><LogicalId>) are wired as
the Lambda layout of the project says (layer, environment, handlers, SQS with partial batch failures and dead-letter
queues, S3 prefixes, SnapStart, canary deployments, Distributed Map, least-privilege IAM, the scheduled drift check),
and a function plus the layer stays under Lambda's 250 MB unzipped limit."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.invoke_nested import flatten
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
MODEL_TEMPLATE = ROOT / "infra" / "model-function.yaml"
MODELS = ("iris", "mlp", "ranker")
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
PSEUDO = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}


def cap(model: str) -> str:
    return model.capitalize()


class NoIamPolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader, which lists AWS managed policies through IAM (credentials,
    network). The template names managed policies by ARN only, so there is nothing to look up."""

    def load(self) -> dict[str, str]:
        return {}


def parse(path: Path) -> dict[str, Any]:
    return dict(yaml_parse(path.read_text()))


def load_sam() -> dict[str, Any]:
    """template.yaml with each model's nested application inlined (its resources named <Model><LogicalId>)."""
    return flatten(parse(TEMPLATE), ROOT, parse)


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam()


@pytest.fixture(scope="module")
def params(sam: dict[str, Any]) -> dict[str, Any]:
    return {name: p.get("Default") for name, p in sam["Parameters"].items()} | PSEUDO


def packaged(sam: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` hands CloudFormation: local CodeUri / ContentUri folders uploaded, replaced by S3 URIs."""
    t = copy.deepcopy(sam)
    function_globals = t.get("Globals", {}).get("Function", {})
    for props in [function_globals, *(r.get("Properties", {}) for r in t["Resources"].values())]:
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://sam-artifacts/{props[key].strip('/')}.zip"
            elif isinstance(props.get(key), dict) and "Bucket" not in props[key]:  # a path `sam build` resolves
                props[key] = f"s3://sam-artifacts/{hashlib.sha256(json.dumps(props[key]).encode()).hexdigest()}.zip"
    return t


def translate(sam: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template the SAM transform makes of `sam`, offline."""
    with pytest.MonkeyPatch.context() as mp:  # the translator wants a region (for ARNs), nothing else
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_REGION", raising=False)
        return dict(transform(packaged(sam), {}, NoIamPolicyLoader()))


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    return translate(sam)


@pytest.fixture(scope="module")
def res(cfn: dict[str, Any]) -> dict[str, Any]:
    return dict(cfn["Resources"])


NO_VALUE = object()  # AWS::NoValue: the property or list item is dropped


class Intrinsics:
    """Evaluates a template's intrinsic functions over given parameter values, as CloudFormation would (Ref,
    Fn::Sub / Join / Select / Split / If, and the condition functions); a reference to a resource stays symbolic,
    <LogicalId> or <LogicalId.Attribute>, which is all a static check needs."""

    def __init__(self, params: dict[str, Any], conditions: dict[str, Any] | None = None) -> None:
        self.params = params
        self.conditions = conditions or {}
        self.functions: dict[str, Callable[[Any], Any]] = {
            "Ref": lambda a: NO_VALUE if a == "AWS::NoValue" else self.params.get(a, f"<{a}>"),
            "Fn::GetAtt": lambda a: "<{}>".format(".".join(a) if isinstance(a, list) else a),
            "Fn::Sub": self._sub,
            "Fn::Join": lambda a: self.text(a[0]).join(map(self.text, self.value(a[1]))),
            "Fn::Select": lambda a: self.value(a[1])[int(self.text(a[0]))],
            "Fn::Split": lambda a: self.text(a[1]).split(self.text(a[0])),
            "Fn::If": lambda a: self.value(a[1] if self.condition(a[0]) else a[2]),
            "Condition": self.condition,
            "Fn::Equals": lambda a: self.text(a[0]) == self.text(a[1]),
            "Fn::Not": lambda a: not self.value(a[0]),
            "Fn::And": lambda a: all(map(self.value, a)),
            "Fn::Or": lambda a: any(map(self.value, a)),
            "Fn::Contains": lambda a: self.value(a[1]) in self.value(a[0]),
        }

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in map(self.value, node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn in self.functions and (fn != "Condition" or isinstance(arg, str)):  # not an IAM Condition block
                return self.functions[fn](arg)
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, local = (arg, {}) if isinstance(arg, str) else arg
        names = {k: self.text(v) for k, v in self.params.items()} | {k: self.text(v) for k, v in local.items()}
        return re.sub(r"\$\{([^}!]+)\}", lambda m: names.get(m.group(1), f"<{m.group(1)}>"), text)

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))

    def text(self, node: Any) -> str:
        v = self.value(node)
        return v if isinstance(v, str) else json.dumps(v)


def sub(value: Any, params: dict[str, Any]) -> str:
    """Resolve a Fn::Sub / Ref over parameters and pseudo parameters; other references become <LogicalId>."""
    return Intrinsics(params).text(value)


def statements(res: dict[str, Any], role: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in res[role]["Properties"].get("Policies", []):
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def ref_id(v: Any) -> str:
    assert isinstance(v, dict) and "Ref" in v, v
    return str(v["Ref"])


def zip_functions(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        lid: r["Properties"]
        for lid, r in res.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("PackageType") != "Image"
    }


# ---------------------------------------------------------------------------------------------------------------
def cfn_lint(*templates: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "cfn-lint"
    assert exe.exists(), f"{exe} missing: cfn-lint is in the dev extra (pip install -e '.[dev]')"
    cmd = [str(exe), *map(str, templates)]
    return subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cfn_lint_reports_nothing() -> None:
    p = cfn_lint(TEMPLATE, MODEL_TEMPLATE)
    assert (p.returncode, p.stdout.strip()) == (0, ""), p.stdout + p.stderr


def test_samconfig_deploys_nested_applications_with_their_capabilities() -> None:
    """Without CAPABILITY_AUTO_EXPAND, CloudFormation refuses a template with nested applications."""
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    capabilities = config["default"]["deploy"]["parameters"]["capabilities"].split()
    assert sorted(capabilities) == ["CAPABILITY_AUTO_EXPAND", "CAPABILITY_IAM"]
    assert config["default"]["validate"]["parameters"]["lint"] is True
    assert any(r["Type"] == "AWS::Serverless::Application" for r in parse(TEMPLATE)["Resources"].values())


def test_each_template_translates_as_deployed_and_a_model_is_one_short_block() -> None:
    """What CloudFormation gets: the root with one nested stack per model, and the model template on its own."""
    root = parse(TEMPLATE)
    apps = {lid: r for lid, r in root["Resources"].items() if r["Type"] == "AWS::Serverless::Application"}
    models = {lid: a for lid, a in apps.items() if a["Properties"]["Location"] == "infra/model-function.yaml"}
    assert sorted(models) == [cap(m) for m in sorted(MODELS)]
    assert [a["Properties"]["Parameters"]["ModelName"] for a in models.values()] == list(MODELS)
    assert all("Condition" not in a for a in models.values())
    # no model-specific resource is left in the root: every function there is the image, the GPU proxy or drift
    functions = [lid for lid, r in root["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert sorted(functions) == ["DriftFunction", "HeavyMlpHttpFunction", "MlpImageFunction"]
    stacks = {lid: r for lid, r in translate(root)["Resources"].items() if r["Type"] == "AWS::CloudFormation::Stack"}
    assert set(models) <= set(stacks)
    for lid in models:
        assert stacks[lid]["Properties"]["Parameters"]["ModelName"] == lid.lower()
    child = translate(parse(MODEL_TEMPLATE))["Resources"]
    assert {"HttpFunction", "BatchFunction", "Queue", "BatchStateMachine", "DriftAlarm"} <= set(child)
    # a model's block in the root: its application and its S3 notification
    text = TEMPLATE.read_text().splitlines()
    start = text.index("  Ranker:")
    block = text[start : text.index("", start)]
    notification = [line for line in text if "Ranker.Outputs.BatchFunctionAlias" in line or "}ranker/" in line]
    version = text[text.index("  RankerModelVersion:") :][:4]
    assert version[-1].startswith("    Description:")
    lines = len(block) + len(notification) + 1 + len(version)
    print(f"one model in template.yaml: {lines} lines (application, S3 notification, version parameter)")
    assert lines < 40


def test_translates_to_the_expected_resources(sam: dict[str, Any], res: dict[str, Any]) -> None:
    assert sam["Transform"] == "AWS::Serverless-2016-10-31"
    assert "Transform" not in json.dumps([r["Type"] for r in res.values()])
    for m in MODELS:
        mc = cap(m)
        for lid, typ in {
            f"{mc}HttpFunction": "AWS::Lambda::Function",
            f"{mc}BatchFunction": "AWS::Lambda::Function",
            f"{mc}HttpFunctionAliaslive": "AWS::Lambda::Alias",
            f"{mc}BatchFunctionAliaslive": "AWS::Lambda::Alias",
            f"{mc}Queue": "AWS::SQS::Queue",
            f"{mc}DeadLetterQueue": "AWS::SQS::Queue",
            f"{mc}BatchFunctionQueue": "AWS::Lambda::EventSourceMapping",
            f"{mc}BatchStateMachine": "AWS::StepFunctions::StateMachine",
            f"{mc}HttpFunctionDeploymentGroup": "AWS::CodeDeploy::DeploymentGroup",
            f"{mc}BatchFunctionDeploymentGroup": "AWS::CodeDeploy::DeploymentGroup",
        }.items():
            assert res[lid]["Type"] == typ, lid
    assert res["MlpImageFunction"]["Properties"]["PackageType"] == "Image"
    assert res["HttpApi"]["Type"] == "AWS::ApiGatewayV2::Api"
    layers = [lid for lid, r in res.items() if r["Type"] == "AWS::Lambda::LayerVersion"]
    assert len(layers) == 1 and layers[0].startswith("ModelfnLayer")
    assert res[layers[0]]["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert sam["Resources"]["ModelfnLayer"]["Metadata"]["BuildMethod"] == "python3.12"
    assert sam["Resources"]["ModelfnLayer"]["Properties"]["ContentUri"] == "layers/modelfn/"


def test_functions_have_layer_runtime_handlers_and_environment(
    sam: dict[str, Any], res: dict[str, Any], params: dict[str, Any]
) -> None:
    fns = {lid: p for lid, p in zip_functions(res).items() if not lid.startswith(("Heavy", "Drift"))}
    assert sorted(fns) == sorted(f"{cap(m)}{kind}Function" for m in MODELS for kind in ("Http", "Batch"))
    layer = next(lid for lid, r in res.items() if r["Type"] == "AWS::Lambda::LayerVersion")
    for m in MODELS:
        for kind, handler in (("Http", "http_handler"), ("Batch", "batch_handler")):
            lid = f"{cap(m)}{kind}Function"
            p = fns[lid]
            assert p["Runtime"] == "python3.12" and p["Architectures"] == ["x86_64"], lid
            assert p["Handler"] == f"app.{handler}", lid
            assert p["Layers"] == [{"Ref": layer}], lid
            assert p["TracingConfig"] == {"Mode": "Active"}, lid
            assert sam["Resources"][lid]["Properties"]["CodeUri"] == f"functions/{m}/", lid
            variables = p["Environment"]["Variables"]
            env: dict[str, Any] = {
                k: v if isinstance(v, dict) and "Fn::If" in v else sub(v, params) for k, v in variables.items()
            }
            assert env["MODELFN_STORE"] == "s3://<ModelBucket>/models", lid
            assert env["MODELFN_RESULTS"] == "s3://<ResultsBucket>/results", lid
            assert env["MODELFN_MODEL"] == m and env["POWERTOOLS_SERVICE_NAME"] == m, lid
            assert env["POWERTOOLS_METRICS_NAMESPACE"] == "modelfn", lid
            assert env["MODELFN_VERSION"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}, lid  # unset unless given
            if kind == "Batch":
                assert env["MODELFN_INPUT_PREFIX"] == f"incoming/{m}/", lid
                # SQS request_uri is followed only under requests/ of the input bucket, which the policy lets it read
                assert env["MODELFN_REQUESTS_PREFIX"] == "s3://modelfn-prod-input-123456789012-us-east-1/requests", lid
                assert p["Timeout"] == 900, lid
            else:
                assert p["Timeout"] < 30 and p["MemorySize"] == {"Ref": "HttpMemorySize"}, lid
            # the handler the template names exists in the function's module
            app = ROOT / "functions" / m / "app.py"
            assert app.exists(), app
            names = {
                t.id
                for node in ast.parse(app.read_text()).body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            }
            assert handler in names, f"{app} defines no {handler}"
    assert params["HttpMemorySize"] == 1769


def test_sqs_event_sources_report_batch_item_failures_and_queues_redrive(res: dict[str, Any]) -> None:
    for m in MODELS:
        mc = cap(m)
        mappings = [
            r["Properties"]
            for r in res.values()
            if r["Type"] == "AWS::Lambda::EventSourceMapping"
            and r["Properties"]["FunctionName"] == {"Ref": f"{mc}BatchFunctionAliaslive"}
        ]
        assert len(mappings) == 1, m
        esm = mappings[0]
        assert esm["EventSourceArn"] == {"Fn::GetAtt": [f"{mc}Queue", "Arn"]}
        assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert 1 <= esm["BatchSize"] <= 10
        assert 0 < esm["MaximumBatchingWindowInSeconds"] <= 300
        queue = res[f"{mc}Queue"]["Properties"]
        redrive = queue["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [f"{mc}DeadLetterQueue", "Arn"]}
        assert 1 <= redrive["maxReceiveCount"] <= 10
        timeout = res[f"{mc}BatchFunction"]["Properties"]["Timeout"]
        assert queue["VisibilityTimeout"] >= 6 * timeout + esm["MaximumBatchingWindowInSeconds"]
        assert queue["VisibilityTimeout"] <= 43200  # SQS maximum
        dlq = res[f"{mc}DeadLetterQueue"]["Properties"]
        assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]  # a message outlives its retries
        # the event source polls with the function's own role, which may consume this queue and no other
        role = res[f"{mc}BatchFunctionRole"]["Properties"]
        assert "ManagedPolicyArns" not in role  # AWSLambdaSQSQueueExecutionRole would allow every queue
        assert res[f"{mc}BatchFunction"]["Properties"]["Role"] == {"Fn::GetAtt": [f"{mc}BatchFunctionRole", "Arn"]}
        consume = [
            st for st in statements(res, f"{mc}BatchFunctionRole") if "sqs:ReceiveMessage" in as_list(st["Action"])
        ]
        assert [(sorted(as_list(st["Action"])), st["Resource"]) for st in consume] == [
            (
                ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"],
                {"Fn::GetAtt": [f"{mc}Queue", "Arn"]},
            )
        ]


def test_s3_notifications_have_disjoint_prefixes_and_never_touch_the_results_bucket(
    res: dict[str, Any], params: dict[str, Any]
) -> None:
    configs = res["InputBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    prefixes: dict[str, str] = {}
    for c in configs:
        assert c["Event"] == "s3:ObjectCreated:*"
        (rule,) = c["Filter"]["S3Key"]["Rules"]
        assert rule["Name"] == "prefix"
        prefixes[ref_id(c["Function"])] = sub(rule["Value"], params)
    assert prefixes == {f"{cap(m)}BatchFunctionAliaslive": f"incoming/{m}/" for m in MODELS}
    values = list(prefixes.values())
    assert not [(a, b) for a in values for b in values if a != b and a.startswith(b)], "prefixes overlap"
    # every bucket with notifications is the input bucket; results are written elsewhere, under no input prefix
    notified = [lid for lid, r in res.items() if "NotificationConfiguration" in r.get("Properties", {})]
    assert notified == ["InputBucket"]
    assert "NotificationConfiguration" not in res["ResultsBucket"]["Properties"]
    input_name = sub(res["InputBucket"]["Properties"]["BucketName"], params)
    for m in MODELS:
        env = res[f"{cap(m)}BatchFunction"]["Properties"]["Environment"]["Variables"]
        assert "ResultsBucket" in json.dumps(env["MODELFN_RESULTS"]) and "InputBucket" not in json.dumps(env)
        for st in statements(res, f"{cap(m)}BatchFunctionRole"):
            writes = [a for a in as_list(st["Action"]) if a.startswith("s3:Put")]
            for resource in as_list(st["Resource"]) if writes else []:
                arn = sub(resource, params)
                assert arn == f"arn:aws:s3:::<ResultsBucket>/results/{m}/*", arn
                assert input_name not in arn
    for r in res.values():  # nothing is ever written to the input bucket by the stack's roles
        if r["Type"] == "AWS::IAM::Role":
            for policy in r["Properties"].get("Policies", []):
                for st in policy["PolicyDocument"]["Statement"]:
                    if any(a.startswith("s3:Put") for a in as_list(st["Action"])):
                        assert input_name not in json.dumps([sub(x, params) for x in as_list(st["Resource"])])


def test_iam_is_scoped_to_each_models_prefixes(res: dict[str, Any], params: dict[str, Any]) -> None:
    for m in MODELS:
        for kind in ("Http", "Batch"):
            sts = statements(res, f"{cap(m)}{kind}FunctionRole")
            s3 = [st for st in sts if any(a.startswith("s3:") for a in as_list(st["Action"]))]
            assert s3, m
            for st in s3:
                assert st["Effect"] == "Allow"
                assert "*" not in as_list(st["Action"]) and "s3:*" not in as_list(st["Action"])
                for resource in as_list(st["Resource"]):
                    arn = sub(resource, params)
                    assert arn != "*"
                    if as_list(st["Action"]) == ["s3:ListBucket"]:
                        assert arn == "arn:aws:s3:::<ModelBucket>"
                        assert st["Condition"]["StringLike"]["s3:prefix"] == [
                            {"Fn::Sub": "${ModelPrefix}/"},
                            {"Fn::Sub": f"${{ModelPrefix}}/{m}/*"},
                        ]
                    else:
                        assert f"/{m}/*" in arn or arn.endswith("/requests/*"), arn
            reads = {sub(r, params) for st in s3 if st["Action"] == "s3:GetObject" for r in as_list(st["Resource"])}
            assert f"arn:aws:s3:::<ModelBucket>/models/{m}/*" in reads
            if kind == "Http":
                assert {a for st in s3 for a in as_list(st["Action"])} == {
                    "s3:GetObject",
                    "s3:ListBucket",
                    "s3:PutObject",
                }
                # it writes its own captures only (the drift check reads them)
                captures = [
                    sub(r, params)
                    for st in s3
                    if "s3:PutObject" in as_list(st["Action"])
                    for r in as_list(st["Resource"])
                ]
                assert captures == [f"arn:aws:s3:::<ResultsBucket>/capture/{m}/*"]
            else:
                assert f"arn:aws:s3:::modelfn-prod-input-123456789012-us-east-1/incoming/{m}/*" in reads
                writes = next(st for st in s3 if "s3:PutObject" in as_list(st["Action"]))
                assert set(writes["Action"]) == {
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                }


def test_buckets_are_private_encrypted_and_the_model_bucket_versioned(res: dict[str, Any]) -> None:
    for lid in ("ModelBucket", "InputBucket", "ResultsBucket"):
        p = res[lid]["Properties"]
        assert all(p["PublicAccessBlockConfiguration"][k] for k in ("BlockPublicAcls", "BlockPublicPolicy"))
        assert all(p["PublicAccessBlockConfiguration"][k] for k in ("IgnorePublicAcls", "RestrictPublicBuckets"))
        assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert res["ModelBucket"]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert res["ModelBucket"]["DeletionPolicy"] == "Retain"


def test_snapstart_on_http_functions_and_canary_deployments_with_rollback_alarms(res: dict[str, Any]) -> None:
    for m in MODELS:
        mc = cap(m)
        assert res[f"{mc}HttpFunction"]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        # SnapStart's limits: no ephemeral storage above 512 MB
        assert res[f"{mc}HttpFunction"]["Properties"].get("EphemeralStorage", {"Size": 512})["Size"] <= 512
        for kind in ("Http", "Batch"):
            fn = f"{mc}{kind}Function"
            alias = res[f"{fn}Aliaslive"]
            assert alias["Properties"]["Name"] == "live"
            update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
            assert update["DeploymentGroupName"] == {"Ref": f"{fn}DeploymentGroup"}
            group = res[f"{fn}DeploymentGroup"]["Properties"]
            assert "Canary10Percent5Minutes" in json.dumps(group["DeploymentConfigName"])
            assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
            assert group["AlarmConfiguration"]["Enabled"] is True
            alarms = [ref_id(a["Name"]) for a in group["AlarmConfiguration"]["Alarms"]]
            metrics = set()
            for a in alarms:
                alarm = res[a]["Properties"]
                metrics.add(alarm["MetricName"])
                dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
                assert dims["FunctionName"] == {"Ref": fn}
                assert dims["Resource"] == {"Fn::Sub": f"${{{fn}}}:live"}
                version = dims["ExecutedVersion"]["Fn::GetAtt"]  # the new version only
                assert res[version[0]]["Type"] == "AWS::Lambda::Version" and version[1] == "Version"
            assert metrics == {"Errors", "Duration"}, fn
    image = res["MlpImageFunction"]["Properties"]
    assert "SnapStart" not in image and "Layers" not in image and "Runtime" not in image
    assert image["ImageConfig"]["Command"] == ["app.http_handler"]


def test_image_function_is_built_from_the_lambda_image_folder(sam: dict[str, Any]) -> None:
    fn = sam["Resources"]["MlpImageFunction"]
    assert fn["Properties"]["PackageType"] == "Image"
    # the build context is the repository: the image copies layers/modelfn/ and functions/<FUNCTION>/
    assert fn["Metadata"]["DockerContext"] == "."
    assert fn["Metadata"]["Dockerfile"] == "infra/lambda-image/Dockerfile"
    assert fn["Metadata"]["DockerBuildArgs"] == {"FUNCTION": "mlp"}
    assert (ROOT / fn["Metadata"]["Dockerfile"]).is_file()


def api_routes(res: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the function whose live alias the route integrates."""
    routes = {}
    for r in res.values():
        if r["Type"] != "AWS::ApiGatewayV2::Route":
            continue
        assert r["Properties"]["ApiId"] == {"Ref": "HttpApi"}
        method, path = r["Properties"]["RouteKey"].split(" ")
        (integration,) = re.findall(r"^integrations/\$\{(\w+)\}$", r["Properties"]["Target"]["Fn::Sub"])
        target = res[integration]["Properties"]
        assert target["ApiId"] == {"Ref": "HttpApi"}
        assert (target["IntegrationType"], target["PayloadFormatVersion"]) == ("AWS_PROXY", "2.0")
        (alias,) = re.findall(r"^(\w+)Aliaslive$", ref_id(target["IntegrationUri"]))
        assert (method, path) not in routes, (method, path)
        routes[(method, path)] = alias
    return routes


def test_http_api_may_invoke_each_routed_alias_and_nothing_else(res: dict[str, Any]) -> None:
    """One permission per routed function: its live alias, for this API's execute-api ARN only."""
    routed = sorted(set(api_routes(res).values()))
    granted: dict[str, int] = {}
    for r in res.values():
        p = r["Properties"]
        if r["Type"] == "AWS::Lambda::Permission" and p["Principal"] == "apigateway.amazonaws.com":
            assert p["Action"] == "lambda:InvokeFunction"
            assert p["SourceArn"] == {
                "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*"
            }
            (fn,) = re.findall(r"^(\w+)Aliaslive$", ref_id(p["FunctionName"]))
            granted[fn] = granted.get(fn, 0) + 1
    assert granted == dict.fromkeys(routed, 1)


def test_http_api_routes_each_model_to_its_function_and_server_routes_to_the_default(res: dict[str, Any]) -> None:
    routes = api_routes(res)
    for m in MODELS:
        fn = f"{cap(m)}HttpFunction"
        for key in (
            ("ANY", f"/v2/models/{m}"),
            ("ANY", f"/v2/models/{m}/{{proxy+}}"),
            ("ANY", f"/v1/models/{m}"),
            ("ANY", f"/v1/models/{m}/{{proxy+}}"),
            ("POST", f"/v1/models/{m}:predict"),
            ("POST", f"/predictions/{m}"),
            ("POST", f"/predictions/{m}/{{version}}"),
        ):
            assert routes.pop(key) == fn, key
    for key in (
        ("GET", "/v2"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/health"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/predict"),
        ("ANY", "/v2/models/{proxy+}"),
        ("ANY", "/v1/models/{proxy+}"),
    ):
        assert routes.pop(key) == "IrisHttpFunction", key
    for key in (  # the heavy model: same routes, forwarded to its SageMaker endpoint
        ("ANY", "/v2/models/mlp-gpu"),
        ("ANY", "/v2/models/mlp-gpu/{proxy+}"),
        ("ANY", "/v1/models/mlp-gpu"),
        ("ANY", "/v1/models/mlp-gpu/{proxy+}"),
        ("POST", "/v1/models/mlp-gpu:predict"),
    ):
        assert routes.pop(key) == "HeavyMlpHttpFunction", key
    assert routes == {}


def test_heavy_model_function_forwards_to_its_endpoint_only(sam: dict[str, Any], res: dict[str, Any]) -> None:
    p = zip_functions(res)["HeavyMlpHttpFunction"]
    assert p["Handler"] == "index.http_handler" and p["Runtime"] == "python3.12"
    assert "sagemaker_proxy import http_handler" in sam["Resources"]["HeavyMlpHttpFunction"]["Properties"]["InlineCode"]
    env = p["Environment"]["Variables"]
    assert env["MODELFN_SAGEMAKER_ENDPOINT"] == {"Ref": "HeavyMlpEndpointName"}
    assert p["Role"] == {"Fn::GetAtt": ["HeavyMlpHttpFunctionRole", "Arn"]}
    sts = [st for st in statements(res, "HeavyMlpHttpFunctionRole") if st["Sid"] not in ("WriteOwnLogs", "WriteTraces")]
    assert [st["Action"] for st in sts] == ["sagemaker:InvokeEndpoint"]
    assert "endpoint/${HeavyMlpEndpointName}" in sts[0]["Resource"]["Fn::Sub"]


def test_http_api_route_paths_are_valid_route_keys(res: dict[str, Any]) -> None:
    """HTTP API: a path variable is a whole segment ({name}), a greedy one ({name+}) only the last segment."""
    for _, path in api_routes(res):
        assert path.startswith("/") and (path == "/" or not path.endswith("/")), path
        segments = path.strip("/").split("/")
        for i, seg in enumerate(segments):
            assert seg, path
            if "{" in seg or "}" in seg:
                m = re.fullmatch(r"\{[A-Za-z0-9_.-]+(\+?)\}", seg)
                assert m, f"{path}: partial-segment variable {seg!r}"
                assert not m.group(1) or i == len(segments) - 1, f"{path}: greedy variable not last"
            else:
                assert re.fullmatch(r"[A-Za-z0-9._~:@!$&'()*+,;=-]+", seg), f"{path}: {seg!r}"  # RFC 3986 pchar


def state_machine_definition(res: dict[str, Any], lid: str) -> dict[str, Any]:
    sep, lines = res[lid]["Properties"]["DefinitionString"]["Fn::Join"]
    return dict(json.loads(sep.join(lines)))


def test_distributed_map_reads_csv_batches_into_the_batch_function(res: dict[str, Any], params: dict[str, Any]) -> None:
    for m in MODELS:
        mc = cap(m)
        lid = f"{mc}BatchStateMachine"
        props = res[lid]["Properties"]
        assert props["DefinitionSubstitutions"]["BatchFunctionArn"] == {"Ref": f"{mc}BatchFunctionAliaslive"}
        assert props["DefinitionSubstitutions"]["ResultsBucket"] == {"Ref": "ResultsBucket"}
        d = state_machine_definition(res, lid)
        (state,) = d["States"].values()
        assert state["Type"] == "Map"
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
        assert state["ItemReader"]["ReaderConfig"] == {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
        assert 1 < state["ItemBatcher"]["MaxItemsPerBatch"] <= 5000
        assert state["ItemBatcher"]["MaxInputBytesPerBatch"] <= 256 * 1024
        assert set(state["ItemBatcher"]["BatchInput"]) == {"bucket.$", "key.$"}
        task = state["ItemProcessor"]["States"][state["ItemProcessor"]["StartAt"]]
        assert task["Resource"] == "arn:aws:states:::lambda:invoke"
        assert task["Parameters"]["FunctionName"] == "${BatchFunctionArn}"
        assert task["Parameters"]["Payload"] == {"Items.$": "$.Items", "BatchInput.$": "$.BatchInput"}
        assert state["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
        assert state["ResultWriter"]["Parameters"]["Bucket"] == "${ResultsBucket}"
        # least privilege: its own batch function, its own input prefix, its own results prefix, its own children
        sts = statements(res, f"{lid}Role")
        invoke = [st for st in sts if "lambda:InvokeFunction" in as_list(st["Action"])]
        assert [st["Resource"] for st in invoke] == [{"Ref": f"{mc}BatchFunctionAliaslive"}]
        arns = sorted(sub(r, params) for st in sts if st is not invoke[0] for r in as_list(st["Resource"]))
        name = sub(props["StateMachineName"], params)
        # the input bucket is named, not referenced: its S3 notification depends on the model's stack
        assert arns == sorted(
            [
                f"arn:aws:s3:::modelfn-prod-input-123456789012-us-east-1/incoming/{m}/*",
                f"arn:aws:s3:::<ResultsBucket>/results/{m}/distributed-map/*",
                f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}",
                f"arn:aws:states:us-east-1:123456789012:execution:{name}/*",
            ]
        )


def test_outputs_and_env_json_cover_every_function(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]
    assert "ApiUrl" in outputs
    for name in ("ModelBucketName", "InputBucketName", "ResultsBucketName"):
        assert name in outputs
    for m in MODELS:
        mc = cap(m)
        assert outputs[f"{mc}QueueUrl"]["Value"] == {"Ref": f"{mc}Queue"}
        assert outputs[f"{mc}BatchStateMachineArn"]["Value"] == {"Ref": f"{mc}BatchStateMachine"}
    env = json.loads((ROOT / "env.json").read_text())
    functions = [lid for lid, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 9
    want = {"MODELFN_STORE": "s3://modelfn-models/models", "MODELFN_RESULTS": "s3://modelfn-results/results"}
    assert env["Parameters"] == want
    for lid in functions:
        batch = {"MODELFN_REQUESTS_PREFIX": "s3://modelfn-input/requests"} if lid.endswith("BatchFunction") else {}
        drift = {"MODELFN_CAPTURE": "s3://modelfn-results/capture"} if lid == "DriftFunction" else {}
        assert env[lid] == want | batch | drift, lid


# ---------------------------------------------------------------------------------------------------------------
NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ProxyError",
    "ConnectTimeoutError",
    "Max retries exceeded",
)
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there, and onnxruntime
# publishes nothing older for CPython 3.12, so both tags are allowed (SAM's cross-platform builds do the same).
PLATFORM_ARGS = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]


def tree_bytes(path: Path) -> int:
    """Bytes of the files under path, as they would be unzipped."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="session")
def layer_site_packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layer's requirements installed for Lambda (x86_64, CPython 3.12), as a cross-platform build does;
    cached under .pytest_cache, keyed by the requirements and the pip arguments."""
    requirements = ROOT / "layers" / "modelfn" / "requirements.txt"
    # --no-compile: Lambda's build unpacks wheels without byte-compiling them
    args = [*PLATFORM_ARGS, "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", "--no-compile"]
    key = hashlib.sha256(requirements.read_bytes() + " ".join(args).encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    base = cache.mkdir("modelfn-layer-build") if cache is not None else tmp_path_factory.mktemp("layer-build")
    target = base / key
    done = target / ".complete"
    if done.exists():
        return target
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts"]
    cmd += ["--target", str(target / "python"), *args, "-r", str(requirements)]
    env = dict(os.environ, PIP_NO_INPUT="1")
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900, env=env)
    if p.returncode != 0:
        out = p.stdout + p.stderr
        if any(marker in out for marker in NETWORK_ERRORS):
            pytest.skip(f"pip cannot reach the package index to build the layer for measuring: {out.strip()[-300:]}")
        pytest.fail(f"pip could not install the layer's requirements for manylinux x86_64 / cp312:\n{out[-3000:]}")
    done.write_text("ok\n")
    return target


@pytest.mark.slow
def test_function_plus_layer_fits_lambdas_unzipped_limit(layer_site_packages: Path) -> None:
    deps = tree_bytes(layer_site_packages / "python")
    assert (layer_site_packages / "python" / "onnxruntime").is_dir() and deps > 10 * 1024 * 1024
    package = tree_bytes(ROOT / "layers" / "modelfn")  # the layer's ContentUri, copied whole by the build
    for m in MODELS:
        function = tree_bytes(ROOT / "functions" / m)
        total = deps + package + function
        print(
            f"{m}: layer deps {deps / 2**20:.1f} MB + layers/modelfn {package / 2**20:.2f} MB + "
            f"functions/{m} {function / 2**20:.3f} MB = {total / 2**20:.1f} MB (limit 250 MB)"
        )
        assert total < LAMBDA_UNZIPPED_LIMIT, f"{m}: {total / 2**20:.1f} MB unzipped"


# ---------------------------------------------------------------------------------------------------------------
# drift
def test_drift_function_runs_the_layers_check_on_a_schedule_with_its_parameters(
    sam: dict[str, Any], res: dict[str, Any], params: dict[str, Any]
) -> None:
    p = zip_functions(res)["DriftFunction"]
    assert p["Handler"] == "modelfn.monitoring.scheduled.handler" and p["Runtime"] == "python3.12"
    layer = next(lid for lid, r in res.items() if r["Type"] == "AWS::Lambda::LayerVersion")
    assert p["Layers"] == [{"Ref": layer}]
    env = {k: sub(v, params) for k, v in p["Environment"]["Variables"].items()}
    assert env["MODELFN_STORE"] == "s3://<ModelBucket>/models"
    assert env["MODELFN_CAPTURE"] == "s3://<ResultsBucket>/capture"  # where every model's HTTP function captures
    assert env["MODELFN_DRIFT_MODELS"].split(",") == list(MODELS)
    assert env["MODELFN_DRIFT_THRESHOLD"] == "0.2" and params["DriftThreshold"] == 0.2
    for m in MODELS:  # the same capture location the models write
        http = res[f"{cap(m)}HttpFunction"]["Properties"]["Environment"]["Variables"]
        assert sub(http["MODELFN_CAPTURE"], params) == env["MODELFN_CAPTURE"], m
        assert sub(http["MODELFN_CAPTURE_PERCENT"], params) == "10", m
    assert p["Timeout"] == 900 and p["ReservedConcurrentExecutions"] == 1  # one run at a time
    (rule,) = [r["Properties"] for r in res.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["ScheduleExpression"] == {"Ref": "DriftSchedule"} and params["DriftSchedule"] == "rate(1 hour)"
    assert rule.get("State", "ENABLED") == "ENABLED" and [t["Arn"] for t in rule["Targets"]] == [
        {"Ref": "DriftFunctionAliaslive"}
    ]
    (invoke,) = [
        r["Properties"]
        for r in res.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["Principal"] == "events.amazonaws.com"
    ]
    assert invoke["FunctionName"] == {"Ref": "DriftFunctionAliaslive"}
    assert invoke["SourceArn"] == {"Fn::GetAtt": [ref_id(rule_id(res)), "Arn"]}


def test_drift_function_runs_under_modelfn_invoke_with_the_templates_settings(aws: EmbeddedAWS) -> None:
    """template.yaml's handler, layer and environment (env.json for the buckets) reach the layer's drift check: each
    model of MODELFN_DRIFT_MODELS is checked (none is published in these empty buckets, which it reports)."""
    for bucket in ("modelfn-models", "modelfn-results"):
        boto3.client("s3").create_bucket(Bucket=bucket)
    cmd = [sys.executable, "-m", "modelfn_tools.cli", "invoke", "DriftFunction", "--env-vars", "env.json"]
    cmd += ["--event", "events/drift/schedule.json"]
    env = dict(os.environ, POWERTOOLS_METRICS_DISABLED="true")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)
    assert summary["threshold"] == 0.2 and [m["model"] for m in summary["models"]] == list(MODELS)
    assert {m["status"] for m in summary["models"]} <= {"error", "no data"} and summary["drifted"] == []


def rule_id(res: dict[str, Any]) -> dict[str, str]:
    (lid,) = [lid for lid, r in res.items() if r["Type"] == "AWS::Events::Rule"]
    return {"Ref": lid}


def test_drift_function_reads_only_the_store_and_the_captures(res: dict[str, Any], params: dict[str, Any]) -> None:
    sts = [st for st in statements(res, "DriftFunctionRole") if st["Sid"] not in ("WriteOwnLogs", "WriteTraces")]
    grants = sorted((a, sub(r, params)) for st in sts for a in as_list(st["Action"]) for r in as_list(st["Resource"]))
    assert grants == [
        ("s3:GetObject", "arn:aws:s3:::<ModelBucket>/models/*"),
        ("s3:GetObject", "arn:aws:s3:::<ResultsBucket>/capture/*"),
        ("s3:ListBucket", "arn:aws:s3:::<ModelBucket>"),
        ("s3:ListBucket", "arn:aws:s3:::<ResultsBucket>"),
    ]
    prefixes = {
        sub(st["Resource"], params): [sub(x, params) for x in st["Condition"]["StringLike"]["s3:prefix"]]
        for st in sts
        if st["Action"] == "s3:ListBucket"
    }
    assert prefixes == {
        "arn:aws:s3:::<ModelBucket>": ["models/", "models/*"],
        "arn:aws:s3:::<ResultsBucket>": ["capture/", "capture/*"],
    }


def test_each_model_alarms_when_its_max_psi_passes_the_threshold(res: dict[str, Any], params: dict[str, Any]) -> None:
    for m in MODELS:
        a = res[f"{cap(m)}DriftAlarm"]["Properties"]
        assert (a["Namespace"], a["MetricName"], a["Statistic"]) == ("modelfn", "DriftMaxPSI", "Maximum"), m
        assert a["Dimensions"] == [{"Name": "model", "Value": m}], m
        assert a["Threshold"] == {"Ref": "DriftThreshold"} and a["ComparisonOperator"] == "GreaterThanThreshold", m
        # between two scheduled checks there is no datapoint: the alarm keeps its state
        assert a["TreatMissingData"] == "ignore" and a["Period"] == 3600, m
