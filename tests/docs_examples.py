"""The Python examples of the documentation and the README, extracted so tests can run them.

Every fenced ``python`` block of ``README.md`` and ``docs/**/*.md``, and every ``Example::``
block of the package's docstrings (the API reference shows them), is an example, and every
example runs (``tests/test_docs_examples.py``) and is type-checked by mypy --strict and
pyright (``tests/test_docs_typing.py``). A block is one of two kinds:

- a **program**: a complete script (no ``await`` outside a function), run as it is, in a
  process of its own (``python example.py``, its lines numbered as on the page); a
  program that defines ``test_`` functions is a test file, run by pytest with the
  package's plugin (``mpt_emulator``, ``mpt_client``) and anyio's, and must pass;
- a **fragment**: code with top-level ``await`` / ``async with`` / ``async for``. The
  fragments of one page run in order in one namespace, like a session, on the test's event
  loop. They may use the names of :data:`PREAMBLE` and :data:`FIXTURES` without defining
  them: a ``client`` wired to the emulator, the emulator ``emu``, ``messages``, ...

The ``python -m mpt_async chat`` and ``batch`` lines of ``bash`` blocks run too, as
commands (the other lines install, export or start a server, and are not run).

All of them run with ``QIANFAN_API_KEY`` (so ``Client()`` speaks v2), ``QIANFAN_AK`` /
``QIANFAN_SK`` and ``QIANFAN_BASE_URL`` pointing at the
emulator, in a scratch directory holding ``questions.txt`` and ``prompts.jsonl``, with
``HOME`` and ``XDG_CACHE_HOME`` there too.
"""

from __future__ import annotations

import ast
import re
import shlex
import textwrap
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent

#: What every fragment can use without importing it (also run before the fragments).
PREAMBLE = """\
import anyio

import mpt_async
from mpt_async.testing import Emulator, Fault
"""

#: The names given to fragments, and their types (the signature they are checked under).
FIXTURES = {
    "client": "mpt_async.Client",
    "emu": "Emulator",
    "messages": "list[mpt_async.MessageLike]",
    "api_key": "str",
    "secret_key": "str",
    "questions": "list[str]",
}

#: The scratch directory's files that examples read.
FILES = {
    "questions.txt": "What is MPT-30B?\nWho trained it?\nHow long is its context?\n",
    "prompts.jsonl": '"What is MPT-30B?"\n{"messages": [{"role": "user", "content": "Hi"}]}\n',
}

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)[ \t]*(?P<info>[^\n]*)\n", re.MULTILINE)


@attrs.frozen
class Example:
    """One fenced ``python`` block."""

    path: Path
    line: int  #: the line of the block's first line of code, counted from 1
    source: str

    @property
    def where(self) -> str:
        """``docs/page.md:12``: where the example is, for messages."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def is_fragment(self) -> bool:
        """Whether the block awaits at top level (else it is a complete program)."""
        try:
            compile(self.source, self.where, "exec", dont_inherit=True)
        except SyntaxError:
            return True
        return False

    @property
    def is_pytest(self) -> bool:
        """Whether the block is a test file: a program that defines ``test_`` functions."""
        if self.is_fragment:
            return False
        tree = ast.parse(self.source)
        return any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
            for node in tree.body
        )

    def code(self) -> object:
        """The compiled block, with line numbers that point into the page."""
        padded = "\n" * (self.line - 1) + self.source
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if self.is_fragment else 0
        return compile(padded, str(self.path), "exec", flags=flags, dont_inherit=True)


def pages() -> list[Path]:
    """Every page whose examples run: the README, the docs' pages, the package's sources.

    A source file's examples are the ``Example::`` blocks of its docstrings, which the API
    reference shows.
    """
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
    sources = sorted(p for p in (ROOT / "mpt_async").rglob("*.py") if examples(p))
    return [ROOT / "README.md", *docs, *sources]


def examples(path: Path) -> list[Example]:
    """The ``python`` blocks of a Markdown page, or the docstring examples of a module."""
    if path.suffix == ".py":
        return _docstring_examples(path)
    text = path.read_text(encoding="utf-8")
    found: list[Example] = []
    pos = 0
    while match := _FENCE.search(text, pos):
        fence = match["fence"]
        end = text.find(f"\n{fence}", match.end() - 1)
        if end == -1:
            break
        body = text[match.end() : end + 1]
        pos = end + 1 + len(fence)
        if match["info"].strip() in ("python", "py", "{code-block} python"):
            line = text.count("\n", 0, match.end()) + 1
            found.append(Example(path, line, body))
    return found


_EXAMPLE_INTRO = re.compile(r"^\s*(For example|Examples?)::\s*$", re.IGNORECASE)


def _docstring_examples(path: Path) -> list[Example]:
    """The literal blocks introduced by ``Example::`` in a module's docstrings."""
    found: list[Example] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        body = getattr(node, "body", None)
        if not body or not isinstance(body, list) or not isinstance(body[0], ast.Expr):
            continue
        doc = body[0].value
        if not (isinstance(doc, ast.Constant) and isinstance(doc.value, str)):
            continue
        lines = doc.value.splitlines(True)
        for n, line in enumerate(lines):
            if _EXAMPLE_INTRO.match(line):
                found.append(_literal_block(path, doc.lineno + n + 1, lines[n + 1 :]))
    return sorted(found, key=lambda e: e.line)


def _literal_block(path: Path, after: int, lines: list[str]) -> Example:
    """The indented block at the start of ``lines`` (blank lines first skipped)."""
    skipped = 0
    while skipped < len(lines) and not lines[skipped].strip():
        skipped += 1
    block: list[str] = []
    for line in lines[skipped:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break
        block.append(line)
    while block and not block[-1].strip():
        block.pop()
    source = textwrap.dedent("".join(block))
    if not source.endswith("\n"):
        source += "\n"
    return Example(path, after + skipped, source)


def typing_modules(path: Path) -> dict[str, str]:
    """Modules that hold one page's examples as mypy and pyright see them.

    Each program is a module of its own. The page's fragments, in order, are the body of
    one ``async def`` whose parameters are the fixtures, so they are checked as they run.
    Blank lines put each example at its line of the page, so the checkers' line numbers are
    the page's (fragments are indented by 4 more columns).
    """
    stem = re.sub(r"\W", "_", str(path.relative_to(ROOT).with_suffix("")))
    modules: dict[str, str] = {}
    params = ", ".join(f"{name}: {kind}" for name, kind in FIXTURES.items())
    fragments = f"{PREAMBLE}\n\nasync def _fragments({params}) -> None:\n"
    has_fragments = False
    for n, example in enumerate(examples(path)):
        if example.is_fragment:
            has_fragments = True
            fragments += _at_line(fragments, example.line, f"    # {example.where}\n")
            fragments += "".join(
                f"    {line}" if line.strip() else line for line in example.source.splitlines(True)
            )
        else:
            modules[f"{stem}_{n}"] = _at_line("", example.line, "") + example.source
    if has_fragments:
        modules[f"{stem}_fragments"] = fragments
    return modules


def _at_line(text: str, line: int, fallback: str) -> str:
    """Blank lines that make what follows ``text`` start at ``line``, or ``fallback``."""
    missing = line - 1 - text.count("\n")
    return "\n" * missing if missing >= 0 else fallback


#: The command lines of ``bash`` blocks that run (the others install, export or serve).
RUN_COMMANDS = ("python -m mpt_async chat", "python -m mpt_async batch")


@attrs.frozen
class Command:
    """One command line of a ``bash`` block that the tests run."""

    where: str
    argv: list[str]  #: after ``python -m mpt_async``


def commands(path: Path) -> list[Command]:
    """The ``chat`` and ``batch`` command lines of a page's ``bash`` blocks."""
    text = path.read_text(encoding="utf-8")
    found: list[Command] = []
    for match in re.finditer(r"^```bash\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        first = text.count("\n", 0, match.start(1)) + 1
        for offset, line in enumerate(match[1].splitlines()):
            if line.startswith(RUN_COMMANDS):
                argv = shlex.split(line, comments=True)[3:]
                found.append(Command(f"{path.relative_to(ROOT)}:{first + offset}", argv))
    return found
