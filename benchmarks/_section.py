"""What a measurement of ``python -m benchmarks`` is: a :class:`Section`, run in a :class:`Context`.

To add one (say ``benchmarks/_redis_bench.py``): write a function ``run(ctx) -> dict`` that
measures (``ctx.worker(spec)`` runs a fresh worker process; ``ctx.emu`` is the emulator),
optional ``targets(result) -> rows`` / ``lines(result)`` / ``markdown(result)`` that report
it, and append ``Section("redis", run, ...)`` to ``SECTIONS`` in ``benchmarks/__main__.py``.
Its result lands in ``results["redis"]``; a section that fails (``RuntimeError``, a worker
timeout) is reported as failed and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._server import EmulatorProcess, _child_setup
from benchmarks._worker import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 300

#: A row of the targets table: what, value, limit, verdict ("met", "NOT MET", "info").
Row = list[str]


def verdict(ok: bool) -> str:
    """How the report words a target's outcome."""
    return "met" if ok else "NOT MET"


def target(what: str, value: float | None, limit: float, fmt: str = "{:.2f}") -> Row:
    """A targets-table row for ``value <= limit``."""
    if value is None:
        return [what, "n/a", f"<= {limit:g}", "n/a"]
    return [what, fmt.format(value), f"<= {limit:g}", verdict(value <= limit)]


def child_env(scratch: Path) -> dict[str, str]:
    """The environment of worker processes: this repository first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Keep the qianfan SDK's cache (and its .env lookup, by the cwd) in a scratch directory.
    env["QIANFAN_CACHE_DIR"] = str(scratch / "qianfan-cache")
    env.pop("MPT_ASYNC_TRANSPORT", None)  # each row picks its transport itself
    return env


def run_worker(
    spec: dict[str, Any], scratch: Path, timeout: float = WORKER_TIMEOUT
) -> dict[str, Any]:
    """Run one fresh ``benchmarks._worker`` process and return what it measured."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=child_env(scratch),
        cwd=scratch,
        timeout=timeout,
        check=False,
        preexec_fn=lambda: _child_setup(None),  # dies with the parent
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"worker failed (exit {done.returncode}): {' | '.join(tail)}")


@dataclass
class Context:
    """What a section gets: the options, the running emulator, a scratch directory."""

    args: argparse.Namespace
    emu: EmulatorProcess
    scratch: Path
    results: dict[str, Any]
    log: Callable[[str], None]

    def worker(self, spec: dict[str, Any], timeout: float = WORKER_TIMEOUT) -> dict[str, Any]:
        """Run a fresh worker process on ``spec`` (``base_url`` and ``server_pid`` added)."""
        full = {"base_url": self.emu.base_url, "server_pid": self.emu.pid, **spec}
        return run_worker(full, self.scratch, timeout)


def _none(result: Any) -> list[Any]:
    return []


@dataclass(frozen=True)
class Section:
    """One measurement: ``run`` measures; the others report what it measured.

    Attributes:
        name: Its key in the results dictionary (and in ``--sections``).
        run: ``run(ctx) -> dict``, with the emulator running.
        targets: Its rows of the targets table.
        lines: Its lines in the console and in "Other measurements".
        markdown: A block of its own at the end of RESULTS.md (a ``##`` heading and text).
    """

    name: str
    run: Callable[[Context], dict[str, Any]]
    targets: Callable[[Any], list[Row]] = field(default=_none)
    lines: Callable[[Any], list[str]] = field(default=_none)
    markdown: Callable[[Any], list[str]] = field(default=_none)
