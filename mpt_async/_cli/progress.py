"""The ``batch`` command's progress line on standard error, and its closing summary."""

from __future__ import annotations

import time
from typing import IO

import attrs

__all__ = ["Counts", "Progress", "summary"]

_BAR_WIDTH = 24
_PROGRESS_EVERY = 0.1  # seconds between two redraws of the progress bar


@attrs.define
class Counts:
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0  # skipped lines whose record is a permanent error


class Progress:
    """A one-line progress bar on standard error, redrawn in place (carriage returns)."""

    def __init__(self, stream: IO[str], total: int | None) -> None:
        self._stream = stream
        self._total = total
        self._width = 0
        self._last = 0.0
        self.shown = total is not None

    def update(self, counts: Counts, *, force: bool = False) -> None:
        if self._total is None:
            return
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_EVERY:
            return
        self._last = now
        done = counts.answered + counts.failed
        share = done / self._total if self._total else 1.0
        filled = min(_BAR_WIDTH, int(share * _BAR_WIDTH))
        text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{self._total}"
        text += f" {int(share * 100)}%"
        if counts.failed:
            text += f", {counts.failed} failed"
        # Pad with blanks over what a longer previous line left behind.
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def close(self, counts: Counts) -> None:
        if self._total is not None:
            self.update(counts, force=True)
            self._stream.write("\n")
            self._stream.flush()


def summary(counts: Counts, stopped: bool) -> str:
    text = f"{counts.answered} answered, {counts.failed} failed, {counts.skipped} skipped"
    if counts.failed_before:
        text += f" ({counts.failed_before} of them failed in an earlier run)"
    if stopped:
        text += "; stopped early: run the same command again to resume"
    return text
