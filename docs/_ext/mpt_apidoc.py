"""Pages generated from the code: the API reference, the error codes, the commands' help.

``.. mpt-api:: module``: reference entries driven by the module's ``__all__``.

A page lists names by topic (``:names: Client Timeouts``); a last directive with ``:rest:``
documents every name of ``__all__`` that no earlier directive of the page named (under its
``:title:``, when there is one), so a public name added to the package shows up in the
reference without editing the docs.  A name listed
that is not in ``__all__`` is a build error.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.parsing import nested_parse_to_nodes


def _entry(module: str, name: str, obj: object) -> list[str]:
    """The autodoc directive that documents one public name."""
    target = f"{module}.{name}"
    if inspect.isclass(obj):
        lines = [f".. autoclass:: {target}"]
        if issubclass(obj, BaseException):
            lines.append("   :show-inheritance:")
        return [*lines, "   :members:", ""]
    if inspect.isfunction(obj):
        return [f".. autofunction:: {target}", ""]
    return [f".. autodata:: {target}", "   :no-value:", ""]


class PublicNames(SphinxDirective):
    """Document names of a module's ``__all__``: the listed ones, or all not yet listed."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {
        "names": directives.unchanged,
        "rest": directives.flag,
        "title": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """The autodoc entries of the chosen names."""
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        public = list(module.__all__)
        done: set[str] = self.env.temp_data.setdefault(f"mpt-api:{module_name}", set())
        if "rest" in self.options:
            names = [n for n in public if n not in done]
        else:
            names = self.options.get("names", "").split()
            unknown = [n for n in names if n not in public]
            if unknown:
                msg = f"not in {module_name}.__all__: {', '.join(unknown)}"
                raise self.error(msg)
        done.update(names)
        if not names:
            return []
        lines: list[str] = []
        if "title" in self.options:
            title = self.options["title"]
            lines += [title, "-" * len(title), ""]
        for name in names:
            lines.extend(_entry(module_name, name, getattr(module, name)))
        return nested_parse_to_nodes(
            self.state,
            StringList(lines, source=self.get_source_info()[0]),
            allow_section_headings=True,
        )


_ACTIONS = {
    "retry": "retries",
    "refresh": "fetches a new token and replays once; then raises",
    "raise": "raises",
}
#: HTTP statuses shown in the table of replies without an error body.
_STATUSES = (400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 504)


class CodeTable(SphinxDirective):
    """The table of the service's error codes, read from the client's own code table."""

    option_spec: ClassVar[dict[str, Any]] = {"http": directives.flag}

    def run(self) -> list[nodes.Node]:
        """The table, as reST."""
        from mpt_async import _codes

        if "http" in self.options:
            header = ["HTTP status", "error", "the client"]
            rows = []
            for status in _STATUSES:
                action, cls = _codes.classify_status(status)
                rows.append([str(status), f":class:`~mpt_async.{cls.__name__}`", action.value])
        else:
            header = ["code", "message", "error", "the client"]
            # v1's integer codes first, then v2's string codes.
            rows = [
                [f"``{code}``", message, f":class:`~mpt_async.{cls.__name__}`", action.value]
                for code, (action, cls, message) in sorted(
                    _codes.CODE_TABLE.items(), key=lambda item: (isinstance(item[0], str), item[0])
                )
            ]
        for row in rows:
            row[-1] = _ACTIONS.get(row[-1], row[-1])
        lines = [".. list-table::", "   :header-rows: 1", ""]
        for row in [header, *rows]:
            lines.append(f"   * - {row[0]}")
            lines.extend(f"     - {cell}" for cell in row[1:])
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), 0, container)
        return container.children


class CommandHelp(SphinxDirective):
    """The ``--help`` text of ``python -m mpt_async [COMMAND]``, as the command prints it."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        """A literal block of the help text."""
        root = Path(self.env.srcdir).parent
        env = {**os.environ, "COLUMNS": "90", "NO_COLOR": "1", "PYTHONPATH": str(root)}
        result = subprocess.run(  # noqa: S603  (the arguments are the page's own)
            [sys.executable, "-m", "mpt_async", *self.arguments, "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise self.error(f"mpt_async {' '.join(self.arguments)} --help: {result.stderr}")
        block = nodes.literal_block(result.stdout, result.stdout)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("mpt-api", PublicNames)
    app.add_directive("mpt-codes", CodeTable)
    app.add_directive("mpt-help", CommandHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
