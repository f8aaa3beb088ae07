"""The ``emulator`` command: parser wiring, and a real run in a child process."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from mpt_async.testing import DEFAULT_API_KEY, DEFAULT_SECRET_KEY
from mpt_async.testing._cli import DEFAULT_PORT, add_emulator_parser, run_emulator

CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct"


def start_cli(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``python -m mpt_async.testing``; return it, its URL and its banner."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    child_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpt_async.testing", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=child_env,
    )
    assert proc.stderr is not None
    banner = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        banner += line
        match = re.search(r"listening on (http://\S+)", banner)
        if match and "Ctrl-C" in line:
            return proc, match.group(1), banner
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"the emulator command did not start: {proc.communicate()}")


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cli(free_port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url, _ = start_cli("--port", str(free_port), "--stream-chunks", "2")
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_cli_serves_until_terminated(
    cli: tuple[subprocess.Popen[str], str], free_port: int
) -> None:
    """The command serves on --port with --stream-chunks, then stops cleanly on SIGTERM."""
    proc, url = cli
    assert url == f"http://127.0.0.1:{free_port}"
    with httpx.Client(base_url=url, timeout=5) as http:
        token = http.post(
            "/oauth/2.0/token",
            params={
                "grant_type": "client_credentials",
                "client_id": DEFAULT_API_KEY,
                "client_secret": DEFAULT_SECRET_KEY,
            },
        ).json()["access_token"]
        stream = http.post(
            CHAT,
            params={"access_token": token},
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        )
        assert stream.text.count("data: ") == 2
        assert http.get("/_emulator/stats").json()["chat_requests"] == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped" in err


def test_cli_prints_key_names_but_not_secrets_from_the_environment() -> None:
    """Credentials from the environment are named on stderr, never printed."""
    env = {
        "QIANFAN_AK": "env-api-key",
        "QIANFAN_SK": "env-super-secret",
        "QIANFAN_SECRET_KEY": "env-iam-secret",
    }
    proc, url, banner = start_cli("--port", "0", env=env)
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            answer = http.post(
                "/oauth/2.0/token",
                params={
                    "grant_type": "client_credentials",
                    "client_id": "env-api-key",
                    "client_secret": "env-super-secret",
                },
            )
            assert "access_token" in answer.json()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "QIANFAN_SK (from the environment)" in banner
    assert "QIANFAN_AK (from the environment)" in banner
    for secret in ("env-super-secret", "env-iam-secret", "env-api-key"):
        assert secret not in banner + err


def test_cli_prints_the_documented_default_credentials() -> None:
    """With no QIANFAN_* variables, the banner shows the default keys to export."""
    proc, url, banner = start_cli("--port", "0")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert f"QIANFAN_BASE_URL={url}" in banner
    assert f"QIANFAN_AK={DEFAULT_API_KEY}" in banner
    assert f"QIANFAN_SK={DEFAULT_SECRET_KEY}" in banner


def test_add_emulator_parser_mounts_the_subcommand() -> None:
    """add_emulator_parser() adds 'emulator' with its options and run_emulator as func."""
    parser = argparse.ArgumentParser(prog="mpt_async")
    add_emulator_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["emulator", "--port", "9", "--stream-chunks", "50", "--token-ttl", "60", "--endpoint", "a"]
    )
    assert args.func is run_emulator
    assert (args.host, args.port, args.stream_chunks, args.token_ttl) == ("127.0.0.1", 9, 50, 60)
    assert args.endpoints == ["a"]
    assert parser.parse_args(["emulator"]).port == DEFAULT_PORT
    with pytest.raises(SystemExit):
        parser.parse_args(["emulator", "--stream-chunks", "0"])


def test_run_emulator_returns_1_when_the_port_is_busy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A port already in use is reported on stderr with exit status 1, no traceback."""
    parser = argparse.ArgumentParser()
    add_emulator_parser(parser.add_subparsers())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = parser.parse_args(["emulator", "--port", str(busy.getsockname()[1])])
        assert run_emulator(args) == 1
    assert "cannot start the emulator" in capsys.readouterr().err


def test_cli_host_beyond_loopback_warns(free_port: int) -> None:
    """--host 0.0.0.0 (for a container) serves, after a warning on stderr."""
    proc, url, banner = start_cli("--host", "0.0.0.0", "--port", str(free_port))
    try:
        assert url == f"http://0.0.0.0:{free_port}"
        assert "warning: the emulator listens on '0.0.0.0', beyond loopback" in banner
        answer = httpx.get(f"http://127.0.0.1:{free_port}/_emulator/stats", timeout=5)
        assert answer.status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_cli_on_loopback_gives_no_warning(free_port: int) -> None:
    """The default host is loopback, and the banner carries no warning."""
    proc, url, banner = start_cli("--port", str(free_port))
    try:
        assert url == f"http://127.0.0.1:{free_port}"
        assert "warning" not in banner
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
