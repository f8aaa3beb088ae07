"""The pytest plugin: a user's test file gets mpt_emulator and mpt_client with no conftest."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mpt_async
from mpt_async.testing import Emulator, Fault

PLUGIN = "mpt_async.testing.pytest_plugin"
ROOT = Path(__file__).resolve().parent.parent

# What a user writes: fixtures from the plugin, nothing else (no conftest.py anywhere).
USER_TESTS = """
import os

import pytest

from mpt_async import APIError
from mpt_async.testing import Fault

HI = [{"role": "user", "content": "Is it on?"}]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_scripted_answer(mpt_emulator, mpt_client):
    mpt_emulator.add_reply("yes")
    reply = await mpt_client.chat(HI)
    assert reply.result == "yes"


@pytest.mark.anyio
async def test_scripted_stream(mpt_emulator, mpt_client):
    mpt_emulator.add_reply(["Hello ", "world", "!"], usage={"completion_tokens": 9})
    async with mpt_client.chat_stream(HI) as stream:
        pieces = [chunk.result async for chunk in stream]
        final = await stream.get_final_response()
    assert pieces == ["Hello ", "world", "!"]
    assert final.usage.completion_tokens == 9


@pytest.mark.anyio
async def test_each_test_starts_afresh(mpt_emulator, mpt_client):
    assert mpt_emulator.stats.chat_requests == 0
    assert mpt_emulator.pending_faults == []
    mpt_emulator.inject(Fault.error(336100), times=5)  # left over on purpose
    mpt_emulator.add_reply("left over", times=5)


@pytest.mark.anyio
async def test_retries_do_not_wait(mpt_emulator, mpt_client):
    mpt_emulator.inject(Fault.error(336100), times=2)  # overloaded: retried at once
    mpt_emulator.add_reply("after two retries")
    reply = await mpt_client.chat(HI)
    assert reply.result == "after two retries"
    assert mpt_emulator.stats.chat_requests == 3


@pytest.mark.anyio
async def test_errors_surface(mpt_emulator, mpt_client):
    mpt_emulator.inject(Fault.error(336003, "bad"))
    with pytest.raises(APIError):
        await mpt_client.chat(HI)


@pytest.mark.anyio
async def test_v2_scripted_stream(mpt_emulator, mpt_v2_client):
    assert mpt_v2_client.api == "v2"
    assert mpt_emulator.v2_api_key != os.environ["QIANFAN_API_KEY"]  # the user's own key
    mpt_emulator.add_reply(["Hello ", "world"])
    async with mpt_v2_client.chat_stream(HI) as stream:
        pieces = [chunk.result async for chunk in stream]
    assert pieces == ["Hello ", "world"]
    assert [r.path for r in mpt_emulator.requests] == ["/v2/chat/completions"]


@pytest.mark.anyio
async def test_v2_quota_refusal_is_retried_without_waiting(mpt_emulator, mpt_v2_client):
    mpt_emulator.inject(Fault.error(18))  # the QPS limit: 429 user_rate_limit_exceeded on v2
    mpt_emulator.add_reply("after the refusal")
    reply = await mpt_v2_client.chat(HI)
    assert reply.result == "after the refusal"
    assert mpt_emulator.stats.chat_requests == 2
"""


def _plugin_registered() -> bool:
    """Whether this environment's mpt-async was installed with the pytest11 entry point."""
    return any(ep.name == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))


def test_a_user_test_file_needs_no_conftest(tmp_path: Path) -> None:
    """A user's test file uses mpt_emulator, mpt_client, mpt_v2_client and add_reply on both.

    A v2 API key of the user's own in the environment is not the emulator's: the plugin's
    emulator takes its own keys, so the v2 tests pass with a decoy set.
    """
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    # Installed with its entry point (as on CI), the plugin loads by itself; in a venv
    # installed before the entry point existed, name it once on the command line.
    load = [] if _plugin_registered() else ["-p", PLUGIN]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith(("QIANFAN_", "PYTEST_"))}
    env["QIANFAN_API_KEY"] = "bce-v3/ALTAK-users-own/not-the-emulators"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", *load],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "14 passed" in result.stdout


def test_the_entry_point_names_the_plugin_module() -> None:
    """pyproject.toml registers the plugin under pytest11, named like its module."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]\n", 1)[1].split("\n[", 1)[0]
    assert f'"{PLUGIN}" = "{PLUGIN}"' in section.splitlines()


def test_loading_the_plugin_imports_no_emulator() -> None:
    """Importing the plugin loads neither uvicorn nor the emulator: they wait for a test."""
    code = (
        f"import sys, {PLUGIN}; "
        "print(sorted(m for m in ('uvicorn', 'mpt_async.testing._emulator') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_mpt_emulator_is_reset_and_shared(mpt_emulator: Emulator, emulator: Emulator) -> None:
    """The project's own emulator fixture is the plugin's session emulator."""
    assert mpt_emulator is emulator
    assert mpt_emulator.stats.chat_requests == 0
    assert mpt_emulator.api_key == "emulator-api-key"


@pytest.mark.anyio
async def test_mpt_client_talks_to_mpt_emulator(
    mpt_emulator: Emulator, mpt_client: mpt_async.Client
) -> None:
    """mpt_client answers from mpt_emulator, through the token flow, on every backend."""
    mpt_emulator.add_reply("scripted", times=2)
    mpt_emulator.inject(Fault.error(18))  # the QPS limit: retried without waiting
    first = await mpt_client.chat([{"role": "user", "content": "hi"}])
    second = await mpt_client.chat([{"role": "user", "content": "hi"}])
    assert (first.result, second.result) == ("scripted", "scripted")
    stats = mpt_emulator.stats
    assert (stats.token_requests, stats.chat_requests, stats.faults_fired) == (1, 3, 1)
    assert mpt_client.base_url == mpt_emulator.base_url
