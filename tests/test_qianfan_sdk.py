"""The official ``qianfan`` SDK works against the emulator, configured only by environment.

Each scenario runs in a fresh interpreter, as a user's program would: the SDK reads
``QIANFAN_*`` once per process and caches tokens globally, so sharing a process
between scenarios (or with other tests) would test the cache, not the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpt_async.testing import Emulator

pytest.importorskip("qianfan")
pytestmark = pytest.mark.qianfan

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import qianfan

    QUESTION = [{"role": "user", "content": "Please introduce The Great Wall"}]
    HISTORY = [
        {"role": "user", "content": "Please introduce The Great Wall"},
        {"role": "assistant", "content": "It is long."},
        {"role": "user", "content": "Please introduce Beijing"},
    ]

    async def run_async(chat):
        reply = await chat.ado(messages=QUESTION)
        chunks = [c.body async for c in await chat.ado(messages=QUESTION, stream=True)]
        return reply.body, chunks

    chat = qianfan.ChatCompletion(endpoint="mpt-30b-instruct")
    out = {}
    out["do"] = chat.do(messages=QUESTION).body
    out["stream"] = [c.body for c in chat.do(messages=QUESTION, stream=True)]
    out["history"] = chat.do(messages=HISTORY, temperature=0.5, top_p=0.8).body
    out["ado"], out["astream"] = asyncio.run(run_async(chat))
    print(json.dumps(out))
    """
)


def run_sdk(env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """Run SCRIPT with only ``env`` as QIANFAN_* configuration; return its results."""
    script = tmp_path / "use_qianfan.py"
    script.write_text(SCRIPT)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    # Keep the SDK's model cache and .env lookup inside the test's directory.
    child_env.update(env, QIANFAN_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def sdk_emulator() -> Iterator[Emulator]:
    """An emulator of its own: the shared one is reset between tests."""
    with Emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def token_flow(sdk_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = {
        "QIANFAN_AK": sdk_emulator.api_key,
        "QIANFAN_SK": sdk_emulator.secret_key,
        "QIANFAN_BASE_URL": sdk_emulator.base_url,
    }
    result = run_sdk(env, tmp_path_factory.mktemp("token"))
    result["records"] = sdk_emulator.requests
    result["stats"] = sdk_emulator.stats
    return result


@pytest.fixture(scope="module")
def aksk_flow(sdk_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sdk_emulator.reset()
    env = {
        "QIANFAN_ACCESS_KEY": sdk_emulator.access_key,
        "QIANFAN_SECRET_KEY": sdk_emulator.secret_access_key,
        "QIANFAN_BASE_URL": sdk_emulator.base_url,
        # With IAM keys the SDK also lists services from the console API.
        "QIANFAN_CONSOLE_API_BASE_URL": sdk_emulator.base_url,
    }
    result = run_sdk(env, tmp_path_factory.mktemp("aksk"))
    result["records"] = sdk_emulator.requests
    result["stats"] = sdk_emulator.stats
    return result


def check_answers(result: dict[str, Any]) -> None:
    """The SDK got the same deterministic text by do, ado, stream and async stream."""
    assert result["stats"].error_responses == 0
    text = result["do"]["result"]
    assert text
    assert result["do"]["usage"]["prompt_tokens"] == 5
    assert result["ado"]["result"] == text
    for key in ("stream", "astream"):
        chunks = result[key]
        assert [c["sentence_id"] for c in chunks] == [0, 1, 2]
        assert chunks[-1]["is_end"] is True
        assert "".join(c["result"] for c in chunks) == text
    assert "Please introduce Beijing" in result["history"]["result"]


def test_sdk_chat_stream_and_ado_with_api_key(token_flow: dict[str, Any]) -> None:
    """With QIANFAN_AK/SK, do, do(stream=True), ado and async streams all work."""
    check_answers(token_flow)


def test_sdk_token_request_is_what_the_emulator_expects(token_flow: dict[str, Any]) -> None:
    """The SDK fetches one token, POSTing '{}', then sends only chat requests with it."""
    records = token_flow["records"]
    kinds = [r.kind for r in records]
    assert kinds[0] == "token"
    assert kinds.count("token") == 1
    assert set(kinds[1:]) == {"chat"}
    assert records[0].method == "POST"
    chat_bodies = [r.body for r in records[1:]]
    # The SDK adds extra_parameters and an explicit stream flag to every body.
    assert all("extra_parameters" in body and "stream" in body for body in chat_bodies)


def test_sdk_chat_stream_and_ado_with_iam_keys(aksk_flow: dict[str, Any]) -> None:
    """With QIANFAN_ACCESS_KEY/SECRET_KEY, the SDK's signed requests are accepted."""
    check_answers(aksk_flow)
    records = aksk_flow["records"]
    assert {r.kind for r in records} == {"console", "chat"}
    assert all(r.headers["authorization"].startswith("bce-auth-v1/") for r in records)
