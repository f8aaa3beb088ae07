"""The README's and the documentation's examples type-check under mypy --strict and pyright."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import docs_examples

ROOT = docs_examples.ROOT


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every page's examples written out as modules (see ``typing_modules``)."""
    out = tmp_path_factory.mktemp("doc_examples")
    for page in docs_examples.pages():
        for name, source in docs_examples.typing_modules(page).items():
            (out / f"{name}.py").write_text(source, encoding="utf-8")
    return out


def _tool(module: str) -> list[str]:
    """The command that runs a checker from this interpreter's environment."""
    if module == "pyright":
        exe = shutil.which("pyright", path=str(Path(sys.executable).parent))
        if exe is None:
            pytest.fail("pyright is not installed: pip install -e '.[docs]'")
        return [exe]
    return [sys.executable, "-m", module]


#: Said with every failure: how to find the example behind a checker's message.
HINT = (
    "\n(docs_howto_x_fragments.py:N is line N of docs/howto/x.md; README_0.py:N is line N of"
    " README.md; fragments are checked as the body of one async def per page)"
)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(ROOT), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_readme_has_checked_examples(examples_dir: Path) -> None:
    """The README's examples are among the modules checked."""
    assert any(p.name.startswith("README") for p in examples_dir.iterdir())


def test_examples_pass_mypy_strict(examples_dir: Path) -> None:
    """Mypy --strict finds nothing wrong in any example."""
    cache = ROOT / ".mypy_cache" / "doc_examples"
    cmd = [*_tool("mypy"), "--strict", "--cache-dir", str(cache), "--no-error-summary", "."]
    result = _run(cmd, examples_dir)
    assert result.returncode == 0, result.stdout + result.stderr + HINT


def test_examples_pass_pyright(examples_dir: Path) -> None:
    """Pyright (standard mode) finds nothing wrong in any example."""
    config = {"extraPaths": [str(ROOT)], "pythonVersion": "3.10", "typeCheckingMode": "standard"}
    (examples_dir / "pyrightconfig.json").write_text(json.dumps(config), encoding="utf-8")
    result = _run([*_tool("pyright"), "--pythonpath", sys.executable], examples_dir)
    assert result.returncode == 0, result.stdout + result.stderr + HINT
