"""The emulator under attack: abandoned requests, web pages aiming at its controls, bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import mpt_async
from mpt_async.testing import Emulator, Fault

from .clientkit import FAST, HI, token_client


@pytest.mark.anyio
async def test_abandoned_stalled_request_leaves_the_scripted_reply(emulator: Emulator) -> None:
    """A request its client gave up on during a stall takes no scripted reply: the retry does."""
    emulator.inject(Fault.stall(60))
    emulator.add_reply("the scripted answer")
    timeouts = mpt_async.Timeouts(read=0.2, total=30)
    async with token_client(emulator, timeout=timeouts, max_retries=1, backoff=FAST) as client:
        reply = await client.chat(HI)
    assert reply.result == "the scripted answer"
    assert emulator.stats.chat_requests == 2
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=10) as http:
        assert (await http.get("/_emulator/replies")).json() == []


def _control(emulator: Emulator, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{emulator.base_url}/_emulator/reset", timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, "application/json"),
        ({"data": {"a": "b"}}, "application/json"),  # an HTML form
        ({"json": {}, "headers": {"Origin": "http://evil.example"}}, "other sites"),
        ({"json": {}, "headers": {"Origin": "null"}}, "other sites"),
        ({"json": {}, "headers": {"Host": "evil.example"}}, "loopback Host"),
        ({"json": {}, "headers": {"Host": "127.0.0.1.evil.example:80"}}, "loopback Host"),
        ({"json": {}, "headers": {"Sec-Fetch-Site": "cross-site"}}, "cross-site"),
    ],
)
def test_controls_refuse_what_a_web_page_could_send(
    emulator: Emulator, kwargs: dict[str, Any], why: str
) -> None:
    """Cross-site bodies, foreign origins and rebound host names get 403 and change nothing."""
    emulator.inject(Fault.error(18))
    answer = _control(emulator, **kwargs)
    assert answer.status_code == 403
    assert why in answer.json()["error"]
    assert len(emulator.pending_faults) == 1  # the reset did not happen


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # no body at all
        {"json": {}},
        {"json": {}, "headers": {"Origin": "http://127.0.0.1"}},
        {"json": {}, "headers": {"Host": "localhost"}},
        {"json": {}, "headers": {"Sec-Fetch-Site": "same-origin"}},
    ],
)
def test_controls_obey_local_tests(emulator: Emulator, kwargs: dict[str, Any]) -> None:
    """A test's own requests (loopback Host, JSON or no body, same origin) still act."""
    emulator.inject(Fault.error(18))
    answer = _control(emulator, **kwargs)
    assert answer.status_code == 200, answer.text
    assert emulator.pending_faults == []


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("faults", {"kind": "http", "status": 500, "headers": [["X-A", "b"]]}, "mapping"),
        ("faults", {"kind": "http", "headers": [["X-A", "b"]]}, "status"),
        ("faults", {"kind": "http", "status": 500, "headers": {"X\nA": "b"}}, "token"),
        ("faults", {"kind": "stall", "seconds": "x"}, "seconds"),
        ("faults", [1], "JSON object"),
        ("replies", {"text": [1]}, "reply"),
        ("replies", {"text": "a", "usage": {"prompt_tokens": -1}}, "prompt_tokens"),
        ("config", {"stream_chunks": "many"}, "stream_chunks"),
        ("config", ["stream_chunks"], "JSON object"),
    ],
)
def test_malformed_control_requests_are_400(
    emulator: Emulator, path: str, body: Any, words: str
) -> None:
    """Every malformed control body is a 400 that says what is wrong, never a 500."""
    answer = httpx.post(f"{emulator.base_url}/_emulator/{path}", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]
    assert emulator.pending_faults == []
