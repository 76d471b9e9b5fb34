"""The Lambda layer ships the runtime only (chalice's packager is the model): the folder template.yaml's layer
builds from holds the modelfn package and its requirements, no tooling package, nothing that imports tooling, and
no import of a tooling or server-only dependency that runs when a runtime module is imported. `tools/layer_size.sh`
measures what the layer weighs."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]

# Never imported by the runtime, anywhere: the tooling package (CLI, publish, dev stack, SAM emulation).
TOOLING = frozenset({"modelfn_tools", "modelfn.tools"})
# Dependencies of the tooling (the `tools` extra) and of long-running servers (the `server` extra), none of them in
# the layer's requirements: a runtime module may import them only inside a function, and only where listed below.
NOT_IN_LAYER = frozenset({"moto", "uvicorn", "yaml", "tqdm", "onnx"})
# (runtime module, dependency) pairs allowed inside functions, each on a path the Lambda handlers never take.
ALLOWED_IN_FUNCTIONS = {
    ("modelfn/container.py", "uvicorn"): "the container entrypoint (GPU image, SageMaker) runs uvicorn",
    ("modelfn/batching/rewrite.py", "onnx"): "dynamic batching (servers only, never on Lambda) rewrites int8 graphs",
}
# Requirement names of the tooling and server extras, none of which the layer may install.
TOOLING_REQUIREMENTS = frozenset({"moto", "uvicorn", "pyyaml", "tqdm", "onnx", "prometheus-client"})


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@dataclass(frozen=True)
class Import:
    module: str  # the imported module, dotted
    line: int
    in_function: bool  # runs only when a function is called, not when the module is imported


def _root_matches(module: str, names: frozenset[str]) -> bool:
    return any(module == n or module.startswith(f"{n}.") for n in names)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str) -> list[Import]:
    """Every absolute import of a module's source: statements, and importlib.import_module / __import__ calls
    with a literal name. Imports under `if TYPE_CHECKING:` never run and are left out."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for statement in node.orelse:
                visit(statement, in_function)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, node.lineno, in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend(Import(f"{node.module}.{a.name}", node.lineno, in_function) for a in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append(Import(node.args[0].value, node.lineno, in_function))
        # a function's body runs when it is called; its decorators and default values when it is defined
        deferred: set[int] = set()
        if isinstance(node, FUNCTIONS):
            deferred = {id(n) for n in (node.body if isinstance(node.body, list) else [node.body])}
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or id(child) in deferred)

    visit(ast.parse(source), False)
    return found


@pytest.fixture(scope="module")
def layer_dir() -> Path:
    """The folder the layer is built from, as template.yaml names it."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    content_uri = str(template["Resources"]["ModelfnLayer"]["Properties"]["ContentUri"])
    assert content_uri == "layers/modelfn/"
    return ROOT / content_uri


@pytest.fixture(scope="module")
def runtime_modules(layer_dir: Path) -> dict[str, str]:
    """Source of every module of the runtime package, by its path relative to the layer folder."""
    modules = {
        p.relative_to(layer_dir).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted((layer_dir / "modelfn").rglob("*.py"))
        if "__pycache__" not in p.parts
    }
    assert len(modules) > 20 and "modelfn/errors.py" in modules
    return modules


def test_layer_folder_holds_the_runtime_package_and_its_requirements_only(layer_dir: Path) -> None:
    # SAM's python build copies the folder whole, leaving out only build outputs like these
    shipped = {p.name for p in layer_dir.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info")}
    assert shipped == {"modelfn", "requirements.txt"}
    tooling = [
        p.relative_to(layer_dir).as_posix()
        for p in (layer_dir / "modelfn").rglob("*")
        if p.stem in ("tools", "modelfn_tools") and "__pycache__" not in p.parts
    ]
    assert tooling == []


def test_layer_requirements_install_no_tooling(layer_dir: Path) -> None:
    names = set()
    for line in (layer_dir / "requirements.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name = spec.split(";", 1)[0].split("[", 1)[0]
            for op in ("=", "<", ">", "!", "~", " "):
                name = name.split(op, 1)[0]
            names.add(name.strip().lower().replace("_", "-"))
    assert "onnxruntime" in names and "numpy" in names
    assert names & TOOLING_REQUIREMENTS == set()


def test_no_runtime_module_imports_tooling(runtime_modules: dict[str, str]) -> None:
    offending = [
        f"{path}:{imp.line} imports {imp.module}"
        for path, source in runtime_modules.items()
        for imp in imports(source)
        if _root_matches(imp.module, TOOLING)
    ]
    assert offending == []


def test_tooling_and_server_dependencies_are_imported_only_where_listed(runtime_modules: dict[str, str]) -> None:
    """At module level never (importing the runtime must work with the layer's requirements alone); inside a
    function only on the container and server paths listed in ALLOWED_IN_FUNCTIONS."""
    offending = []
    for path, source in runtime_modules.items():
        for imp in imports(source):
            root = imp.module.split(".")[0]
            if root not in NOT_IN_LAYER:
                continue
            if not imp.in_function:
                offending.append(f"{path}:{imp.line} imports {imp.module} at module level")
            elif (path, root) not in ALLOWED_IN_FUNCTIONS:
                offending.append(f"{path}:{imp.line} imports {imp.module} (not in ALLOWED_IN_FUNCTIONS)")
    assert offending == []


def test_the_import_scan_sees_every_kind_of_import() -> None:
    """The checks above are only as good as this scan: it must tell module level from function level."""
    source = """
from __future__ import annotations
import importlib
from typing import TYPE_CHECKING
import yaml
from onnx import helper
from . import sibling
if TYPE_CHECKING:
    import moto
else:
    import tqdm
try:
    import uvicorn.config
except ImportError:
    pass
class Server:
    import modelfn_tools.cli as cli
    def run(self):
        import uvicorn
        return importlib.import_module("moto.server")
handler = lambda: __import__("onnx")
@decorate(__import__("tqdm.auto"))
def later(x=importlib.import_module("yaml.loader")):
    pass
"""
    got = {(i.module, i.in_function) for i in imports(source)}
    assert got == {
        ("__future__.annotations", False),
        ("importlib", False),
        ("typing.TYPE_CHECKING", False),
        ("yaml", False),
        ("onnx.helper", False),
        ("tqdm", False),
        ("uvicorn.config", False),
        ("modelfn_tools.cli", False),  # a class body runs at import
        ("uvicorn", True),
        ("moto.server", True),
        ("onnx", True),
        ("tqdm.auto", False),  # decorators and default values run when the function is defined
        ("yaml.loader", False),
    }
