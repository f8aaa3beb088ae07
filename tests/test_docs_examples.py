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
    monkeypatch.setenv("QIANFAN_API_KEY", emulator.v2_api_key)  # read first: examples speak v2
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


async def run_page(path: Path, ns: dict[str, Any], backend: str) -> int:
    """Run a page's examples in order; return how many ran.

    Fragments run on the test's backend. Programs and test files choose their own event
    loop: they run on the asyncio parameters only (programs once per transport, test files
    once).
    """
    count = 0
    for example in docs_examples.examples(path):
        if example.is_fragment:
            result = eval(example.code(), ns)
            if inspect.iscoroutine(result):
                with anyio.fail_after(60):
                    await result
        elif not _runs_on(example, backend):
            continue
        elif example.is_pytest:  # a user's test file: pytest must pass it
            await anyio.to_thread.run_sync(run_test_file, example, Path.cwd())
        else:  # a whole program: in a process of its own, as a user runs it
            await anyio.to_thread.run_sync(run_program, example, Path.cwd())
        count += 1
    return count


def _runs_on(example: docs_examples.Example, backend: str) -> bool:
    """Whether the example runs under this parameter of ``anyio_backend``."""
    if example.is_fragment:
        return True
    if example.is_pytest:
        return backend == "asyncio"
    return backend in ("asyncio", "asyncio+httpx")


def _run(args: list[str], where: Path) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``where``, no input, the package importable, as a user's shell would."""
    return subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(docs_examples.ROOT)},
        cwd=where,
        check=False,
    )


def run_program(example: docs_examples.Example, where: Path) -> None:
    """Run a program example as ``python example.py`` (its lines numbered as on the page)."""
    script = where / f"example_{example.line}.py"
    script.write_text("\n" * (example.line - 1) + example.source, encoding="utf-8")
    result = _run([sys.executable, script.name], where)
    assert result.returncode == 0, f"{example.where}:\n{result.stdout}{result.stderr}"


def run_test_file(example: docs_examples.Example, where: Path) -> None:
    """Run a test-file example with pytest, as a user would (no conftest, the plugin on)."""
    test_file = where / f"test_example_{example.line}.py"
    test_file.write_text(example.source, encoding="utf-8")
    plugins = ["-p", "anyio", "-p", "mpt_async.testing.pytest_plugin", "-p", "no:cacheprovider"]
    result = _run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "--rootdir", str(where), test_file.name],
        where,
    )
    assert result.returncode == 0, f"{example.where}:\n{result.stdout}{result.stderr}"
    assert " passed" in result.stdout


@pytest.mark.anyio
@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(docs_examples.ROOT)))
async def test_page_examples_run(
    path: Path, namespace: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """Each of the page's Python examples runs to its end against the emulator."""
    backend = request.node.callspec.params["anyio_backend"]
    ran = await run_page(path, namespace, backend)
    assert ran == len([e for e in docs_examples.examples(path) if _runs_on(e, backend)])


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
