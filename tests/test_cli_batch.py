"""The ``batch`` command: JSON Lines in, JSON Lines out, resumable, over the emulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mpt_async.__main__ import main
from mpt_async._cli.outcome import is_transient
from mpt_async.testing import Emulator, Fault

from .clientkit import scrubbed_env

SECRET = "batch-test-secret-value-0123456789"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command; its output decoded by hand, so that carriage returns survive."""
    if env is None:  # no credentials: the embedded emulator, asked for
        args = (*args, "--emulator")
    done = subprocess.run(
        [sys.executable, "-m", "mpt_async", "batch", *args],
        capture_output=True,
        env=scrubbed_env() if env is None else env,
        timeout=30,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _by_line(path: Path) -> dict[int, dict[str, Any]]:
    records = _records(path)
    lines = [record["line"] for record in records]
    assert len(lines) == len(set(lines)), lines  # at most one record per input line
    return {record["line"]: record for record in records}


def _asked(record: dict[str, Any]) -> str:
    result: str = record["result"]
    return result.split('You asked: "', 1)[1].split('"', 1)[0]


def _write(path: Path, *lines: object) -> Path:
    path.write_text(
        "".join(
            (line if isinstance(line, str) and not line.strip() else json.dumps(line)) + "\n"
            for line in lines
        ),
        encoding="utf-8",
    )
    return path


def _summary(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if " answered, " in line]
    assert len(lines) == 1, stderr
    return lines[0]


def _asked_in_requests(emulator: Emulator) -> list[str]:
    return sorted(r.body["messages"][-1]["content"] for r in emulator.requests if r.kind == "chat")


# -- as a subprocess, with the embedded emulator ------------------------------------------


def test_mixed_file_answers_good_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    """Good lines get results, bad lines an error record each, and the run goes on (exit 1)."""
    prompts = tmp_path / "prompts.jsonl"
    _write(
        prompts,
        "first question",
        {"messages": [{"role": "user", "content": "second question"}], "top_p": 0.5},
        "",
        [{"role": "user", "content": "fourth question"}],
        {"messages": [{"role": "user", "content": "cold"}], "temperature": 0},
        {"prompt": "wrong shape"},
        "seventh question",
    )
    with prompts.open("a", encoding="utf-8") as file:
        file.write('{not json\n"\\ud800 a lone surrogate"\n')
    out = tmp_path / "replies.jsonl"
    result = _run(str(prompts), "-o", str(out), "--concurrency", "3")
    assert result.returncode == 1, result.stderr
    records = _by_line(out)
    assert sorted(records) == [1, 2, 4, 5, 6, 7, 8, 9]  # the blank line 3 has none
    for line, asked in {1: "first question", 2: "second question", 4: "fourth question"}.items():
        assert _asked(records[line]) == asked
        usage = records[line]["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert _asked(records[7]) == "seventh question"
    assert records[5]["error"]["code"] == "invalid_request"
    assert "temperature" in records[5]["error"]["message"]
    assert records[6]["error"] == {
        "code": "invalid_request",
        "message": records[6]["error"]["message"],
    }
    assert "prompt" in records[6]["error"]["message"]
    assert records[8]["error"]["code"] == "invalid_json"
    assert records[9]["error"]["code"] == "invalid_request"
    assert _summary(result.stderr) == "mpt_async: 4 answered, 4 failed, 0 skipped"
    assert "\r" not in result.stderr  # stderr is not a terminal: no progress bar
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_all_answered_exits_0_and_a_rerun_skips_everything(tmp_path: Path) -> None:
    """Every line answered exits 0; the same command again sends nothing and changes nothing."""
    prompts = _write(tmp_path / "in.jsonl", "a", "b", "c")
    out = tmp_path / "out.jsonl"
    first = _run(str(prompts), "-o", str(out), "--progress")
    assert first.returncode == 0, first.stderr
    assert "\r[" in first.stderr
    assert "3/3 100%" in first.stderr
    before = out.read_bytes()
    again = _run(str(prompts), "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert _summary(again.stderr) == "mpt_async: 0 answered, 0 failed, 3 skipped"
    assert "3 lines done by an earlier run" in again.stderr
    assert out.read_bytes() == before


def test_bad_options_and_files_exit_2_before_any_work(tmp_path: Path) -> None:
    """A missing input, -o onto the input, or a foreign output file: exit 2, one line, untouched."""
    prompts = _write(tmp_path / "in.jsonl", "a")
    foreign = tmp_path / "notes.txt"
    foreign.write_text('{"line": 1, "result": "ok"}\nmy shopping list\n', encoding="utf-8")
    cases = [
        ([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")], "cannot read"),
        ([str(prompts), "-o", str(prompts)], "must not be the input"),
        ([str(prompts), "-o", str(foreign)], "line 2, is not an answer"),
        ([str(prompts), "-o", str(tmp_path / "o.jsonl"), "--temperature", "2"], "temperature"),
        ([str(prompts), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "0"], "concurrency"),
    ]
    for argv, words in cases:
        result = _run(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("mpt_async: error: ")
        assert words in result.stderr
    assert foreign.read_text(encoding="utf-8").endswith("my shopping list\n")
    assert not (tmp_path / "o.jsonl").exists()


def test_interrupted_run_keeps_answers_and_resumes(tmp_path: Path, emulator: Emulator) -> None:
    """Ctrl-C keeps every finished answer (exit 130); the rerun answers only the rest."""
    prompts = _write(tmp_path / "in.jsonl", "q1", "q2", "q3", "q4")
    out = tmp_path / "out.jsonl"
    env = scrubbed_env(
        QIANFAN_AK=emulator.api_key,
        QIANFAN_SK=emulator.secret_key,
        QIANFAN_BASE_URL=emulator.base_url,
    )
    emulator.inject(Fault.stall(20))  # one call hangs; the other three finish
    process = subprocess.Popen(
        [sys.executable, "-m", "mpt_async", "batch", str(prompts), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 15
        while not (out.exists() and out.read_text(encoding="utf-8").count("\n") == 3):
            assert time.monotonic() < deadline, "three answers never arrived"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "3 answered, 0 failed, 0 skipped; stopped early" in stderr
    done = _by_line(out)
    assert len(done) == 3
    emulator.reset()
    again = _run(str(prompts), "-o", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert _summary(again.stderr) == "mpt_async: 1 answered, 0 failed, 3 skipped"
    records = _by_line(out)
    assert sorted(records) == [1, 2, 3, 4]
    assert [_asked(records[n]) for n in (1, 2, 3, 4)] == ["q1", "q2", "q3", "q4"]
    assert emulator.stats.chat_requests == 1


# -- in-process, against the session's emulator -------------------------------------------


def test_resume_retries_transient_errors_and_repairs_a_truncated_tail(
    env_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Answered and permanently failed lines are skipped; the rest are sent, once each."""
    prompts = _write(tmp_path / "in.jsonl", "q1", "q2", "q3", "q4", "q5")
    out = tmp_path / "out.jsonl"
    answered = json.dumps({"line": 1, "result": "kept as is", "usage": {}})
    out.write_text(
        answered
        + "\n"
        + json.dumps({"line": 2, "error": {"code": "connection", "message": "refused"}})
        + "\n"
        + json.dumps({"line": 3, "error": {"code": 336003, "message": "Invalid parameter"}})
        + "\n"
        + '{"line": 4, "result": "cut sh',  # the earlier run was killed mid-write
        encoding="utf-8",
    )
    assert main(["batch", str(prompts), "-o", str(out)]) == 1  # line 3 failed for good
    assert _asked_in_requests(env_emulator) == ["q2", "q4", "q5"]
    text = out.read_text(encoding="utf-8")
    assert text.startswith(answered + "\n")
    assert text.endswith("\n")
    records = _by_line(out)
    assert sorted(records) == [1, 2, 3, 4, 5]
    assert [_asked(records[n]) for n in (2, 4, 5)] == ["q2", "q4", "q5"]
    assert records[3]["error"]["code"] == 336003
    err = capsys.readouterr().err
    assert "2 lines done by an earlier run, 1 to do again" in err
    assert _summary(err) == (
        "mpt_async: 3 answered, 0 failed, 2 skipped (1 of them failed in an earlier run)"
    )


def test_a_rate_limited_line_waits_and_is_answered(env_emulator: Emulator, tmp_path: Path) -> None:
    """A QPS refusal never becomes a failed line: it waits for capacity, retries or not."""
    prompts = _write(tmp_path / "in.jsonl", "q1", "q2")
    out = tmp_path / "out.jsonl"
    env_emulator.inject(Fault.error(18), times=2)
    argv = ["batch", str(prompts), "-o", str(out), "--max-retries", "0", "--concurrency", "1"]
    assert main(argv) == 0
    records = _by_line(out)
    assert [_asked(records[n]) for n in (1, 2)] == ["q1", "q2"]
    assert env_emulator.stats.error_responses == 2


def test_refused_credentials_stop_the_run(
    env_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad credentials stop the whole run with one error line, no record, no secret."""
    monkeypatch.setenv("QIANFAN_SK", SECRET)
    prompts = _write(tmp_path / "in.jsonl", *(f"q{i}" for i in range(20)))
    out = tmp_path / "out.jsonl"
    assert main(["batch", str(prompts), "-o", str(out), "--concurrency", "2"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mpt_async: error: ")]
    assert len(errors) == 1
    assert "authentication failed" in errors[0]
    assert "stopped early" in err
    assert SECRET not in err
    assert out.read_text(encoding="utf-8") == ""
    assert env_emulator.stats.chat_requests == 0


def test_line_options_override_command_line_options(env_emulator: Emulator, tmp_path: Path) -> None:
    """Command-line sampling options apply to every line unless the line sets its own."""
    prompts = _write(
        tmp_path / "in.jsonl",
        "plain",
        {
            "messages": [{"role": "user", "content": "own"}],
            "temperature": 0.9,
            "metadata": {"k": "v"},
        },
    )
    argv = ["batch", str(prompts), "-o", str(tmp_path / "out.jsonl")]
    assert main([*argv, "--temperature", "0.2", "--stop", "END"]) == 0
    bodies = {
        r.body["messages"][0]["content"]: r.body for r in env_emulator.requests if r.kind == "chat"
    }
    assert bodies["plain"] == {
        "messages": [{"role": "user", "content": "plain"}],
        "temperature": 0.2,
        "stop": ["END"],
    }
    assert bodies["own"]["temperature"] == 0.9
    assert bodies["own"]["stop"] == ["END"]
    assert bodies["own"]["metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("connection", True),
        ("timeout", True),
        ("rate_limit", True),
        ("server_error", True),
        (18, True),
        (17, True),
        (336100, True),
        (14, True),
        ("invalid_json", False),
        ("invalid_request", False),
        (336003, False),
        (987654, False),
        (True, False),
    ],
)
def test_which_errors_a_rerun_tries_again(code: object, transient: bool) -> None:
    """Transient failures (network, limits, server, credentials) are retried; bad requests not."""
    assert is_transient(code) is transient


# -- hostile input lines ------------------------------------------------------------------

_OK = {"messages": [{"role": "user", "content": "fine"}]}
_HOSTILE: list[tuple[bytes, str, str]] = [
    # (the line, the record's code, words in its message)
    (b"[" * 100_000 + b"]" * 100_000, "invalid_request", "nested more than"),
    (b"[" * 100_000, "invalid_request", "nested more than"),
    (
        json.dumps({**_OK, "metadata": {"a": [[[[[[]]]]]] * 2}})
        .replace("[]", "[" * 70 + "]" * 70)
        .encode(),
        "invalid_request",
        "nested more than",
    ),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "top_k": ' + b"9" * 5000 + b"}",
        "invalid_request",
        "5000 digits",
    ),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
        "invalid_request",
        "too large",
    ),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "top_k": 3000000000}',
        "invalid_request",
        "top_k",
    ),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        "invalid_json",
        "NaN",
    ),
    (b'\xff\xfe"utf-16?"', "invalid_json", "not UTF-8 text: byte 1 of the line (0xff)"),
    (b'"caf\xe9"', "invalid_json", "not UTF-8 text: byte 5"),
    (b"{not json", "invalid_json", "not a JSON value"),
    (b"null", "invalid_request", "request"),
    (b"true", "invalid_request", "request"),
    (b"[1, 2]", "invalid_request", "message"),
    (b'{"messages": 5}', "invalid_request", "messages"),
    (b'{"messages": []}', "invalid_request", "messages"),
    (b'{"messages": [{"role": 5, "content": "x"}]}', "invalid_request", "role"),
    (b'{"messages": [{"role": "user"}]}', "invalid_request", "content"),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": true}',
        "invalid_request",
        "temperature",
    ),
    (b'{"messages": [{"role": "user", "content": "x"}], "top_k": "3"}', "invalid_request", "top_k"),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "user_id": {"a": []}}',
        "invalid_request",
        "user_id",
    ),
    (b'{"\\ud800": 1}', "invalid_request", "lone surrogate"),
]


@pytest.mark.parametrize("orjson", ["with orjson", "without orjson"])
def test_hostile_lines_each_get_a_record_and_the_run_goes_on(tmp_path: Path, orjson: str) -> None:
    """Deep nesting, huge numbers, bad bytes and wrong shapes: one error each, then reruns skip them."""
    prompts = tmp_path / "in.jsonl"
    lines = [b'"first"', *(line for line, _, _ in _HOSTILE), b'"last"']
    prompts.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    block = "sys.modules['orjson'] = None; " if orjson == "without orjson" else ""
    code = (
        f"import sys; {block}from mpt_async.__main__ import main; "
        f"sys.exit(main(['batch', {str(prompts)!r}, '-o', {str(out)!r}, '--emulator']))"
    )
    for run in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            env=scrubbed_env(),
            timeout=60,
            check=False,
        )
        stderr = done.stderr.decode()
        assert done.returncode == 1, stderr
        assert "Traceback" not in stderr
        assert "codec" not in out.read_text(encoding="utf-8")
        records = _by_line(out)
        assert sorted(records) == list(range(1, len(lines) + 1))
        assert _asked(records[1]) == "first"
        assert _asked(records[len(lines)]) == "last"
        for number, (_, code_, words) in enumerate(_HOSTILE, 2):
            error = records[number].get("error", {})
            assert error.get("code") == code_, (number, str(records[number])[:300])
            assert words in error["message"], (number, error)
        expected = (
            f"mpt_async: 2 answered, {len(_HOSTILE)} failed, 0 skipped"
            if run == 0
            else f"mpt_async: 0 answered, 0 failed, {len(lines)} skipped "
            f"({len(_HOSTILE)} of them failed in an earlier run)"
        )
        assert _summary(stderr) == expected


def test_an_overlong_line_is_refused_without_reading_it_whole(
    env_emulator: Emulator, tmp_path: Path
) -> None:
    """A line over 1 MiB gets an error record; the lines around it are answered."""
    prompts = tmp_path / "in.jsonl"
    prompts.write_bytes(b'"before"\n"' + b"x" * (1 << 21) + b'"\n"after"\n')
    out = tmp_path / "out.jsonl"
    assert main(["batch", str(prompts), "-o", str(out)]) == 1
    records = _by_line(out)
    assert _asked(records[1]) == "before"
    assert records[2]["error"]["code"] == "invalid_request"
    assert "longer than 1,048,576 bytes" in records[2]["error"]["message"]
    assert _asked(records[3]) == "after"


def test_a_deeply_nested_output_line_is_refused_in_one_line(tmp_path: Path) -> None:
    """An output file holding a line nested 100,000 deep is not ours: exit 2, no traceback."""
    prompts = _write(tmp_path / "in.jsonl", "a")
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    result = _run(str(prompts), "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"mpt_async: error: {out}, line 1, is not an answer of mpt_async batch; "
        "choose another output file\n"
    )
