"""The package's functions stay short (complexity is ruff's C901, set in pyproject.toml)."""

from __future__ import annotations

import ast
import pathlib

import mpt_async

MAX_LINES = 50
PACKAGE = pathlib.Path(mpt_async.__file__).parent


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's length in lines, docstring lines excluded.

    The length runs from the first decorator (or the ``def`` line when there is none) to the
    last line of the body, both included, minus the lines of the docstring, if any.
    """
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    end = node.end_lineno or node.lineno
    length = end - start + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        length -= (first.end_lineno or first.lineno) - first.lineno + 1
    return length


def function_lengths() -> list[tuple[str, int]]:
    """Every function in the package as ``("path::qualname", length)``."""
    found: list[tuple[str, int]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()

        def walk(node: ast.AST, prefix: str, relative: str = relative) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = prefix + child.name
                    found.append((f"{relative}::{name}", _length(child)))
                    walk(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    walk(child, prefix + child.name + ".")
                else:
                    walk(child, prefix)

        walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_the_package_has_functions_to_measure() -> None:
    """The walk finds the package's functions (so the length check below is not vacuous)."""
    names = {name for name, _ in function_lengths()}
    assert "_client.py::Client.__init__" in names
    assert len(names) > 200


def test_no_function_is_longer_than_50_lines() -> None:
    """No function in mpt_async/ spans more than 50 lines, docstring excluded."""
    too_long = sorted(
        (f"{name} ({length} lines)" for name, length in function_lengths() if length > MAX_LINES),
    )
    assert not too_long, "functions over 50 lines: " + ", ".join(too_long)
