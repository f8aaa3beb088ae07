"""The command line: ``python -m mpt_async chat`` against the emulator, over real sockets."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from typing import Any

import pytest

from mpt_async.__main__ import main
from mpt_async._cli import chat
from mpt_async.testing import Emulator, Fault

from .clientkit import clear_credentials, scrubbed_env

QUESTION = "Please introduce The Great Wall"
SECRET = "cli-test-secret-value-0123456789"
_USAGE_LINE = re.compile(r"usage: prompt_tokens=(\d+) completion_tokens=(\d+) total_tokens=(\d+)")


def _run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpt_async", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=scrubbed_env() if env is None else env,
        timeout=30,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _assert_one_error_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if "using the embedded emulator" not in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mpt_async: error: ")
    assert "Traceback" not in stderr


def _chat_bodies(emulator: Emulator) -> list[dict[str, Any]]:
    return [r.body for r in emulator.requests if r.kind == "chat"]


# -- as a subprocess, with the embedded emulator ------------------------------------------


def test_streams_answer_from_embedded_emulator_and_no_stream_matches() -> None:
    """With --emulator the CLI starts the emulator; streamed and --no-stream agree."""
    streamed = _run("chat", "--emulator", QUESTION)
    whole = _run("chat", "--emulator", "--no-stream", QUESTION)
    assert streamed.returncode == 0, streamed.stderr
    assert whole.returncode == 0, whole.stderr
    assert streamed.stdout.startswith(f'Hello! You asked: "{QUESTION}".')
    assert streamed.stdout.endswith("?\n")
    assert re.search(r"embedded emulator at http://127\.0\.0\.1:\d+", streamed.stderr)
    assert len(streamed.stderr.splitlines()) == 1
    assert whole.stdout == streamed.stdout


def test_without_credentials_nothing_is_faked() -> None:
    """No credentials and no --emulator: a usage error naming both, and no emulator answers."""
    result = _run("chat", QUESTION)
    assert result.returncode == 2
    assert result.stdout == ""
    _assert_one_error_line(result.stderr)
    assert "QIANFAN_API_KEY" in result.stderr
    assert "--emulator" in result.stderr
    assert "embedded emulator at" not in result.stderr


def test_interactive_mode_answers_each_line() -> None:
    """With no prompt, each stdin line is a round; no '> ' prompt when stdin is not a TTY."""
    result = _run("chat", "--emulator", stdin="First question\nSecond question\n")
    assert result.returncode == 0, result.stderr
    assert 'You asked: "First question"' in result.stdout
    assert 'You asked: "Second question"' in result.stdout
    assert result.stdout.index("First") < result.stdout.index("Second")
    assert "> " not in result.stderr


def test_invalid_temperature_exits_2_with_one_line() -> None:
    """--temperature 0 breaks the API's rule: exit 2, one error line, no emulator started."""
    result = _run("chat", "--temperature", "0", QUESTION)
    assert result.returncode == 2
    _assert_one_error_line(result.stderr)
    assert "temperature" in result.stderr
    assert "emulator" not in result.stderr
    assert result.stdout == ""


def test_unreachable_service_exits_1_without_leaking_the_secret() -> None:
    """Credentials set but nothing listening: exit 1, one line, the secret never printed."""
    env = scrubbed_env(
        QIANFAN_AK="cli-test-api-key",
        QIANFAN_SK=SECRET,
        QIANFAN_BASE_URL=f"http://127.0.0.1:{_closed_port()}",
    )
    result = _run("chat", "--max-retries", "0", QUESTION, env=env)
    assert result.returncode == 1
    _assert_one_error_line(result.stderr)
    assert "connection failed" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_missing_emulator_extra_says_how_to_install() -> None:
    """Without credentials and without uvicorn: exit 2 with one line naming the extra."""
    code = (
        "import sys; sys.modules['uvicorn'] = None; "
        "from mpt_async.__main__ import main; sys.exit(main(['chat', '--emulator', 'hi']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=scrubbed_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    _assert_one_error_line(result.stderr)
    assert "pip install 'mpt-async[emulator]'" in result.stderr


# -- in-process, against the session's emulator -------------------------------------------


def test_history_is_sent_in_the_second_round(
    env_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second interactive round carries the first question and its answer."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is MPT?\nAnd who made it?\n/exit\n"))
    assert main(["chat"]) == 0
    bodies = _chat_bodies(env_emulator)
    assert len(bodies) == 2
    first, second = (body["messages"] for body in bodies)
    assert first == [{"role": "user", "content": "What is MPT?"}]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[0] == first[0]
    assert second[2] == {"role": "user", "content": "And who made it?"}
    # What was printed is the answer sent back as history (minus its leading blank).
    out = capsys.readouterr().out
    assert out.startswith(second[1]["content"].lstrip() + "\n")


def test_long_history_drops_the_oldest_round(
    env_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past 4,800 characters the oldest rounds go, but never the current question."""
    questions = [f"{n} " + "x" * 1500 for n in range(3)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n"))
    assert main(["chat", "--no-stream"]) == 0
    third = _chat_bodies(env_emulator)[2]["messages"]
    assert sum(len(m["content"]) for m in third) <= 4800
    assert [m["content"] for m in third[::2]] == questions[1:]


def test_failed_round_keeps_history(
    env_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round the service refused adds nothing: the next round sends the earlier history."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\nrefused\nthird\n"))
    real_ask = chat._ask

    async def ask_then_refuse_the_next(*args: Any, **kwargs: Any) -> Any:
        answer = await real_ask(*args, **kwargs)
        env_emulator.inject(Fault.error(336003))  # only the second round gets it
        return answer

    monkeypatch.setattr(chat, "_ask", ask_then_refuse_the_next)
    assert main(["chat", "--no-stream"]) == 1
    sent = [body["messages"] for body in _chat_bodies(env_emulator)]
    assert len(sent) == 3
    assert [m["role"] for m in sent[2]] == ["user", "assistant", "user"]
    assert [m["content"] for m in sent[2][::2]] == ["first", "third"]


def test_flagged_answer_clears_history(
    env_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the service sets need_clear_history, the next round starts without history."""
    env_emulator.inject(Fault.flag())
    monkeypatch.setattr(sys, "stdin", io.StringIO("bad words\nfresh start\n"))
    assert main(["chat"]) == 0
    second = _chat_bodies(env_emulator)[1]["messages"]
    assert second == [{"role": "user", "content": "fresh start"}]
    assert "history is cleared" in capsys.readouterr().err


def test_options_reach_the_request_body(env_emulator: Emulator) -> None:
    """Sampling options are sent as the API's fields, and only those given."""
    argv = ["chat", "--no-stream", "--temperature", "0.5", "--top-k", "3", "--top-p", "0.9"]
    argv += ["--penalty-score", "1.5", "--stop", "foo", "--stop", "bar", "--user-id", "u-1", "hi"]
    assert main(argv) == 0
    body = _chat_bodies(env_emulator)[0]
    assert body == {
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "top_k": 3,
        "top_p": 0.9,
        "penalty_score": 1.5,
        "stop": ["foo", "bar"],
        "user_id": "u-1",
    }


def test_usage_goes_to_stderr(env_emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """--usage prints the token counts after the answer, on stderr only."""
    assert main(["chat", "--usage", QUESTION]) == 0
    captured = capsys.readouterr()
    match = _USAGE_LINE.search(captured.err)
    assert match is not None, captured.err
    prompt, completion, total = map(int, match.groups())
    assert prompt == 5  # "Please introduce The Great Wall", as in Baidu's example
    assert completion > 0
    assert total == prompt + completion
    assert "usage" not in captured.out


def test_prompt_dash_reads_stdin(env_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads the whole prompt from stdin, surrounding blanks trimmed."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("  line one\nline two\n\n"))
    assert main(["chat", "-"]) == 0
    body = _chat_bodies(env_emulator)[0]
    assert body["messages"] == [{"role": "user", "content": "line one\nline two"}]
    assert body["stream"] is True


def test_api_error_exits_1(env_emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal from the service exits 1 with one line carrying the error code."""
    env_emulator.inject(Fault.error(6))
    assert main(["chat", QUESTION]) == 1
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "error_code=6" in err


def test_broken_stream_exits_1_after_partial_output(
    env_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream that ends without is_end is an error, and the partial line is closed."""
    env_emulator.inject(Fault.no_end())
    assert main(["chat", QUESTION]) == 1
    captured = capsys.readouterr()
    _assert_one_error_line(captured.err)
    assert "is_end" in captured.err
    assert captured.out.startswith("Hello!")
    assert captured.out.endswith("\n")


def test_half_a_credential_pair_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """QIANFAN_AK without QIANFAN_SK exits 2 instead of silently using the emulator."""
    clear_credentials(monkeypatch)
    monkeypatch.setenv("QIANFAN_AK", "only-half")
    assert main(["chat", "hi"]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "QIANFAN_SK" in err


def test_bad_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """An argparse error is one line and exit 2; --help exits 0."""
    assert main(["chat", "--top-k", "many", "hi"]) == 2
    _assert_one_error_line(capsys.readouterr().err)
    assert main(["chat", "--help"]) == 0
    assert "--no-stream" in capsys.readouterr().out


def test_emulator_command_is_delegated(capsys: pytest.CaptureFixture[str]) -> None:
    """``emulator`` is parsed by mpt_async.testing's parser (its options, its errors)."""
    assert main(["emulator", "--port", "not-a-port"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["emulator", "--help"]) == 0
    assert "--chunk-delay" in capsys.readouterr().out


def test_emulator_flag_overrides_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--emulator uses the embedded emulator even when credentials point elsewhere."""
    monkeypatch.setenv("QIANFAN_AK", "cli-test-api-key")
    monkeypatch.setenv("QIANFAN_SK", SECRET)
    monkeypatch.setenv("QIANFAN_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    assert main(["chat", "--emulator", "--max-retries", "0", "hi"]) == 0
    captured = capsys.readouterr()
    assert 'You asked: "hi"' in captured.out
    assert "--emulator; using the embedded emulator" in captured.err
    assert SECRET not in captured.err
