"""Retries, timeouts, broken streams, cancellation and connection release."""

from __future__ import annotations

import time

import anyio
import pytest

import mpt_async
from mpt_async._codes import CODE_TABLE, Action
from mpt_async.testing import Emulator, Fault

from .clientkit import HI, cancel_when, token_client, wait_no_connections

pytestmark = pytest.mark.anyio

#: v1's codes (v2's string codes are tested in test_v2.py).
V1_CODES = {c: entry for c, entry in CODE_TABLE.items() if isinstance(c, int)}
RETRYABLE = sorted(c for c, (a, _, _) in V1_CODES.items() if a is Action.RETRY)
RAISED = sorted(c for c, (a, _, _) in V1_CODES.items() if a is Action.RAISE)


@pytest.mark.parametrize("code", RETRYABLE)
async def test_retryable_code_is_retried(emulator: Emulator, code: int) -> None:
    """A retryable error code is tried again and the second attempt's answer returned."""
    emulator.inject(Fault.error(code))
    async with token_client(emulator, max_retries=1) as client:
        reply = await client.chat(HI)
    assert reply.result
    assert emulator.stats.chat_requests == 2


@pytest.mark.parametrize("code", RAISED)
async def test_non_retryable_code_raises_at_once(emulator: Emulator, code: int) -> None:
    """A non-retryable code raises its class at once, with code, message and request id."""
    emulator.inject(Fault.error(code, "the server's words"))
    async with token_client(emulator, max_retries=3) as client:
        with pytest.raises(mpt_async.APIError) as info:
            await client.chat(HI)
    assert type(info.value) is CODE_TABLE[code][1]
    assert info.value.error_code == code
    assert info.value.error_msg == "the server's words"
    assert info.value.status_code == 200
    assert info.value.request_id
    assert emulator.stats.chat_requests == 1


async def test_unknown_code_raises_api_error(emulator: Emulator) -> None:
    """A code not in the table raises a plain APIError keeping code and message."""
    emulator.inject(Fault.error(424242, "brand new"))
    async with token_client(emulator) as client:
        with pytest.raises(mpt_async.APIError) as info:
            await client.chat(HI)
    assert (info.value.error_code, info.value.error_msg) == (424242, "brand new")
    assert emulator.stats.chat_requests == 1


async def test_retries_stop_at_max_retries(emulator: Emulator) -> None:
    """After max_retries retries the last error is raised: 1 + 2 attempts in all."""
    emulator.inject(Fault.error(336100), times=5)
    async with token_client(emulator, max_retries=2) as client:
        with pytest.raises(mpt_async.InternalServerError):
            await client.chat(HI)
    assert emulator.stats.chat_requests == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_html_5xx_is_retried_then_raised(emulator: Emulator, status: int) -> None:
    """An HTML error page is retried; when retries run out its status is raised, not the HTML."""
    emulator.inject(Fault.http(status), times=2)
    async with token_client(emulator, max_retries=1) as client:
        with pytest.raises(mpt_async.InternalServerError) as info:
            await client.chat(HI)
        assert info.value.status_code == status
        assert "<html" not in str(info.value)
        assert (await client.chat(HI)).result  # and the client goes on
    assert emulator.stats.chat_requests == 3


async def test_429_honours_retry_after(emulator: Emulator) -> None:
    """HTTP 429 waits the server's Retry-After, not as a retry; then a RateLimitError.

    The call goes again after the wait, without using up ``max_retries``; past
    ``Timeouts.quota`` it raises.
    """
    emulator.inject(Fault.http(429, "{}", "application/json", {"Retry-After": "0.3"}))
    async with token_client(emulator) as client:
        started = time.monotonic()
        reply = await client.chat(HI)
        waited = time.monotonic() - started
    assert reply.result
    assert waited >= 0.25
    emulator.inject(Fault.http(429, "{}", "application/json"), times=2)
    async with token_client(emulator, max_retries=0) as client:
        assert (await client.chat(HI)).result  # two refusals, no retry used
    emulator.inject(Fault.http(429, "{}", "application/json", {"Retry-After": "5"}))
    timeout = mpt_async.Timeouts(quota=0.01)
    async with token_client(emulator, max_retries=0, timeout=timeout) as client:
        with pytest.raises(mpt_async.RateLimitError) as info:
            await client.chat(HI)
    assert info.value.status_code == 429
    assert info.value.can_wait


async def test_retry_after_is_capped(emulator: Emulator) -> None:
    """A huge Retry-After is capped by Backoff.max_retry_after."""
    emulator.inject(Fault.http(503, headers={"Retry-After": "3600"}))
    backoff = mpt_async.Backoff(initial=0.01, max_retry_after=0.05)
    async with token_client(emulator, backoff=backoff) as client:
        with anyio.fail_after(5):
            assert (await client.chat(HI)).result


async def test_dropped_connection_is_retried(emulator: Emulator) -> None:
    """A connection closed with no answer is retried; when it persists, APIConnectionError."""
    emulator.inject(Fault.drop())
    async with token_client(emulator, max_retries=1) as client:
        assert (await client.chat(HI)).result
        emulator.inject(Fault.drop(), times=2)
        with pytest.raises(mpt_async.APIConnectionError) as info:
            await client.chat(HI)
    assert not isinstance(info.value, mpt_async.APITimeoutError)
    assert emulator.stats.chat_requests == 4


async def test_stream_dropped_before_first_chunk_is_retried(emulator: Emulator) -> None:
    """A stream that breaks before its first chunk is retried transparently."""
    emulator.inject(Fault.drop_after(0))
    async with token_client(emulator, max_retries=1) as client:
        async with client.chat_stream(HI) as stream:
            final = await stream.get_final_response()
    assert final.result
    assert emulator.stats.chat_requests == 2


async def test_stream_dropped_mid_way_is_not_retried(emulator: Emulator) -> None:
    """A stream that breaks after a chunk raises APIConnectionError; nothing is resent."""
    emulator.set_stream_chunks(4)
    emulator.inject(Fault.drop_after(2))
    received: list[int] = []
    async with token_client(emulator, max_retries=3) as client:
        with pytest.raises(mpt_async.APIConnectionError, match="after 2 chunks"):
            async with client.chat_stream(HI) as stream:
                async for chunk in stream:
                    received.append(chunk.sentence_id)
    assert received == [0, 1]
    assert emulator.stats.chat_requests == 1


async def test_stall_times_out_within_bound(emulator: Emulator) -> None:
    """A server that never answers raises APITimeoutError after the read bound, retries included."""
    emulator.inject(Fault.stall(60), times=2)
    timeouts = mpt_async.Timeouts(read=0.2)
    async with token_client(emulator, timeout=timeouts, max_retries=1) as client:
        started = time.monotonic()
        with pytest.raises(mpt_async.APITimeoutError):
            await client.chat(HI)
        elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 20  # far below the stalls' 60 s, even on a busy machine
    assert emulator.stats.chat_requests == 2


async def test_stream_stall_before_first_chunk_is_retried(emulator: Emulator) -> None:
    """A stream silent before its first chunk times out and is retried."""
    emulator.inject(Fault.stall(3, after=0))
    timeouts = mpt_async.Timeouts(stream_read=0.2)
    async with token_client(emulator, timeout=timeouts, max_retries=1) as client:
        async with client.chat_stream(HI) as stream:
            assert (await stream.get_final_response()).result
    assert emulator.stats.chat_requests == 2


async def test_stream_idle_gap_times_out(emulator: Emulator) -> None:
    """Silence between chunks longer than stream_read raises APITimeoutError, not retried."""
    emulator.inject(Fault.stall(60, after=1))
    timeouts = mpt_async.Timeouts(stream_read=0.2)
    async with token_client(emulator, timeout=timeouts) as client:
        with anyio.fail_after(20):
            async with client.chat_stream(HI) as stream:
                await stream.__anext__()
                with pytest.raises(mpt_async.APITimeoutError):
                    await stream.__anext__()
    assert emulator.stats.chat_requests == 1


async def test_per_call_timeout_overrides_client(emulator: Emulator) -> None:
    """timeout= on a call replaces the client's bounds for that call only."""
    emulator.inject(Fault.stall(0.5))
    async with token_client(emulator, timeout=0.1, max_retries=0) as client:
        assert (await client.chat(HI, timeout=5)).result


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault.malformed(after=1), "not JSON"),
        (Fault.no_end(), "without is_end"),
        (Fault.skip_id(), "skips"),
        (Fault.repeat_id(), "repeats"),
    ],
    ids=["malformed", "no-end", "gap", "repeat"],
)
async def test_broken_stream_raises_stream_error(
    emulator: Emulator, fault: Fault, words: str
) -> None:
    """A malformed line, a missing end, a gap or a repeat raise StreamError."""
    emulator.set_stream_chunks(4)
    emulator.inject(fault)
    timeouts = mpt_async.Timeouts(pool=2.0)
    async with token_client(emulator, max_connections=1, timeout=timeouts) as client:
        with pytest.raises(mpt_async.StreamError, match=words):
            async with client.chat_stream(HI) as stream:
                async for _ in stream:
                    pass
        assert (await client.chat(HI)).result  # the broken stream gave its connection back
    assert emulator.stats.chat_requests == 2


async def test_error_body_in_stream_mode(emulator: Emulator) -> None:
    """An error answered to a stream request raises its APIError before any chunk."""
    emulator.inject(Fault.error(336005))
    async with token_client(emulator) as client:
        stream = client.chat_stream(HI)
        with pytest.raises(mpt_async.NotFoundError):
            async with stream:
                pass
        assert stream.chunks_received == 0


async def test_early_break_thirty_times_leaves_client_usable(emulator: Emulator) -> None:
    """Breaking out of 30 streams in a row with a pool of 2 leaks no connection."""
    emulator.set_stream_chunks(10)
    timeouts = mpt_async.Timeouts(pool=2.0)
    async with token_client(emulator, max_connections=2, timeout=timeouts) as client:
        for _ in range(30):
            async with client.chat_stream(HI) as stream:
                async for chunk in stream:
                    if chunk.sentence_id == 1:
                        break
        assert (await client.chat(HI)).result
    assert await wait_no_connections(emulator) == 0


async def test_cancellation_mid_stream_releases_connection(emulator: Emulator) -> None:
    """Cancelling a task inside a stream frees its connection for the next call."""
    emulator.inject(Fault.stall(60, after=1))
    timeouts = mpt_async.Timeouts(pool=10.0)
    got: list[int] = []
    async with token_client(emulator, max_connections=1, timeout=timeouts) as client:
        with anyio.CancelScope() as scope:
            async with client.chat_stream(HI) as stream:
                async for chunk in stream:
                    got.append(chunk.sentence_id)
                    scope.deadline = anyio.current_time() + 0.1  # waiting for the next one
        assert scope.cancelled_caught
        assert got == [0]
        assert (await client.chat(HI)).result  # the only connection came back
    assert await wait_no_connections(emulator) == 0


async def test_cancellation_passes_through_chat(emulator: Emulator) -> None:
    """Cancelling a waiting chat() cancels it cleanly (no error, nothing retried)."""
    emulator.inject(Fault.stall(60))
    async with token_client(emulator) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when, scope, lambda: emulator.stats.faults_fired == 1)
                await client.chat(HI)
        assert scope.cancelled_caught
    assert emulator.stats.chat_requests == 1


async def test_closing_client_closes_connections(emulator: Emulator) -> None:
    """After aclose() the emulator sees no connection from the client."""
    async with token_client(emulator) as client:
        await client.chat(HI)
        assert emulator.stats.open_connections >= 1
    assert await wait_no_connections(emulator) == 0


async def test_truncated_json_reply_is_malformed_response(emulator: Emulator) -> None:
    """A non-stream reply cut off mid-JSON raises MalformedResponseError, not retried."""
    emulator.inject(Fault.malformed())
    async with token_client(emulator, max_retries=2) as client:
        with pytest.raises(mpt_async.MalformedResponseError) as info:
            await client.chat(HI)
        assert info.value.status_code == 200
        assert (await client.chat(HI)).result  # the connection pool is still sound
    assert emulator.stats.chat_requests == 2
