"""The layers as DESIGN.md draws them, checked on the source and in a fresh interpreter.

- the engine's layer (events, lifecycle, log, delivery, observers, engine) imports no provider,
  no tool and no agent; importing tokenwire loads no model backend;
- no import cycles between tokenwire modules, and no tokenwire import hidden inside a function
  (except where the target needs an optional extra, named below);
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
ENGINE_LAYER = ["events", "errors", "request", "provider", "limits", "lifecycle", "response", "log", "delivery"]
ENGINE_LAYER += ["observers", "engine", "_exit"]
# Function-level imports allowed because the target needs an optional extra (starlette, uvicorn, redis).
LAZY_FOR_EXTRAS = {
    ("tokenwire.cli", "tokenwire.server"),
    ("tokenwire.cli", "tokenwire.redis_log"),
    ("tokenwire.log", "tokenwire.redis_log"),  # the default log on Redis, only when TOKENWIRE_LOG says so
    ("tokenwire.server.app", "tokenwire.redis_log"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """tokenwire modules imported at module level and inside functions (TYPE_CHECKING excluded)."""
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
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
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


def test_the_engine_layer_imports_no_provider_no_tool_no_agent() -> None:
    for name in ENGINE_LAYER:
        top, nested = imports(FILES[f"tokenwire.{name}"])
        above = ("tokenwire.providers", "tokenwire.tools", "tokenwire.agent")
        bad = sorted(t for t in top | nested if t.startswith(above))
        assert not bad, f"tokenwire.{name} imports {bad}: the engine's layer must not"


def test_importing_tokenwire_loads_no_model_backend() -> None:
    code = (
        "import sys, tokenwire, tokenwire.engine, tokenwire.log, tokenwire.lifecycle\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('tokenwire.providers'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing the core loaded {out}"


def test_no_import_cycles() -> None:
    graph = {name: {t for t in imports(path)[0] if t in ALL} for name, path in FILES.items()}
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
