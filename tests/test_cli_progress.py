"""The ``batch`` command's progress line: bar, counts, rate, ETA and skipped blank lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mpt_async.__main__ import main
from mpt_async._cli.progress import Counts, Progress, duration
from mpt_async.testing import Emulator


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _last_line(stream: io.StringIO) -> str:
    return stream.getvalue().rsplit("\r", 1)[-1].rstrip()


def test_rate_and_eta_follow_the_recent_pace() -> None:
    """The rate is measured over the last 30 s, and the ETA is the lines left at that rate."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(stream, 100, clock)
    counts = Counts()
    progress.update(counts, force=True)
    assert _last_line(stream) == "[........................] 0/100 0%"
    clock.now += 10
    counts.answered = 20
    progress.update(counts)
    assert _last_line(stream) == "[####....................] 20/100 20%, 2.0/s, ETA 40s"
    # Slower for the last 30 s: the rate follows, the early burst is forgotten.
    for _ in range(6):
        clock.now += 10
        counts.answered += 2
        progress.update(counts)
    assert _last_line(stream).endswith("32/100 32%, 0.2/s, ETA 5m40s")


def test_failures_blank_lines_and_the_end() -> None:
    """Failures and blank lines are counted; a finished run shows no ETA."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(stream, 4, clock)
    progress.update(Counts(blank=1), force=True)
    assert _last_line(stream).endswith("0/4 0%, 1 blank line skipped")
    clock.now += 2
    progress.close(Counts(answered=3, failed=1, blank=2))
    assert stream.getvalue().endswith(
        "[########################] 4/4 100%, 1 failed, 2.0/s, 2 blank lines skipped\n"
    )


def test_no_line_without_a_total() -> None:
    """Without a terminal (no total), nothing is drawn."""
    stream = io.StringIO()
    progress = Progress(stream, None)
    progress.update(Counts(answered=1), force=True)
    progress.close(Counts(answered=1))
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s"), (7380, "2h03m")]
)
def test_durations_are_short(seconds: float, text: str) -> None:
    """ETAs read as seconds, minutes and seconds, or hours and minutes."""
    assert duration(seconds) == text


def test_the_command_shows_blank_lines_on_its_progress_line(
    env_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--progress draws the line with the rate, and counts the blank lines it skipped."""
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('"a"\n\n"b"\n   \n"c"\n', encoding="utf-8")
    assert main(["batch", str(prompts), "-o", str(tmp_path / "out.jsonl"), "--progress"]) == 0
    err = capsys.readouterr().err
    last = err.rsplit("\r", 1)[-1].splitlines()[0].rstrip()
    assert last.startswith("[########################] 3/3 100%, ")
    assert last.endswith("/s, 2 blank lines skipped")
    assert "mpt_async: 3 answered, 0 failed, 0 skipped" in err
