"""The questions of an interactive ``chat``: edited lines on a terminal, else plain lines.

On a terminal (standard input and output both), lines are read with :func:`input` and the
standard library's :mod:`readline` (imported here, only then): arrow keys move the cursor,
and the up arrow recalls the session's earlier questions. Otherwise lines are read as they
come, with no prompt.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["EXIT_WORDS", "LineReader"]

#: Typed alone on a line, these end the session.
EXIT_WORDS = frozenset({"/exit", "/quit"})
_PROMPT = "> "


class LineReader:
    """Reads one question at a time from standard input.

    Attributes:
        interactive: Whether standard input is a terminal (a person is typing).
    """

    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        self._stdin = stdin
        self._stderr = stderr
        self.interactive = _isatty(stdin)
        self._editing = self.interactive and _isatty(stdout) and _load_readline()

    def question(self) -> str | None:
        """The next question, or ``None`` when the session ends.

        It ends at end of input (Ctrl-D), on an empty line, and on ``/exit`` or ``/quit``.

        Raises:
            KeyboardInterrupt: Ctrl-C at the prompt.
        """
        line = self._read()
        if line is None:
            if self.interactive:
                print(file=self._stderr)  # leave the shell's prompt on a line of its own
            return None
        question = line.strip()
        return question if question and question not in EXIT_WORDS else None

    def _read(self) -> str | None:
        if self._editing:
            try:
                return input(_PROMPT)
            except EOFError:
                return None
        if self.interactive:
            print(_PROMPT, end="", file=self._stderr, flush=True)
        try:
            line = self._stdin.readline()
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return line or None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def _load_readline() -> bool:
    """Import :mod:`readline`, which gives :func:`input` line editing and history."""
    if sys.stdin is not sys.__stdin__ or sys.stdout is not sys.__stdout__:
        return False  # input() edits lines only on the real standard streams
    try:
        import readline  # noqa: F401 - importing it is what turns editing on
    except ImportError:  # not built on this platform
        return False
    return True
