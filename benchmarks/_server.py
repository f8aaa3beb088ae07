"""The emulator in its own process, pinned to its own core, always stopped at the end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

_BANNER = re.compile(r"listening on (http://[\d.]+:(\d+))")
_START_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cores() -> tuple[int | None, int | None]:
    """The (client, server) cores to pin to, or ``(None, None)`` when pinning is impossible."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def pin_self(core: int | None) -> None:
    """Pin this process (and the children it starts from now on) to one core."""
    if core is not None:
        os.sched_setaffinity(0, {core})


def _child_setup(core: int | None) -> None:
    # Runs in the child before exec: pin it before the server thread exists (threads
    # inherit the affinity they are created with), and let it die with its parent.
    if core is not None:
        os.sched_setaffinity(0, {core})
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmulatorProcess:
    """``python -m mpt_async emulator`` as a child process, with its HTTP controls.

    Args:
        stream_chunks: Chunks per streamed answer.
        core: The CPU to pin the server to, or ``None``.
        uvloop: Run the server's event loop on uvloop (if importable).
    """

    def __init__(self, *, stream_chunks: int = 50, core: int | None = None, uvloop: bool = False):
        self.stream_chunks = stream_chunks
        self.core = core
        self.uvloop = uvloop
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._proc is not None
        return self._proc.pid

    def _command(self) -> list[str]:
        args = ["emulator", "--port", "0", "--stream-chunks", str(self.stream_chunks)]
        if not self.uvloop:
            return [sys.executable, "-m", "mpt_async", *args]
        # The same command, with uvloop's policy set first (the server thread's
        # asyncio.run then gets a uvloop loop).
        code = (
            "import asyncio, runpy, sys, uvloop;"
            "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy());"
            f"sys.argv = ['mpt_async', *{args!r}];"
            "runpy.run_module('mpt_async', run_name='__main__', alter_sys=True)"
        )
        return [sys.executable, "-c", code]

    def start(self) -> EmulatorProcess:
        """Start the server and wait until its controls answer."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=lambda: _child_setup(self.core),
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not self.base_url:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start:\n" + self.log())
            match = _BANNER.search(self.log())
            if match:
                self.base_url = match.group(1)
            else:
                time.sleep(0.05)
        while True:  # the banner comes after the bind; make sure HTTP answers too
            try:
                self.stats()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def control(self, method: str, name: str, body: Any = None) -> Any:
        """Call ``/_emulator/{name}`` and return its JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The emulator's counters."""
        return self.control("GET", "stats")

    def configure(self, **settings: Any) -> None:
        """Change ``stream_chunks`` and/or ``chunk_delay`` while running."""
        self.control("POST", "config", settings)

    def reset(self) -> None:
        """Forget counters, tokens and records; restore the initial settings."""
        self.control("POST", "reset", {})

    def cpu_seconds(self) -> float | None:
        """CPU time the server process (all threads) has used, if the OS tells."""
        return process_cpu(self.pid)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def machine_busy() -> float | None:
    """CPU seconds all CPUs of the machine have spent busy since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def process_cpu(pid: int) -> float | None:
    """CPU seconds a process (all its threads) has used, from ``/proc``.

    The scheduler's nanosecond counters per thread when available, else the
    clock-tick counters of ``/proc/PID/stat`` (10 ms steps).
    """
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    else:
        return total / 1e9
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")" closing the command name: state is field 3, utime 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
