"""The batch command never loses or fakes work: whose answers, odd outputs, leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mpt_async.testing import Emulator

from .clientkit import scrubbed_env


def _batch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpt_async", "batch", *args],
        capture_output=True,
        text=True,
        env=scrubbed_env() if env is None else env,
        timeout=60,
        check=False,
    )


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _prompts(tmp_path: Path, count: int = 3) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'"question {i}"\n' for i in range(count)), encoding="utf-8")
    return prompts


def test_records_name_their_service_and_another_one_redoes_them(tmp_path: Path) -> None:
    """The emulator's answers are redone against the real service (here, another emulator)."""
    prompts, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    first = _batch(str(prompts), "-o", str(out), "--emulator")
    assert first.returncode == 0, first.stderr
    assert {(r["service"], r["model"]) for r in _records(out)} == {("emulator", "mpt-30b-instruct")}
    with Emulator() as real:
        env = scrubbed_env(QIANFAN_API_KEY=real.v2_api_key, QIANFAN_BASE_URL=real.base_url)
        second = _batch(str(prompts), "-o", str(out), env=env)
        asked = len([r for r in real.requests if r.kind == "chat"])
        address = real.base_url
    assert second.returncode == 0, second.stderr
    assert asked == 3  # every line asked again
    records = _records(out)
    assert sorted(r["line"] for r in records) == [1, 2, 3]  # one record per line
    assert {r["service"] for r in records} == {address}


def test_another_model_redoes_the_lines_the_same_one_skips_them(tmp_path: Path) -> None:
    """A resume against the same service and model skips; another --endpoint redoes."""
    prompts, out = _prompts(tmp_path, 2), tmp_path / "out.jsonl"
    assert _batch(str(prompts), "-o", str(out), "--emulator").returncode == 0
    again = _batch(str(prompts), "-o", str(out), "--emulator")
    assert "2 skipped" in again.stderr
    other = _batch(str(prompts), "-o", str(out), "--emulator", "--endpoint", "other-model")
    assert other.returncode == 0, other.stderr
    assert "2 to do again" in other.stderr
    assert {r["model"] for r in _records(out)} == {"other-model"}
    assert len(_records(out)) == 2


def test_records_of_older_versions_are_kept(tmp_path: Path) -> None:
    """A result written before records named their service counts as done (documented)."""
    prompts, out = _prompts(tmp_path, 1), tmp_path / "out.jsonl"
    out.write_text(json.dumps({"line": 1, "result": "an old answer"}) + "\n", encoding="utf-8")
    result = _batch(str(prompts), "-o", str(out), "--emulator")
    assert result.returncode == 0, result.stderr
    assert _records(out) == [{"line": 1, "result": "an old answer"}]


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_outputs_that_are_not_regular_files_are_usage_errors(tmp_path: Path, kind: str) -> None:
    """A FIFO, /dev/zero or a folder as output: exit 2 at once, nothing asked or read."""
    prompts = _prompts(tmp_path, 1)
    if kind == "fifo":
        output = tmp_path / "pipe"
        os.mkfifo(output)
    elif kind == "device":
        output = Path("/dev/zero")
    else:
        output = tmp_path
    result = _batch(str(prompts), "-o", str(output), "--emulator")  # a hang fails the timeout
    assert result.returncode == 2
    assert "not a regular file" in result.stderr
    assert "using the embedded emulator" not in result.stderr


def test_a_symlinked_output_is_rewritten_through_its_link(tmp_path: Path) -> None:
    """Resuming through a symbolic link rewrites its target; the link stays a link."""
    prompts = _prompts(tmp_path, 2)
    target = tmp_path / "real.jsonl"
    transient = {"line": 1, "error": {"code": "connection", "message": "reset"}}
    target.write_text(json.dumps(transient) + "\n", encoding="utf-8")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    result = _batch(str(prompts), "-o", str(link), "--emulator")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    records = _records(target)
    assert sorted(r["line"] for r in records) == [1, 2]
    assert all("result" in r for r in records)


def test_copies_left_by_a_killed_rewrite_are_removed(tmp_path: Path) -> None:
    """A dead run's half-written copy is deleted; a live run's copy is left alone."""
    prompts, out = _prompts(tmp_path, 1), tmp_path / "out.jsonl"
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    dead = tmp_path / f".mpt_async-batch-out.jsonl.{dead_pid.pid}.abc123"
    live = tmp_path / f".mpt_async-batch-out.jsonl.{os.getpid()}.def456"
    other = tmp_path / f".mpt_async-batch-another.jsonl.{dead_pid.pid}.ghi789"
    for leftover in (dead, live, other):
        leftover.write_text("partial", encoding="utf-8")
    result = _batch(str(prompts), "-o", str(out), "--emulator")
    assert result.returncode == 0, result.stderr
    assert not dead.exists()
    assert live.exists()  # another run (this test's process) may be rewriting right now
    assert other.exists()  # another output's copy is not this run's business
