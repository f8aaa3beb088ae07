"""Worker processes started together, and a ``redis-server`` of their own.

The sections that measure a fleet (``redis``, ``quota``, ``priority``) start workers
(``python -m benchmarks.<module> '{json}'``) that print ``ready``, wait for a line on stdin,
work, and print one result line; and a ``redis-server`` on a free loopback port, in a
scratch directory, stopped at the end.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._section import child_env

#: Why a section skips its Redis part on a machine without the server.
NO_REDIS = "redis-server is not installed (Debian package redis-server)"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A fresh ``redis-server``'s URL while the block runs; ``None`` if it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="mpt-bench-redis-") as directory:
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        server = subprocess.Popen([*args, "--dir", directory], stdout=subprocess.DEVNULL)
        try:
            _wait_listening(port, server)
            yield f"redis://127.0.0.1:{port}"
        finally:
            server.kill()
            server.wait()


def _wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:  # noqa: PERF203 - polling until it listens
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not start")


def spawn(module: str, spec: dict[str, Any], scratch: Path) -> subprocess.Popen[str]:
    """Start ``python -m <module> '<spec as JSON>'``, its stdin and stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", module, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(scratch),
        cwd=scratch,
    )


def say(proc: subprocess.Popen[str], line: str) -> None:
    """Write one line to a worker's stdin."""
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def start_together(procs: list[subprocess.Popen[str]]) -> None:
    """Wait until every worker printed ``ready``, then tell them all to go."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a worker did not get ready (exit {proc.poll()})")
    for proc in procs:
        say(proc, "go")


def result(proc: subprocess.Popen[str], timeout: float, prefix: str) -> dict[str, Any]:
    """The worker's result: the JSON after ``prefix`` on its last such line."""
    out, _ = proc.communicate(timeout=timeout)
    for line in reversed(out.splitlines()):
        if line.startswith(prefix):
            return dict(json.loads(line[len(prefix) :]))
    raise RuntimeError(f"a worker failed (exit {proc.returncode})")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    """Kill the workers still running, and reap them."""
    for proc in procs:
        proc.kill()
        proc.wait()
