"""Every Python example of the README and the documentation runs against the emulator."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import mpt_async
from mpt_async.testing import Emulator

from . import docs_examples
from .clientkit import FAST, HI, clear_credentials, scrubbed_env

PAGES = [p for p in docs_examples.pages() if docs_examples.examples(p)]


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Path:
    """A working directory with the files examples read; credentials aim at the emulator."""
    for name, content in docs_examples.FILES.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    clear_credentials(monkeypatch)
    monkeypatch.setenv("QIANFAN_AK", emulator.api_key)
    monkeypatch.setenv("QIANFAN_SK", emulator.secret_key)
    monkeypatch.setenv("QIANFAN_BASE_URL", emulator.base_url)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
async def namespace(emulator: Emulator, scratch: Path) -> AsyncIterator[dict[str, Any]]:
    """The names a page's fragments may use (see ``tests/docs_examples.py``)."""
    ns: dict[str, Any] = {"__name__": "__docs__"}
    exec(docs_examples.PREAMBLE, ns)
    async with mpt_async.Client(
        auth=mpt_async.AccessTokenAuth(emulator.api_key, emulator.secret_key),
        base_url=emulator.base_url,
        backoff=FAST,
    ) as client:
        ns.update(
            client=client,
            emu=emulator,
            messages=list(HI),
            api_key=emulator.api_key,
            secret_key=emulator.secret_key,
            questions=["What is MPT-30B?", "Who trained it?", "How long is its context?"],
        )
        assert set(docs_examples.FIXTURES) <= set(ns)
        yield ns


async def run_page(path: Path, ns: dict[str, Any]) -> int:
    """Run a page's examples in order; return how many ran."""
    count = 0
    for example in docs_examples.examples(path):
        code = example.code()
        if example.is_fragment:
            result = eval(code, ns)
            if inspect.iscoroutine(result):
                with anyio.fail_after(60):
                    await result
        else:  # a whole program, with its own event loop: in a thread of its own
            await anyio.to_thread.run_sync(exec, code, {"__name__": "__main__"})
        count += 1
    return count


@pytest.mark.anyio
@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(docs_examples.ROOT)))
async def test_page_examples_run(path: Path, namespace: dict[str, Any]) -> None:
    """Each of the page's Python examples runs to its end against the emulator."""
    ran = await run_page(path, namespace)
    assert ran == len(docs_examples.examples(path)) > 0


def test_examples_are_found() -> None:
    """The README, the tutorial and the docstrings have examples; both kinds occur."""
    readme = docs_examples.examples(docs_examples.ROOT / "README.md")
    tutorial = docs_examples.examples(docs_examples.ROOT / "docs" / "tutorial.md")
    assert readme
    assert not all(e.is_fragment for e in tutorial)
    assert any(e.is_fragment for p in PAGES for e in docs_examples.examples(p))
    assert docs_examples.examples(docs_examples.ROOT / "mpt_async" / "testing" / "__init__.py")


COMMANDS = [c for p in docs_examples.pages() for c in docs_examples.commands(p)]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.where)
def test_page_commands_run(command: docs_examples.Command, scratch: Path) -> None:
    """Each ``chat`` and ``batch`` command line shown on a page succeeds against the emulator."""
    env = scrubbed_env(
        PYTHONPATH=str(docs_examples.ROOT),
        **{k: v for k, v in os.environ.items() if k.startswith("QIANFAN_")},
        HOME=str(scratch),
        XDG_CACHE_HOME=str(scratch / "cache"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "mpt_async", *command.argv],
        input="What is MPT-30B?\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=scratch,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() or (scratch / "replies.jsonl").exists()


def test_commands_are_found() -> None:
    """The command-line page shows chat commands, and the batch page a batch command."""
    assert any(c.argv[0] == "chat" for c in COMMANDS)
    assert any(c.argv[0] == "batch" for c in COMMANDS)
