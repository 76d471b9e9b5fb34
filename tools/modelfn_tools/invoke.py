"""`modelfn invoke`: run one function of a SAM template on one event, as `sam local invoke` would, without Docker.

    modelfn invoke FUNCTION --event FILE [--template template.yaml] [--env-vars FILE]

The function runs in a fresh Python process (`python -m modelfn_tools.invoke_worker`), so every invoke is a cold
start: the handler module is imported (the Lambda init phase, where a modelfn function loads its model), the handler
is called once, and the process exits. The result goes to stdout as JSON, everything the function prints or logs
(Powertools JSON logs, EMF metrics) to stderr, followed by a Lambda-style REPORT line.

What is taken from the template (SAM `Globals.Function` merged in: maps merged with the function winning, lists
concatenated Globals first, scalars from the function):
- `Handler` "app.http_handler" -> module `app`, attribute `http_handler` ("pkg/mod.fn" -> module `pkg.mod`).
- `CodeUri` (or `Code` for AWS::Lambda::Function) relative to the template's folder; becomes the cwd and the first
  entry of PYTHONPATH, as /var/task is on Lambda. `InlineCode` is written to `index.py` in a folder of its own
  (under the temporary directory, one per content), as Lambda does.
- `Layers`: a `!Ref` to an AWS::Serverless::LayerVersion (`ContentUri`) or AWS::Lambda::LayerVersion (`Content`)
  of the same template adds that folder to PYTHONPATH (its `python/` subfolder instead when it has one, which is
  where a built layer keeps its packages). Layers given as ARNs (or parameters, or other intrinsics) are skipped
  with a note: their packages must come from the current virtual environment, whose site-packages folders are added
  after the layers (they stand in for what `sam build` installs from requirements.txt).
- `Runtime` (Python runtimes only; the function runs under *this* interpreter whatever the version says),
  `MemorySize` (default 128: reported and exported, not enforced), `Timeout` (default 3 s: enforced for the handler
  call; the import is not limited), `Environment.Variables`.
- `PackageType: Image` functions are refused (exit 2): they need Docker (`sam local invoke`).
- Nested applications (`AWS::Serverless::Application` with a local `Location`, as template.yaml's models) are read
  as part of the template (modelfn_tools.invoke_nested): a function `HttpFunction` of the application `Iris` is
  `IrisHttpFunction` (or `Iris/HttpFunction`, SAM's nested path), with the parameters the application passes, its
  own template's Globals, and paths relative to its own template.

Environment variables. Values that are intrinsic functions are resolved where that is possible without a stack:
`Ref` to pseudo parameters (AWS::Region -> the local region, AWS::AccountId -> 123456789012, AWS::StackName ->
"local", AWS::Partition, AWS::URLSuffix, AWS::NoValue drops the variable), `Ref` to template parameters (their
`Default`), `Fn::If` on template Conditions (Fn::Equals/Not/And/Or over those), and `Fn::Sub` / `Fn::Join` /
`Fn::Select` / `Fn::Split` / `Fn::FindInMap` built only from those. Anything else (a bucket's name, `Fn::GetAtt`,
`Fn::ImportValue` ...) cannot be known locally: the variable is not set from the template and a
note says so (if your shell exports it, that value passes through), unless `--env-vars` provides it.

`--env-vars FILE` is SAM's format: `{"Parameters": {"VAR": "v"}}` applies to every function,
`{"<FunctionLogicalId>": {"VAR": "v"}}` (or the function's `FunctionName`) to one; function-specific values win over
`Parameters`, which win over the template. Like SAM, an override only replaces a variable the function declares in
the template (other names are ignored, with a note when the function-specific section names them). Unlike SAM,
names starting with `MODELFN_`, `AWS_` or `POWERTOOLS_` may also be *added* by the file, since these are what one
points at a local stack (an S3 endpoint, a store, a log level) without editing the template. Values are stringified
as SAM does (true/false for booleans, "" for null, lists and maps).

The process environment is: this process's environment (so AWS_ENDPOINT_URL and credentials for a local moto
pass through), then the template's variables, then the overrides, then Lambda's own variables
(AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_FUNCTION_VERSION=$LATEST, AWS_REGION and
AWS_DEFAULT_REGION (default us-east-1 when unset), AWS_EXECUTION_ENV=AWS_Lambda_<runtime>, LAMBDA_TASK_ROOT,
_HANDLER, AWS_LAMBDA_LOG_GROUP_NAME/STREAM_NAME, AWS_LAMBDA_INITIALIZATION_TYPE=on-demand, TZ=:UTC, and
AWS_SAM_LOCAL=true as `sam local` sets it, which turns Powertools' Tracer off). `LoggingConfig` becomes
AWS_LAMBDA_LOG_FORMAT / AWS_LAMBDA_LOG_LEVEL, as Lambda's advanced logging controls do.
PYTHONPATH is replaced: CodeUri, layers, site-packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from modelfn.errors import ModelfnError
from modelfn_tools.invoke_nested import NestedTemplateError, flatten, local_location, merge_globals

WORKER_MODULE = "modelfn_tools.invoke_worker"
DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_RUNTIME = "python3.12"
DEFAULT_REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK_NAME = "local"
# Upper bound on the init phase (the handler module's import) before the worker is killed; the handler call itself
# is limited by the function's Timeout inside the worker.
INIT_LIMIT_S = 300.0
ADDABLE_PREFIXES = ("MODELFN_", "AWS_", "POWERTOOLS_")

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
FUNCTION_TYPES = (SERVERLESS_FUNCTION, LAMBDA_FUNCTION)

# Short-form tags -> long-form keys. Tags whose long form is not "Fn::<Tag>" are listed explicitly.
_FN_TAGS = "Sub GetAtt If Join Select Split FindInMap ImportValue Equals Not And Or Base64 Cidr GetAZs Transform Length"
_TAGS: dict[str, str] = {"Ref": "Ref", "Condition": "Condition"} | {
    t: f"Fn::{t}" for t in (_FN_TAGS + " ToJsonString").split()
}


class InvokeError(ModelfnError):
    """The template, the function or the command line cannot be used (the CLI exits 2)."""

    status = 400


@dataclass
class FunctionSpec:
    """Everything needed to run one function locally, resolved from the template."""

    logical_id: str
    function_name: str
    handler: str
    module: str
    attribute: str
    code_uri: Path
    runtime: str = DEFAULT_RUNTIME
    memory_size: int = DEFAULT_MEMORY_MB
    timeout: float = DEFAULT_TIMEOUT_S
    layers: list[Path] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    region: str = DEFAULT_REGION
    notes: list[str] = field(default_factory=list)

    def python_path(self) -> list[str]:
        """PYTHONPATH of the worker: CodeUri, each layer (its python/ subfolder if any), this venv's site-packages."""
        paths = [str(self.code_uri)]
        for layer in self.layers:
            paths.append(str(layer / "python" if (layer / "python").is_dir() else layer))
        paths += [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
        # Last: wherever this `modelfn` comes from, so the worker module is importable even when modelfn is not
        # installed in site-packages (a layer that provides it comes first and wins).
        paths.append(str(Path(__file__).resolve().parents[2]))
        return list(dict.fromkeys(paths))


@dataclass
class InvokeResult:
    """One invocation: the handler's result (or Lambda's error object), durations in ms, peak RSS in MB."""

    result: Any
    init_ms: float
    duration_ms: float
    max_memory_mb: int
    request_id: str
    error: bool
    returncode: int = 0
    logs: str = ""


# --------------------------------------------------------------------------------------------------- template


@cache
def _loader() -> Any:
    import yaml

    class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
        """SafeLoader + CloudFormation short-form tags; timestamps stay strings (AWSTemplateFormatVersion)."""

    CfnLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def make(tag: str, key: str) -> Any:
        def construct(loader: Any, node: Any) -> dict[str, Any]:
            if isinstance(node, yaml.ScalarNode):
                value: Any = loader.construct_scalar(node)
                if tag == "GetAtt":
                    value = value.split(".", 1)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node, deep=True)
            else:
                value = loader.construct_mapping(node, deep=True)
            return {key: value}

        return construct

    for tag, key in _TAGS.items():
        CfnLoader.add_constructor(f"!{tag}", make(tag, key))
    return CfnLoader


def parse_template(text: str, name: str = "template") -> dict[str, Any]:
    """Parse a SAM/CloudFormation template (YAML with short-form tags, or JSON) into plain dicts."""
    import yaml

    try:
        data = yaml.load(text, Loader=_loader())  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise InvokeError(f"{name}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise InvokeError(f"{name}: not a SAM/CloudFormation template (no Resources section)")
    return data


def load_template(path: str | Path) -> dict[str, Any]:
    """Read template.yaml; short-form tags (!Ref, !Sub, ...) become long-form dicts ({"Ref": ...}, {"Fn::Sub": ...})."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InvokeError(f"cannot read template {p}: {e.strerror or e}") from e
    return parse_template(text, str(p))


def list_functions(template: dict[str, Any]) -> list[str]:
    """Logical ids of the template's functions (AWS::Serverless::Function, AWS::Lambda::Function), in order."""
    return [
        lid
        for lid, res in template.get("Resources", {}).items()
        if isinstance(res, dict) and res.get("Type") in FUNCTION_TYPES
    ]


def load_env_vars(path: str | Path) -> dict[str, Any]:
    """Read an --env-vars file (SAM's format: {"Parameters": {...}, "<FunctionLogicalId>": {...}})."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise InvokeError(f"cannot read --env-vars {p}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise InvokeError(f"--env-vars {p}: not valid JSON: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InvokeError(f'--env-vars {p}: expected {{"Parameters": {{"VAR": "value"}}, "<Function>": {{...}}}}')
    return data


# --------------------------------------------------------------------------------------------------- intrinsics


class _Unresolved(Exception):
    """An intrinsic function whose value only a deployed stack knows."""


class _NoValueType:
    pass


_NO_VALUE = _NoValueType()


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in {"Ref", "Condition", *_TAGS.values()}


class _Resolver:
    """Evaluates the intrinsic functions that do not need a deployed stack."""

    def __init__(self, template: dict[str, Any], region: str) -> None:
        self.template = template
        partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
        self.pseudo: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": f"arn:{partition}:cloudformation:{region}:{ACCOUNT_ID}:stack/{STACK_NAME}/"
            "51af3dc0-da77-11e4-872e-1234567db123",
            "AWS::Partition": partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
        }

    def ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise _Unresolved(f"Ref {name!r}")
        if name in self.pseudo:
            return self.pseudo[name]
        param = (self.template.get("Parameters") or {}).get(name)
        if isinstance(param, dict):
            if "Default" not in param:
                raise _Unresolved(f"parameter {name} has no Default")
            default = param["Default"]
            ptype = str(param.get("Type", ""))
            if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
                return [s.strip() for s in str(default).split(",")]
            return default
        if name in (self.template.get("Resources") or {}):
            raise _Unresolved(f"Ref {name} (a resource: only a deployed stack knows it)")
        raise _Unresolved(f"Ref {name} (not a parameter or resource of the template)")

    def condition(self, name: Any, seen: frozenset[str] = frozenset()) -> bool:
        expr = (self.template.get("Conditions") or {}).get(name) if isinstance(name, str) else None
        if expr is None or name in seen:
            raise _Unresolved(f"condition {name!r} (not defined, or circular)")
        return self.evaluate(expr, seen | {name})

    def evaluate(self, expr: Any, seen: frozenset[str] = frozenset()) -> bool:
        """A condition: Fn::Equals / Not / And / Or / Condition over resolvable values (CloudFormation compares
        strings)."""
        if _is_intrinsic(expr):
            ((key, arg),) = expr.items()
            if key == "Condition":
                return self.condition(arg, seen)
            if key == "Fn::Equals" and isinstance(arg, list) and len(arg) == 2:
                a, b = (self.resolve(x) for x in arg)
                return _text(a) == _text(b)
            if key in ("Fn::Not", "Fn::And", "Fn::Or") and isinstance(arg, list) and arg:
                values = [self.evaluate(x, seen) for x in arg]
                return not values[0] if key == "Fn::Not" else all(values) if key == "Fn::And" else any(values)
        raise _Unresolved(f"condition {_short(expr)}")

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            text, names = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        elif isinstance(arg, str):
            text, names = arg, {}
        else:
            raise _Unresolved("Fn::Sub with an unexpected argument")

        def one(m: re.Match[str]) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in names:
                return _text(names[inner])
            if "." in inner and not inner.startswith("AWS::"):
                raise _Unresolved(f"${{{inner}}} (an attribute: only a deployed stack knows it)")
            return _text(self.ref(inner))

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not _is_intrinsic(value):
            return value
        ((key, arg),) = value.items()
        if key == "Ref":
            return self.ref(arg)
        if key == "Fn::Sub":
            return self.sub(arg)
        if key == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
            return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if key == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
            sep, items = self.resolve(arg[0]), self.resolve(arg[1])
            if isinstance(items, list):
                return str(sep).join(_text(i) for i in items)
        if key == "Fn::Select" and isinstance(arg, list) and len(arg) == 2:
            index, items = self.resolve(arg[0]), self.resolve(arg[1])
            if isinstance(items, list):
                try:
                    return items[int(index)]
                except (ValueError, IndexError) as e:
                    raise _Unresolved(f"Fn::Select {index!r}") from e
        if key == "Fn::Split" and isinstance(arg, list) and len(arg) == 2:
            sep, text = self.resolve(arg[0]), self.resolve(arg[1])
            return _text(text).split(_text(sep))
        if key == "Fn::FindInMap" and isinstance(arg, list) and len(arg) >= 3:
            m, top, second = (self.resolve(a) for a in arg[:3])
            try:
                return self.template["Mappings"][m][top][second]
            except (KeyError, TypeError) as e:
                raise _Unresolved(f"Fn::FindInMap {[m, top, second]}") from e
        raise _Unresolved(f"{key} (only a deployed stack knows its value)")


def _text(value: Any) -> str:
    """A value as CloudFormation/SAM write it into an environment variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, dict | list | tuple):
        return ""
    return str(value)


def _short(value: Any) -> str:
    s = json.dumps(value, default=str)
    return s if len(s) <= 80 else s[:77] + "..."


# --------------------------------------------------------------------------------------------------- functions


def local_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def with_nested(template: dict[str, Any], template_dir: Path) -> dict[str, Any]:
    """The template with its local nested applications inlined (their functions named <App><LogicalId>)."""
    if not any(local_location(r) for r in (template.get("Resources") or {}).values()):
        return template
    try:
        return flatten(template, template_dir, load_template)
    except NestedTemplateError as e:
        raise InvokeError(str(e)) from e


def _find_function(template: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    resources = template.get("Resources", {})
    functions = list_functions(template)
    if "/" in name and name.replace("/", "") in functions:  # SAM's path of a nested stack's function
        name = name.replace("/", "")
    if name in functions:
        return name, resources[name]
    for lid in functions:  # the deployed FunctionName works too, as in SAM
        if (resources[lid].get("Properties") or {}).get("FunctionName") == name:
            return lid, resources[lid]
    if name in resources:
        raise InvokeError(
            f"{name} is a {resources[name].get('Type')}, not a function; functions: {', '.join(functions) or '(none)'}"
        )
    raise InvokeError(f"no function {name!r} in the template; functions: {', '.join(functions) or '(none)'}")


def _resolve_layers(
    template: dict[str, Any], layers: Any, template_dir: Path, logical_id: str, notes: list[str]
) -> list[Path]:
    resources = template.get("Resources", {})
    out: list[Path] = []
    if not isinstance(layers, list):
        layers = [layers]
    for layer in layers:
        ref = layer.get("Ref") if isinstance(layer, dict) and len(layer) == 1 else None
        res = resources.get(ref) if isinstance(ref, str) else None
        if not isinstance(res, dict):
            what = layer if isinstance(layer, str) else _short(layer)
            notes.append(
                f"{logical_id}: layer {what} is skipped (not a layer of this template): "
                "its packages must be installed in this virtual environment"
            )
            continue
        props = res.get("Properties", {}) or {}
        if res.get("Type") == "AWS::Serverless::LayerVersion":
            content = props.get("ContentUri")
        elif res.get("Type") == "AWS::Lambda::LayerVersion":
            content = props.get("Content")
        else:
            raise InvokeError(f"{logical_id}: Layers entry !Ref {ref} is a {res.get('Type')}, not a layer")
        if not isinstance(content, str) or content.startswith("s3://"):
            notes.append(f"{logical_id}: layer {ref} is skipped (its content {_short(content)} is not a local folder)")
            continue
        folder = (template_dir / content).resolve()
        if not folder.is_dir():
            raise InvokeError(f"{logical_id}: layer {ref}: ContentUri {content} is not a folder ({folder})")
        out.append(folder)
    return out


def _number(value: Any, what: str, default: float, resolver: _Resolver, notes: list[str]) -> float:
    if value is None:
        return default
    try:
        return float(resolver.resolve(value))
    except (_Unresolved, TypeError, ValueError):
        notes.append(f"{what} {_short(value)} cannot be resolved locally; using {default:g}")
        return default


def resolve_function(
    template: dict[str, Any],
    logical_id: str,
    template_dir: str | Path,
    env_overrides: dict[str, Any] | None = None,
) -> FunctionSpec:
    """Resolve one function (logical id, or its FunctionName) of a loaded template into a runnable FunctionSpec.

    `env_overrides` is the content of an --env-vars file (SAM's format, see the module docstring). Problems that make
    the function impossible to run raise InvokeError; what is only approximated is listed in `spec.notes`.
    """
    template_dir = Path(template_dir).resolve()
    template = with_nested(template, template_dir)
    lid, res = _find_function(template, logical_id)
    props: dict[str, Any] = dict(res.get("Properties") or {})
    serverless = res.get("Type") == SERVERLESS_FUNCTION
    if serverless:
        glob = (template.get("Globals") or {}).get("Function") or {}
        props = merge_globals(glob, props)
    notes: list[str] = []
    region = local_region()
    resolver = _Resolver(template, region)

    code_uri = _code_folder(props, serverless, template_dir, lid)
    runtime = _runtime(props, resolver, lid, notes)
    handler, module, attribute = _handler(props, lid)
    function_name = props.get("FunctionName")
    if not isinstance(function_name, str):
        function_name = lid
    memory = int(_number(props.get("MemorySize"), f"{lid}: MemorySize", DEFAULT_MEMORY_MB, resolver, notes))
    timeout = _number(props.get("Timeout"), f"{lid}: Timeout", DEFAULT_TIMEOUT_S, resolver, notes)
    layers = _resolve_layers(template, props.get("Layers") or [], template_dir, lid, notes)
    env = _environment(props, resolver, env_overrides or {}, lid, function_name, notes)
    return FunctionSpec(
        logical_id=lid,
        function_name=function_name,
        handler=handler,
        module=module,
        attribute=attribute,
        code_uri=code_uri,
        runtime=runtime,
        memory_size=memory,
        timeout=timeout,
        layers=layers,
        environment=env,
        region=env.get("AWS_REGION") or region,
        notes=notes,
    )


def _code_folder(props: dict[str, Any], serverless: bool, template_dir: Path, lid: str) -> Path:
    """The function's local source folder; container images, inline code and s3:// code cannot run here."""
    code = props.get("CodeUri") if serverless else props.get("Code")
    if props.get("PackageType") == "Image" or "ImageUri" in props or (isinstance(code, dict) and "ImageUri" in code):
        raise InvokeError(
            f"{lid} is packaged as a container image (PackageType: Image): it needs Docker, run "
            f"`sam local invoke {lid}` (or the image itself) instead; modelfn invoke runs zip-packaged Python "
            "functions (Handler + CodeUri) only"
        )
    if serverless and code is None and isinstance(props.get("InlineCode"), str):
        return _inline_folder(props["InlineCode"])
    if code is None:
        code = "."
    if not isinstance(code, str) or code.startswith("s3://"):
        raise InvokeError(f"{lid}: code {_short(code)} is not a local folder (modelfn invoke runs local source only)")
    code_uri = (template_dir / code).resolve()
    if not code_uri.is_dir():
        raise InvokeError(f"{lid}: CodeUri {code} is not a folder ({code_uri})")
    return code_uri


def _inline_folder(code: str) -> Path:
    """A folder holding `code` as index.py, the file Lambda makes of a Python function's InlineCode."""
    folder = Path(tempfile.gettempdir()) / "modelfn-invoke-inline" / hashlib.sha256(code.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(code)
    os.replace(tmp, folder / "index.py")  # whole, even with invokes running side by side
    return folder


def _runtime(props: dict[str, Any], resolver: _Resolver, lid: str, notes: list[str]) -> str:
    runtime = props.get("Runtime", DEFAULT_RUNTIME)
    if not isinstance(runtime, str):
        try:
            runtime = str(resolver.resolve(runtime))
        except _Unresolved:
            notes.append(f"{lid}: Runtime {_short(runtime)} cannot be resolved locally; assuming {DEFAULT_RUNTIME}")
            runtime = DEFAULT_RUNTIME
    if not runtime.startswith("python"):
        raise InvokeError(f"{lid} has Runtime {runtime}: modelfn invoke runs Python functions only")
    return runtime


def _handler(props: dict[str, Any], lid: str) -> tuple[str, str, str]:
    """(handler, module, attribute) of a `module.function` Handler."""
    handler = props.get("Handler")
    if not isinstance(handler, str) or "." not in handler.strip(".") or handler.endswith("."):
        raise InvokeError(f"{lid}: Handler {_short(handler)} is not of the form module.function (e.g. app.handler)")
    module, attribute = handler.rsplit(".", 1)
    return handler, module.replace("/", "."), attribute


def _environment(
    props: dict[str, Any],
    resolver: _Resolver,
    overrides: dict[str, Any],
    lid: str,
    function_name: str,
    notes: list[str],
) -> dict[str, str]:
    """The template's variables (Globals merged), resolved where possible, then the --env-vars overrides."""
    declared = ((props.get("Environment") or {}).get("Variables")) or {}
    if not isinstance(declared, dict):
        raise InvokeError(f"{lid}: Environment.Variables is not a map ({_short(declared)})")
    env, unresolved = _declared_environment(declared, resolver)
    # Lambda's advanced logging controls reach the function as variables (Powertools reads AWS_LAMBDA_LOG_LEVEL).
    logging_config = props.get("LoggingConfig") or {}
    for key, name in (("LogFormat", "AWS_LAMBDA_LOG_FORMAT"), ("ApplicationLogLevel", "AWS_LAMBDA_LOG_LEVEL")):
        if isinstance(logging_config, dict) and key in logging_config:
            with contextlib.suppress(_Unresolved):
                env[name] = _text(resolver.resolve(logging_config[key]))

    specific_key = lid if lid in overrides else function_name if function_name in overrides else None
    specific = dict(overrides.get(specific_key) or {}) if specific_key else {}
    for source, values in (("Parameters", dict(overrides.get("Parameters") or {})), (specific_key, specific)):
        for name, value in values.items():
            if name in declared or name.startswith(ADDABLE_PREFIXES):
                env[name] = _text(value)
                unresolved.pop(name, None)
            elif source != "Parameters":
                notes.append(
                    f"{lid}: --env-vars {name} ignored: not declared in the template's Environment.Variables "
                    f"(only {', '.join(p + '*' for p in ADDABLE_PREFIXES)} may be added)"
                )
    for name, why in unresolved.items():
        inherited = " (using the value exported in your shell)" if name in os.environ else ""
        notes.append(f"{lid}: {name} is not set from the template, {why}; give it with --env-vars{inherited}")
    return env


def _declared_environment(declared: dict[str, Any], resolver: _Resolver) -> tuple[dict[str, str], dict[str, str]]:
    """(resolved variables, {name: why not} for those that cannot be resolved locally)."""
    env: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    for name, value in declared.items():
        try:
            resolved = resolver.resolve(value)
        except _Unresolved as e:
            unresolved[name] = f"{_short(value)}: {e}"
            continue
        if resolved is _NO_VALUE:
            continue
        if isinstance(resolved, dict):
            unresolved[name] = f"{_short(value)}: not a string"
            continue
        env[name] = _text(resolved)
    return env, unresolved


# --------------------------------------------------------------------------------------------------- invoke


def lambda_environment(spec: FunctionSpec, request_id: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: `base` (default os.environ) + template variables + Lambda's own variables."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONPATH", None)
    env.update(spec.environment)
    region = spec.environment.get("AWS_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or spec.region
    env.setdefault("AWS_DEFAULT_REGION", region)
    env["AWS_REGION"] = region
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{request_id.replace('-', '')}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_uri),
            "_HANDLER": spec.handler,
            "TZ": ":UTC",
            "AWS_SAM_LOCAL": "true",  # as `sam local invoke` sets it: e.g. Powertools' Tracer turns itself off
            "PYTHONPATH": os.pathsep.join(spec.python_path()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _pump(stream: IO[str], sink: IO[str] | None, buf: list[str]) -> None:
    for line in stream:
        buf.append(line)
        if sink is not None:
            try:
                sink.write(line)
                sink.flush()
            except (OSError, ValueError):
                pass


def _error(request_id: str, error_type: str, message: str) -> dict[str, Any]:
    return {"errorMessage": f"RequestId: {request_id} Error: {message}", "errorType": error_type}


def invoke(
    spec: FunctionSpec,
    event: Any,
    timeout: float | None = None,
    *,
    request_id: str | None = None,
    log: IO[str] | None = None,
) -> InvokeResult:
    """Run the function once on `event` in a fresh process and return its result.

    `timeout` (seconds) limits the handler call; None means the function's Timeout, 0 or less means no limit.
    What the function writes (stdout and stderr) is copied line by line to `log` (default: sys.stderr) and kept in
    `result.logs`. A handler exception gives Lambda's error object as `result` and `error=True`.
    """
    request_id = request_id or str(uuid.uuid4())
    wanted = spec.timeout if timeout is None else timeout
    limit = wanted if wanted > 0 else None
    sink = sys.stderr if log is None else log

    with tempfile.TemporaryDirectory(prefix="modelfn-invoke-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job = {
            "module": spec.module,
            "attribute": spec.attribute,
            "request_id": request_id,
            "timeout": limit,
            "region": spec.region,
            "account_id": ACCOUNT_ID,
            "event": event,
        }
        try:
            job_path.write_text(json.dumps(job), encoding="utf-8")
        except (TypeError, ValueError) as e:
            raise InvokeError(f"the event is not JSON-serializable: {e}") from e
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(job_path), str(result_path)],
            cwd=spec.code_uri,
            env=lambda_environment(spec, request_id),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        logs: list[str] = []
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, sink, logs), daemon=True)
        pump.start()
        killed_for_time = False
        try:
            proc.wait(timeout=None if limit is None else limit + INIT_LIMIT_S)
        except subprocess.TimeoutExpired:
            killed_for_time = True
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        pump.join(timeout=5)
        returncode = proc.returncode

        try:
            report: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = {}
    if "result" in report:
        return InvokeResult(
            result=report["result"],
            init_ms=float(report.get("init_ms", 0.0)),
            duration_ms=float(report.get("duration_ms", 0.0)),
            max_memory_mb=int(report.get("max_memory_mb", 0)),
            request_id=request_id,
            error=bool(report.get("error")),
            returncode=returncode,
            logs="".join(logs),
        )
    # The worker died without a word: killed (time, memory, signal) or exited from the init phase.
    if killed_for_time:
        err = _error(request_id, "Sandbox.Timedout", f"Task timed out after {limit:.2f} seconds (init included)")
    elif returncode < 0:
        err = _error(request_id, "Runtime.ExitError", f"Runtime exited with error: signal: {-returncode}")
    else:
        err = _error(request_id, "Runtime.ExitError", f"Runtime exited with error: exit status {returncode}")
    return InvokeResult(err, 0.0, 0.0, 0, request_id, True, returncode, "".join(logs))


def report_line(result: InvokeResult, spec: FunctionSpec) -> str:
    """Lambda's REPORT line for one invocation (Init Duration first: every local invoke is a cold start)."""
    billed = max(1, int(-(-result.duration_ms // 1)))
    return (
        f"REPORT RequestId: {result.request_id}\tInit Duration: {result.init_ms:.2f} ms\t"
        f"Duration: {result.duration_ms:.2f} ms\tBilled Duration: {billed} ms\t"
        f"Memory Size: {spec.memory_size} MB\tMax Memory Used: {result.max_memory_mb} MB"
    )


# --------------------------------------------------------------------------------------------------- CLI


def read_event(path: str | None) -> Any:
    """The event: a JSON file, "-" for stdin, None for {} (as `sam local invoke` without --event)."""
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvokeError(f"cannot read --event {path}: {e.strerror or e}") from e
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise InvokeError(f"--event {path}: not valid JSON: {e}") from e


def default_template(path: str | None) -> Path:
    if path:
        return Path(path)
    for name in ("template.yaml", "template.yml", "template.json"):
        if Path(name).is_file():
            return Path(name)
    return Path("template.yaml")


def run_invoke(
    function: str | None,
    event_path: str | None,
    template_path: str | None = None,
    env_vars_path: str | None = None,
) -> int:
    """`modelfn invoke`: result JSON on stdout, logs and the REPORT line on stderr; 0 ok, 1 the function failed."""
    tpath = default_template(template_path)
    template = load_template(tpath)
    if function is None:
        functions = list_functions(with_nested(template, tpath.parent.resolve()))
        if len(functions) != 1:
            raise InvokeError(f"name the function to invoke; {tpath} has: {', '.join(functions) or '(none)'}")
        function = functions[0]
    overrides = load_env_vars(env_vars_path) if env_vars_path else None
    event = read_event(event_path)
    spec = resolve_function(template, function, tpath.parent, overrides)
    for note in spec.notes:
        print(f"modelfn invoke: note: {note}", file=sys.stderr)
    request_id = str(uuid.uuid4())
    print(f"START RequestId: {request_id} Version: $LATEST", file=sys.stderr, flush=True)
    result = invoke(spec, event, request_id=request_id)
    print(f"END RequestId: {request_id}", file=sys.stderr)
    print(report_line(result, spec), file=sys.stderr, flush=True)
    print(json.dumps(result.result), flush=True)
    return 1 if result.error else 0
