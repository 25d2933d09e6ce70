"""The layers as DESIGN.md draws them, checked on the source and in a fresh interpreter.

- the folders are the layers, and imports point downward only (LAYERS: a module imports nothing
  from a layer above its own); the engine's layer imports no provider, no tool and no agent;
  importing tokenwire loads no model backend;
- no import cycles between tokenwire modules, ``TYPE_CHECKING`` imports included, and no
  tokenwire import hidden inside a function (except where the target needs an optional extra,
  named below);
- no module imports another module's private (``_``) names;
- no module is longer than MAX_LINES, generated code excepted;
- no submodule is shadowed by a package attribute of the same name;
- every public exception derives from TokenwireError and is defined in tokenwire.errors.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import tokenwire
from tokenwire.errors import TokenwireError

SRC = Path(tokenwire.__file__).resolve().parent
# Function-level imports allowed because the target needs an optional extra (starlette, uvicorn, redis).
LAZY_FOR_EXTRAS = {
    ("tokenwire.cli.commands", "tokenwire.server"),
    ("tokenwire.cli.commands", "tokenwire.server.process"),
    ("tokenwire.log.url", "tokenwire.log.redis"),  # the log on Redis, only when a URL says so
    # an adapter, only for an object of its framework (each imports its framework)
    ("tokenwire.adapters", "tokenwire.adapters.langchain"),
    ("tokenwire.adapters", "tokenwire.adapters.pydantic_ai"),
    ("tokenwire.adapters", "tokenwire.adapters.openai_agents"),
}
LAYERS = [
    ("tokenwire.events", "tokenwire.errors"),
    ("tokenwire.core", "tokenwire.telemetry"),  # telemetry: the statistics and logs the core records into
    ("tokenwire.log",),
    ("tokenwire.consumers",),
    ("tokenwire.engine",),
    ("tokenwire.wire",),
    ("tokenwire.providers", "tokenwire.tools", "tokenwire.adapters"),
    ("tokenwire.api",),
    ("tokenwire.server", "tokenwire.grpc", "tokenwire.client"),
    ("tokenwire.cli", "tokenwire.testing"),
]
"""The layers, bottom first: a module may import from its own layer and the ones below."""
MAX_LINES = 450
GENERATED = {"tokenwire.grpc.tokenwire_pb2", "tokenwire.grpc.tokenwire_pb2_grpc"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, type_checking: bool = False) -> tuple[set[str], set[str]]:
    """tokenwire modules imported at module level and inside functions (``TYPE_CHECKING`` blocks
    count as module level with ``type_checking``, else not at all)."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    nested: set[str] = set()

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:  # relative imports are not used in this package
            raise AssertionError(f"{path}: relative import")
        # ``from tokenwire import x`` may name a submodule.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in ALL else base for a in node.names]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and not type_checking:
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                for t in targets(child):
                    if t.startswith("tokenwire"):
                        (nested if in_function else top).add(t)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return top, nested


FILES = {module_name(p): p for p in SRC.rglob("*.py")}
ALL = set(FILES)


def layer(module: str) -> int | None:
    """The index in LAYERS of the layer ``module`` belongs to (None: the package root)."""
    for i, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return i
    return None


def test_every_module_belongs_to_a_layer() -> None:
    roots = {"tokenwire", "tokenwire.__main__"}
    stray = sorted(name for name in ALL if name not in roots and layer(name) is None)
    assert not stray, f"modules outside the layers: {stray}; put them in a folder of LAYERS"


def test_imports_point_downward() -> None:
    bad = []
    for name, path in FILES.items():
        own = layer(name)
        if own is None:
            continue
        top, nested = imports(path, type_checking=True)
        for target in top | nested:
            theirs = layer(target)
            if theirs is not None and theirs > own:
                bad.append(f"{name} -> {target}")
    assert not bad, "imports from a layer above: " + ", ".join(sorted(bad))


def test_the_engine_layer_imports_no_provider_no_tool_no_agent() -> None:
    above = ("tokenwire.providers", "tokenwire.tools", "tokenwire.api")
    for name, path in FILES.items():
        own = layer(name)
        if own is None or own >= 5:  # events … engine: the first five layers
            continue
        top, nested = imports(path, type_checking=True)
        bad = sorted(t for t in top | nested if t.startswith(above))
        assert not bad, f"{name} imports {bad}: the engine's layer must not"


def test_no_module_imports_a_private_name_of_another() -> None:
    bad = []
    for name, path in FILES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tokenwire"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{name}: from {node.module} import {alias.name}")
    assert not bad, "private names imported across modules: " + "; ".join(bad)


def test_no_module_is_over_max_lines() -> None:
    long = {
        name: n
        for name, path in FILES.items()
        if name not in GENERATED and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def test_importing_tokenwire_loads_no_model_backend() -> None:
    code = (
        "import sys, tokenwire, tokenwire.engine, tokenwire.log, tokenwire.core.lifecycle\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('tokenwire.providers'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing the core loaded {out}"


def test_no_import_cycles() -> None:
    graph = {name: {t for t in imports(path, type_checking=True)[0] if t in ALL} for name, path in FILES.items()}
    # A package imports its own submodules to re-export them; that is not a cycle of concepts.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)


def test_no_tokenwire_import_hidden_inside_a_function() -> None:
    hidden = []
    for name, path in FILES.items():
        _, nested = imports(path)
        hidden += [(name, t) for t in nested if (name, t) not in LAZY_FOR_EXTRAS]
    assert not hidden, f"imports inside functions: {hidden}"


def test_no_submodule_is_shadowed_by_an_attribute() -> None:
    for info in pkgutil.walk_packages(tokenwire.__path__, "tokenwire."):
        parent_name, _, child = info.name.rpartition(".")
        if info.name == "tokenwire.testing.pytest_plugin" or child.startswith("_"):
            continue
        module = importlib.import_module(info.name)
        parent = importlib.import_module(parent_name)
        attr = getattr(parent, child, module)
        assert attr is module, f"{parent_name}.{child} is {attr!r}, not the module {info.name}"


def test_every_public_exception_derives_from_tokenwire_error_and_lives_in_errors() -> None:
    for name in sorted(ALL):
        if name in ("tokenwire.testing.pytest_plugin", "tokenwire.__main__"):
            continue
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                assert issubclass(obj, TokenwireError), f"{name}.{public} does not derive from TokenwireError"
                assert obj.__module__ == "tokenwire.errors", f"{name}.{public} is defined in {obj.__module__}"
