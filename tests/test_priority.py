"""Priorities under one quota: live calls before batch calls, checked at the door."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import mpt_async
from mpt_async import ConfigurationError, Conversation, RateLimits
from mpt_async._limiter import BATCH, INTERACTIVE, Limiter, Ticket
from mpt_async.testing import Emulator

from .clientkit import HI, cancel_the_first_waiter, chat_requests, token_client


def spaced(emu: Emulator, qps: float) -> mpt_async.Client:
    """A client held to ``qps`` by its own ceiling alone (nothing learned, nothing adopted)."""
    limits = RateLimits(qps=qps, adopt_server_limits=False, adaptive=False)
    return token_client(emu, rate_limits=limits, max_retries=0)


def record_admissions(limiter: Limiter, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The queue (INTERACTIVE or BATCH) of each attempt the limiter admits, in order."""
    admitted: list[int] = []
    acquire, admit_now = limiter.acquire, limiter.admit_now

    async def recording(size: int, priority: int = INTERACTIVE) -> Ticket:
        ticket = await acquire(size, priority)
        admitted.append(priority)
        return ticket

    def recording_now(size: int, priority: int = INTERACTIVE) -> Ticket | None:
        ticket = admit_now(size, priority)
        if ticket is not None:
            admitted.append(priority)
        return ticket

    monkeypatch.setattr(limiter, "acquire", recording)
    monkeypatch.setattr(limiter, "admit_now", recording_now)
    return admitted


BAD = ["urgent", "Interactive", "", 1, b"batch", ["batch"]]

#: Each way of giving a call a priority, given a bad one.
DOORS: list[tuple[str, Callable[[mpt_async.Client, Any], object]]] = [
    ("with_options", lambda c, p: c.with_options(priority=p)),
    ("chat_stream", lambda c, p: c.chat_stream(HI, priority=p)),
    ("batch", lambda c, p: c.batch([HI], priority=p)),
    ("run_batch", lambda c, p: mpt_async.run_batch(c, [HI], priority=p)),
]


@pytest.mark.anyio
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(("door", "call"), DOORS, ids=[name for name, _ in DOORS])
async def test_a_bad_priority_is_refused_before_any_io(
    emulator: Emulator, door: str, call: Callable[[mpt_async.Client, Any], object], bad: Any
) -> None:
    """A priority other than "interactive" or "batch" is a ConfigurationError; nothing is sent."""
    async with token_client(emulator) as client:
        with pytest.raises(ConfigurationError, match="priority must be"):
            call(client, bad)
    assert chat_requests(emulator) == []


@pytest.mark.anyio
@pytest.mark.parametrize("bad", BAD)
async def test_chat_refuses_a_bad_priority_before_any_io(emulator: Emulator, bad: Any) -> None:
    """chat(priority=...) with a bad value raises at once and sends nothing."""
    async with token_client(emulator) as client:
        with pytest.raises(ConfigurationError, match="priority must be"):
            await client.chat(HI, priority=bad)
    assert chat_requests(emulator) == []


@pytest.mark.anyio
async def test_defaults_live_calls_interactive_batches_batch(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chat, chat_stream and conversations wait as interactive calls; batches as batch calls."""
    async with token_client(emulator) as client:
        admitted = record_admissions(client._request_loop.limiter, monkeypatch)
        await client.chat(HI)
        async with client.chat_stream(HI) as stream:
            async for _ in stream:
                pass
        await Conversation(client).ask("hello")
        assert admitted == [INTERACTIVE] * 3
        admitted.clear()
        async with client.batch([HI, HI]) as results:
            assert [r.error async for r in results] == [None, None]
        async with mpt_async.run_batch(client, [HI]) as results:
            assert [r.error async for r in results] == [None]
        assert admitted == [BATCH] * 3


@pytest.mark.anyio
async def test_the_keyword_and_with_options_override_the_default(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """priority= on a call beats the client's; with_options sets a copy's; a batch may go first."""
    async with token_client(emulator) as client:
        admitted = record_admissions(client._request_loop.limiter, monkeypatch)
        background = client.with_options(priority="batch")
        await background.chat(HI)
        await background.chat(HI, priority="interactive")
        await client.chat(HI, priority="batch")
        async with client.batch([HI], priority="interactive") as results:
            assert [r.error async for r in results] == [None]
        await Conversation(background).ask("hello")
        assert admitted == [BATCH, INTERACTIVE, BATCH, INTERACTIVE, BATCH]


@pytest.mark.anyio
async def test_a_waiting_interactive_call_goes_before_every_waiting_batch_call(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batch calls queue, then two live calls: the live ones are admitted first."""
    async with spaced(emulator, 20) as client:
        admitted = record_admissions(client._request_loop.limiter, monkeypatch)
        await client.chat(HI)  # takes the first place: the others must wait
        admitted.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(lambda: client.chat(HI, priority="batch"))
                await anyio.wait_all_tasks_blocked()  # in the queue before the next comes
            for _ in range(2):
                tg.start_soon(lambda: client.chat(HI))
                await anyio.wait_all_tasks_blocked()
        assert admitted == [INTERACTIVE, INTERACTIVE, BATCH, BATCH, BATCH]
    assert len(chat_requests(emulator)) == 6  # every call answered


@pytest.mark.anyio
@pytest.mark.parametrize("cancelled", ["interactive", "batch"])
async def test_a_cancelled_waiter_of_either_priority_holds_no_capacity(
    emulator: Emulator, cancelled: str
) -> None:
    """At qps=1, a cancelled waiter (of either priority) leaves the next second to the other."""
    other = "batch" if cancelled == "interactive" else "interactive"
    async with spaced(emulator, 1) as client:
        seen = await cancel_the_first_waiter(client, {"priority": cancelled}, {"priority": other})
    assert seen.waiting == (2, 1)
    # The slot one second after the first call is free: nothing was held for the cancelled call.
    assert 0 < seen.next_wait <= 1.0
    assert seen.cancelled
    assert len(chat_requests(emulator)) == 2


@pytest.mark.anyio
async def test_the_log_tells_each_priority_s_wait(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A call that waited logs its priority and its wait (DEBUG); one that did not, nothing."""
    caplog.set_level(logging.DEBUG, logger="mpt_async")
    async with spaced(emulator, 20) as client:
        await client.chat(HI)  # not held: no line
        assert not [r for r in caplog.records if "call waited" in r.getMessage()]
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.chat(HI, priority="batch"))
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(lambda: client.chat(HI))
    waits = [r.getMessage() for r in caplog.records if "call waited" in r.getMessage()]
    assert [line.split()[2] for line in waits] == ["interactive", "batch"]
    assert all(line.endswith(" s") for line in waits)
