"""docs/architecture.md names every module of the package, and only those; no import circles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mpt_async"


def test_the_layout_page_lists_every_module() -> None:
    """Each module has its row in docs/architecture.md; no row names a module that is gone."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([\w/]+\.py)` \|", page, flags=re.MULTILINE))
    modules = {p.name for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - rows == set(), "add a row to docs/architecture.md for each new module"
    assert rows - modules == set(), "remove the rows of modules that are gone"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_at_load(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules a module imports when it loads (not for type checkers only)."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue  # a function's import runs later, on first use
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.ImportFrom) and child.module:
                named = {f"{child.module}.{alias.name}" for alias in child.names} & modules
                found |= named or {child.module}
            elif isinstance(child, ast.Import):
                found |= {alias.name for alias in child.names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports when it loads."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    modules = set(paths)
    return {
        name: _imports_at_load(ast.parse(path.read_text(encoding="utf-8")), modules) - {name}
        for name, path in paths.items()
    }


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 while on the path, 2 once done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                circles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, path)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return circles


def test_the_modules_import_each_other_without_circles() -> None:
    """No module imports, when it loads, a module that imports it back (however far round)."""
    graph = import_graph()
    assert "mpt_async._reply" in graph["mpt_async._dialect"]  # the walk sees the imports
    assert _circles(graph) == []


def test_the_circle_check_finds_a_circle() -> None:
    """The check above is not vacuous: a graph with a circle has it reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c", "a"]]
