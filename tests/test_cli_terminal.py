"""The interactive ``chat`` on a real pseudo-terminal: line editing, history, Ctrl-C, Ctrl-D."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from mpt_async.testing import Emulator, Fault

from .clientkit import blocks_sigint, scrubbed_env

fcntl = pytest.importorskip("fcntl", reason="pseudo-terminals need a POSIX system")
termios = pytest.importorskip("termios", reason="pseudo-terminals need a POSIX system")

#: Generous: the suite must pass with both cores busy.
WAIT = 60.0
CTRL_C, CTRL_D = b"\x03", b"\x04"
LEFT, UP = b"\x1b[D", b"\x1b[A"


class Terminal:
    """The master side of a pseudo-terminal, with everything the program printed so far."""

    def __init__(self, master: int) -> None:
        self._master = master
        self._seen = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # the program ended: the slave side is closed
                data = b""
            with self._changed:
                self._seen += data
                self._changed.notify_all()
            if not data:
                return

    @property
    def text(self) -> str:
        with self._changed:
            return self._seen.decode("utf-8", "replace")

    def wait_for(self, words: str, *, count: int = 1) -> None:
        """Wait until ``words`` has been printed ``count`` times."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while self._seen.decode("utf-8", "replace").count(words) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"never printed {words!r} x{count}:\n{self.text}"
                self._changed.wait(left)

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)


def _take_the_terminal() -> None:  # pragma: no cover - runs in the child
    """Make standard input the child's controlling terminal, so that Ctrl-C sends SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def chat(emulator: Emulator) -> Iterator[tuple[subprocess.Popen[bytes], Terminal]]:
    """``python -m mpt_async chat`` on a pseudo-terminal, talking to the session's emulator."""
    master, slave = os.openpty()
    env = scrubbed_env(
        QIANFAN_AK=emulator.api_key,
        QIANFAN_SK=emulator.secret_key,
        QIANFAN_BASE_URL=emulator.base_url,
        TERM="xterm",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mpt_async", "chat", "--no-token-cache"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=_take_the_terminal,  # only an ioctl, before exec
    )
    os.close(slave)
    try:
        yield process, Terminal(master)
    finally:
        process.kill()
        process.wait(timeout=WAIT)
        os.close(master)


def _wait_until_reading_keys(process: subprocess.Popen[bytes]) -> None:
    """Wait until the chat's main thread sleeps in its wait for a key, where a person finds it.

    CPython's readline draws the prompt, then waits in ``select()``. A SIGINT that lands
    between the two is noticed only at the next key (a race inside CPython that no hand can
    hit, but a test typing at once can, when both cores are busy).
    """
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with open(f"/proc/{process.pid}/wchan") as wchan:
                where = wchan.read()
        except OSError:  # no /proc (not Linux): a short pause is the best there is
            time.sleep(0.5)
            return
        if "select" in where or "poll" in where:
            return
        assert time.monotonic() < deadline, f"the chat never waited for a key ({where!r})"
        time.sleep(0.01)


def _helper_threads_blocking_sigint(pid: int) -> list[bool]:
    """For each thread of ``pid`` but the main one: whether it blocks SIGINT (Linux only)."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    except OSError:
        pytest.skip("no /proc to read the threads' signal masks from")
    return [blocks_sigint(pid, tid) for tid in tids]


def _asked(emulator: Emulator) -> list[list[str]]:
    return [
        [m["content"] for m in r.body["messages"]] for r in emulator.requests if r.kind == "chat"
    ]


def test_ctrl_c_stops_only_the_answer_and_ctrl_d_ends_the_chat(
    chat: tuple[subprocess.Popen[bytes], Terminal], emulator: Emulator
) -> None:
    """Ctrl-C cuts a stalled answer, the chat goes on with its history intact, Ctrl-D exits 0."""
    process, terminal = chat
    terminal.wait_for("> ")
    emulator.inject(Fault.stall(60, after=1))  # the first answer stops after one chunk
    terminal.type(b"first question\r")
    terminal.wait_for('You asked: "first question"')
    terminal.type(CTRL_C)
    terminal.wait_for("answer stopped")
    terminal.wait_for("> ", count=2)
    # Line editing: the cursor moves back to insert the missing letter.
    terminal.type(b"secnd question" + LEFT * 11 + b"o\r")
    terminal.wait_for('You asked: "second question"')
    terminal.wait_for("> ", count=3)
    terminal.type(CTRL_D)
    assert process.wait(timeout=WAIT) == 0, terminal.text
    assert "Traceback" not in terminal.text
    # The stopped round left no trace in the history of the next one.
    assert _asked(emulator) == [["first question"], ["second question"]]


def test_history_recalls_the_last_question(
    chat: tuple[subprocess.Popen[bytes], Terminal], emulator: Emulator
) -> None:
    """The up arrow brings back the previous question; an empty line ends the chat with 0."""
    process, terminal = chat
    terminal.wait_for("> ")
    terminal.type(b"tell me again\r")
    terminal.wait_for("> ", count=2)
    terminal.type(UP + b"\r")
    terminal.wait_for('You asked: "tell me again"', count=2)
    terminal.wait_for("> ", count=3)
    terminal.type(b"\r")
    assert process.wait(timeout=WAIT) == 0, terminal.text
    assert _asked(emulator)[1][::2] == ["tell me again", "tell me again"]


def test_ctrl_c_at_the_prompt_ends_the_chat_with_130(
    chat: tuple[subprocess.Popen[bytes], Terminal],
) -> None:
    """Ctrl-C with no answer in progress ends the session, as documented (exit 130)."""
    process, terminal = chat
    terminal.wait_for("> ")
    _wait_until_reading_keys(process)
    # Only the main thread may take SIGINT: taken by the event loop's thread, it would not
    # wake the prompt.
    helpers = _helper_threads_blocking_sigint(process.pid)
    assert helpers, "the event loop runs in a thread of its own"
    assert all(helpers), helpers
    terminal.type(CTRL_C)
    assert process.wait(timeout=WAIT) == 130, terminal.text
    assert "Traceback" not in terminal.text


def test_readline_is_loaded_only_for_a_person_at_a_terminal() -> None:
    """Neither the CLI's import nor a chat over a pipe loads readline."""
    code = (
        "import sys; from mpt_async.__main__ import main; status = main(['chat', '--emulator']); "
        "print('readline' in sys.modules, status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input="hello\n",
        capture_output=True,
        text=True,
        env=scrubbed_env(),
        timeout=WAIT,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == "False 0", done.stderr
