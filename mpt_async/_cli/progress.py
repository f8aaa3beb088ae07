"""The ``batch`` command's progress line on standard error, and its closing summary.

The line reads ``[#######.................] 120/400 30%, 2 failed, 3.4/s, ETA 1m22s, 1
blank line skipped``. The rate is measured over the last :data:`RATE_WINDOW` seconds, so it
follows a run that speeds up or slows down (rate limits, retries) instead of averaging over
the whole run; the ETA is the lines left at that rate.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from mpt_async._ratelimit import LearnedLimits

__all__ = ["RATE_WINDOW", "Counts", "Progress", "duration", "summary"]

#: Seconds of recent progress the rate is measured over.
RATE_WINDOW = 30.0
_BAR_WIDTH = 24
_PROGRESS_EVERY = 0.1  # seconds between two redraws of the progress bar


@attrs.define
class Counts:
    """What a run has done so far."""

    answered: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0  # skipped lines whose record is a permanent error
    blank: int = 0  # blank lines, ignored

    @property
    def done(self) -> int:
        """Lines finished in this run, answered or failed."""
        return self.answered + self.failed


def duration(seconds: float) -> str:
    """``seconds`` in a few characters: ``45s``, ``3m05s``, ``2h03m``.

    Args:
        seconds: A duration, zero or more.
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class _Rate:
    """Lines per second over the last :data:`RATE_WINDOW` seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, done: int) -> float | None:
        """Record ``done`` lines now; the rate, or ``None`` until it can be measured."""
        now = self._clock()
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        start, done_then = samples[0]
        if now - start <= 0 or done == done_then:
            return None
        return (done - done_then) / (now - start)


class Progress:
    """A one-line progress bar on standard error, redrawn in place (carriage returns)."""

    def __init__(
        self, stream: IO[str], total: int | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._total = total
        self._clock = clock
        self._rate = _Rate(clock)
        self._width = 0
        self._last = float("-inf")
        self.shown = total is not None
        #: Reads the limits the client holds calls to (their rate is shown), if set.
        self.learned: Callable[[], LearnedLimits] | None = None

    def update(self, counts: Counts, *, force: bool = False) -> None:
        """Redraw the line, at most every tenth of a second unless ``force``.

        Args:
            counts: What the run has done so far.
            force: Redraw even if the line was drawn a moment ago.
        """
        if self._total is None:
            return
        now = self._clock()
        if not force and now - self._last < _PROGRESS_EVERY:
            return
        self._last = now
        text = self._line(counts, self._total)
        # Pad with blanks over what a longer previous line left behind.
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def _line(self, counts: Counts, total: int) -> str:
        done = counts.done
        share = done / total if total else 1.0
        filled = min(_BAR_WIDTH, int(share * _BAR_WIDTH))
        text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total} {int(share * 100)}%"
        if counts.failed:
            text += f", {counts.failed} failed"
        rate = self._rate.add(done)
        if rate is not None:
            text += f", {rate:.1f}/s"
            if done < total:
                text += f", ETA {duration((total - done) / rate)}"
        learned = None if self.learned is None else self.learned().qps
        if learned is not None:
            text += f", quota {learned:.1f}/s"
        if counts.blank:
            text += f", {counts.blank} blank line{'s' if counts.blank > 1 else ''} skipped"
        return text

    def close(self, counts: Counts) -> None:
        """Draw the line a last time, and end it.

        Args:
            counts: What the run did.
        """
        if self._total is not None:
            self.update(counts, force=True)
            self._stream.write("\n")
            self._stream.flush()


def summary(counts: Counts, stopped: bool) -> str:
    """The run's last line: ``N answered, M failed, K skipped``.

    Args:
        counts: What the run did.
        stopped: The run ended before the last line.
    """
    text = f"{counts.answered} answered, {counts.failed} failed, {counts.skipped} skipped"
    if counts.failed_before:
        text += f" ({counts.failed_before} of them failed in an earlier run)"
    if stopped:
        text += "; stopped early: run the same command again to resume"
    return text
