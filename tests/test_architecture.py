"""docs/architecture.md names every module of the package, and only those."""

from __future__ import annotations

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
