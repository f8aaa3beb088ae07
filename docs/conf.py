"""Sphinx configuration: MyST pages, the furo theme, autodoc with Google docstrings."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # this checkout's mpt_async, not an installed one
sys.path.insert(0, str(HERE / "_ext"))

import mpt_async

# The benchmark chart is shown when `nox -s bench` has made it (it is committed today).
if (HERE.parent / "benchmarks" / "cpu_per_call.png").is_file():
    tags.add("bench_chart")  # noqa: F821  (Sphinx provides `tags`)

project = "mpt_async"
author = "The mpt_async developers"
copyright = "The mpt_async developers"
release = mpt_async.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "mpt_apidoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "groupwise"  # classes claim module mpt_async: no source order
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True
napoleon_use_ivar = True  # an "Attributes:" section is a field list, not a second entry
napoleon_custom_sections = [("Keys", "params_style")]  # a TypedDict's keys, like arguments

html_theme = "furo"
html_title = f"mpt_async {release}"
html_static_path: list[str] = []
pygments_style = "friendly"
pygments_dark_style = "monokai"

# Every reference to an mpt_async name must resolve (a renamed class breaks the build); names
# outside the package (stdlib, httpx) and private ones (type aliases, enums of the emulator's
# internals) are shown as plain text.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!mpt_async\.)[\w.]+"),
    (r"py:.*", r"mpt_async(\.testing)?\._[\w.]+"),
]
