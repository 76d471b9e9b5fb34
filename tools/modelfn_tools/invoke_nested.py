"""Nested applications read as one template: what `modelfn invoke` and the template tests see of template.yaml.

template.yaml deploys each model as an `AWS::Serverless::Application` whose `Location` is a local template
(infra/model-function.yaml). CloudFormation makes a nested stack of it; `flatten` makes one template of both instead:

- each local, unconditional application is replaced by its template's resources, renamed `<App><LogicalId>`
  (`Iris` + `HttpFunction` -> `IrisHttpFunction`), with every `Ref`, `Fn::GetAtt`, `Fn::Sub` variable, condition
  name and `DependsOn` rewritten to match;
- the child's parameters take the values the application passes (or their defaults): a `Ref` to one becomes that
  value, a `${Param}` in `Fn::Sub` becomes its text, or `${X}` for a value `!Ref X`;
- the child's conditions are renamed `<App><Name>` unless the parent has one of that name with the same
  definition; a condition that only literals decide (`FunctionUrl: "false"`) is decided: its resources and outputs
  are dropped, or kept without it, and its `Fn::If` takes the branch;
- the parent's `!GetAtt App.Outputs.X` (and `${App.Outputs.X}`) become the child's output value; the child's
  outputs become the parent's `<App><Output>`;
- SAM `Globals` of every template are merged into its own resources (SAM's rules), then dropped, so the result
  reads the same whoever merges Globals next; local paths (CodeUri, ContentUri, DefinitionUri, Location) are made
  relative to the parent's folder.

An application with a `Condition`, or whose Location is not a local file, stays as it is.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

APPLICATION = "AWS::Serverless::Application"
GLOBALS_TYPES = {
    "Function": "AWS::Serverless::Function",
    "Api": "AWS::Serverless::Api",
    "HttpApi": "AWS::Serverless::HttpApi",
    "SimpleTable": "AWS::Serverless::SimpleTable",
    "StateMachine": "AWS::Serverless::StateMachine",
    "LayerVersion": "AWS::Serverless::LayerVersion",
}
PATH_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri", "Location")
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")

Loader = Callable[[Path], dict[str, Any]]


class NestedTemplateError(ValueError):
    """A nested application cannot be read: its template is missing, or a parameter without default is not given."""


def merge_globals(glob: Any, local: Any) -> Any:
    """SAM's Globals rule: maps merge (the resource wins), lists concatenate (Globals first), otherwise the resource."""
    if isinstance(glob, dict) and isinstance(local, dict) and not _intrinsic(glob) and not _intrinsic(local):
        merged = dict(glob)
        for k, v in local.items():
            merged[k] = merge_globals(glob[k], v) if k in glob else v
        return merged
    if isinstance(glob, list) and isinstance(local, list):
        return glob + local
    return local


def _intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def expand_globals(template: dict[str, Any]) -> dict[str, Any]:
    """The template with its Globals merged into its serverless resources and the Globals section dropped."""
    t = copy.deepcopy(template)
    glob = t.pop("Globals", None) or {}
    for section, rtype in GLOBALS_TYPES.items():
        defaults = glob.get(section)
        if not defaults:
            continue
        for res in (t.get("Resources") or {}).values():
            if isinstance(res, dict) and res.get("Type") == rtype:
                res["Properties"] = merge_globals(copy.deepcopy(defaults), res.get("Properties") or {})
    return t


def local_location(resource: Any) -> str | None:
    """The local template path of an unconditional nested application, else None."""
    if not isinstance(resource, dict) or resource.get("Type") != APPLICATION or "Condition" in resource:
        return None
    location = (resource.get("Properties") or {}).get("Location")
    if not isinstance(location, str) or re.match(r"^[a-z0-9]+://", location):
        return None
    return location


def flatten(template: dict[str, Any], folder: Path, load: Loader) -> dict[str, Any]:
    """`template` (whose file is in `folder`) with its local nested applications inlined; see the module docstring."""
    t = expand_globals(template)
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for lid, res in (t.get("Resources") or {}).items():
        location = local_location(res)
        if location is None:
            resources[lid] = res
            continue
        path = folder / location
        try:
            child = flatten(load(path), path.parent, load)
        except OSError as e:
            raise NestedTemplateError(f"{lid}: cannot read its template {location}: {e}") from e
        inlined = _Inliner(lid, child, t, posixpath.dirname(location))
        resources.update(inlined.resources())
        outputs[lid] = inlined.outputs()
        t.setdefault("Conditions", {}).update(inlined.conditions)
        for name, output in outputs[lid].items():
            t.setdefault("Outputs", {})[f"{lid}{name}"] = output
    t["Resources"] = resources
    if not t.get("Conditions"):
        t.pop("Conditions", None)
    return _resolve_outputs(t, outputs) if outputs else t


def _resolve_outputs(node: Any, outputs: dict[str, dict[str, Any]]) -> Any:
    """The parent's `!GetAtt App.Outputs.X` and `${App.Outputs.X}` replaced by the inlined output's value."""
    if isinstance(node, list):
        return [_resolve_outputs(v, outputs) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1 and "Fn::GetAtt" in node:
        app, attr = _getatt(node["Fn::GetAtt"])
        if app in outputs and attr.startswith("Outputs."):
            return copy.deepcopy(outputs[app][attr.removeprefix("Outputs.")]["Value"])
    if len(node) == 1 and "Fn::Sub" in node:
        text, names = _sub_parts(node["Fn::Sub"])

        def one(m: re.Match[str]) -> str:
            app, _, attr = m.group(1).partition(".")
            if app in outputs and attr.startswith("Outputs.") and m.group(1) not in names:
                return _as_sub_text(outputs[app][attr.removeprefix("Outputs.")]["Value"], m.group(1), names)
            return m.group(0)

        return _make_sub(_SUB_VAR.sub(one, text), names)
    return {k: _resolve_outputs(v, outputs) for k, v in node.items()}


def _getatt(arg: Any) -> tuple[str, str]:
    if isinstance(arg, str):
        head, _, tail = arg.partition(".")
        return head, tail
    if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], str):
        return arg[0], arg[1]
    return "", ""


def _sub_parts(arg: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(arg, str):
        return arg, {}
    if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
        return arg[0], dict(arg[1])
    raise NestedTemplateError(f"Fn::Sub with an unexpected argument: {arg!r}")


def _make_sub(text: str, names: dict[str, Any]) -> Any:
    """Fn::Sub, or the plain text when nothing is left to substitute."""
    if names:
        return {"Fn::Sub": [text, names]}
    if not _SUB_VAR.search(text):
        return text.replace("${!", "${")
    return {"Fn::Sub": text}


def _as_sub_text(value: Any, name: str, names: dict[str, Any]) -> str:
    """How `value` is written inside an Fn::Sub: its text, ${X} for Ref / GetAtt, else a variable of the Sub."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value).replace("${", "${!")
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("Ref"), str):
        return "${" + str(value["Ref"]) + "}"
    if isinstance(value, dict) and len(value) == 1 and "Fn::GetAtt" in value:
        res, attr = _getatt(value["Fn::GetAtt"])
        if res:
            return "${" + res + "." + attr + "}"
    var = re.sub(r"\W", "", name)
    names[var] = value
    return "${" + var + "}"


class _Inliner:
    """One nested application's template rewritten into its parent's names."""

    def __init__(self, app: str, child: dict[str, Any], parent: dict[str, Any], rel_dir: str) -> None:
        self.app = app
        self.child = child
        self.rel_dir = rel_dir
        self.ids = set(child.get("Resources") or {})
        given = (parent["Resources"][app].get("Properties") or {}).get("Parameters") or {}
        self.params: dict[str, Any] = {}
        for name, spec in (child.get("Parameters") or {}).items():
            if name in given:
                self.params[name] = given[name]
            elif isinstance(spec, dict) and "Default" in spec:
                self.params[name] = spec["Default"]
            else:
                raise NestedTemplateError(
                    f"{app}: parameter {name} of {rel_dir or '.'} is not given and has no default"
                )
        self.names = {c: f"{app}{c}" for c in child.get("Conditions") or {}}
        self.decided: dict[str, bool] = {}
        self.conditions: dict[str, Any] = {}
        parent_conditions = parent.get("Conditions") or {}
        for c, expr in (child.get("Conditions") or {}).items():
            rewritten = self.walk(expr)
            decided = _decide(rewritten, self.decided)
            if decided is not None:
                self.decided[c] = decided
            elif parent_conditions.get(c) == rewritten:
                self.names[c] = c
            else:
                self.conditions[self.names[c]] = rewritten

    def keep(self, item: dict[str, Any]) -> bool:
        cond = item.get("Condition")
        return not isinstance(cond, str) or self.decided.get(cond, True)

    def resources(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for lid, res in (self.child.get("Resources") or {}).items():
            if not self.keep(res):
                continue
            new = {k: self.walk(v) for k, v in res.items() if k not in ("Condition", "DependsOn")}
            self._condition(res, new)
            depends = res.get("DependsOn")
            if depends is not None:
                new["DependsOn"] = (
                    [self.rename(d) for d in depends] if isinstance(depends, list) else self.rename(depends)
                )
            for key in PATH_PROPERTIES:
                value = (new.get("Properties") or {}).get(key)
                if isinstance(value, str) and not re.match(r"^[a-z0-9]+://", value):
                    rebased = posixpath.normpath(posixpath.join(self.rel_dir, value))
                    new["Properties"][key] = rebased + ("/" if value.endswith("/") else "")
            out[self.rename(lid)] = new
        return out

    def outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, output in (self.child.get("Outputs") or {}).items():
            if isinstance(output, dict) and self.keep(output):
                new = {k: self.walk(v) for k, v in output.items() if k not in ("Condition", "Export")}
                self._condition(output, new)
                out[name] = new
        return out

    def _condition(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        cond = old.get("Condition")
        if isinstance(cond, str) and cond not in self.decided:
            new["Condition"] = self.names.get(cond, cond)

    def rename(self, lid: str) -> str:
        head = lid.split(".", 1)[0]
        return f"{self.app}{lid}" if head in self.ids else lid

    def walk(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref" and isinstance(arg, str):
                return copy.deepcopy(self.params[arg]) if arg in self.params else {"Ref": self.rename(arg)}
            if key == "Fn::GetAtt":
                res, attr = _getatt(arg)
                return {"Fn::GetAtt": [self.rename(res), attr]} if res else {key: self.walk(arg)}
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::If" and isinstance(arg, list) and len(arg) == 3 and isinstance(arg[0], str):
                if arg[0] in self.decided:
                    return self.walk(arg[1] if self.decided[arg[0]] else arg[2])
                return {"Fn::If": [self.names.get(arg[0], arg[0]), self.walk(arg[1]), self.walk(arg[2])]}
            if key == "Condition" and isinstance(arg, str):
                return {"Condition": self.names.get(arg, arg)}
        return {k: self.walk(v) for k, v in node.items()}

    def _sub(self, arg: Any) -> Any:
        text, names = _sub_parts(arg)
        names = {k: self.walk(v) for k, v in names.items()}
        local = set(names)

        def one(m: re.Match[str]) -> str:
            inner = m.group(1)
            head = inner.split(".", 1)[0]
            if inner in local:
                return m.group(0)
            if head in self.ids:
                return "${" + self.rename(inner) + "}"
            if inner in self.params:
                return _as_sub_text(copy.deepcopy(self.params[inner]), inner, names)
            return m.group(0)

        return _make_sub(_SUB_VAR.sub(one, text), names)


def _decide(expr: Any, decided: dict[str, bool]) -> bool | None:
    """The value of a condition that only literals (and decided conditions) make up, else None."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    ((key, arg),) = expr.items()
    if key == "Condition" and isinstance(arg, str):
        return decided.get(arg)
    if key == "Fn::Equals" and isinstance(arg, list) and len(arg) == 2:
        if all(isinstance(a, str | int | float | bool) for a in arg):
            return str(arg[0]) == str(arg[1])
        return None
    if key in ("Fn::Not", "Fn::And", "Fn::Or") and isinstance(arg, list) and arg:
        values = [_decide(a, decided) for a in arg]
        if None in values:
            return None
        return not values[0] if key == "Fn::Not" else all(values) if key == "Fn::And" else any(values)
    return None
