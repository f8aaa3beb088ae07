"""Client-side rate limits: spacing, adopted server limits, quota info, sharing, cancellation."""

from __future__ import annotations

import math
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup

import mpt_async
from mpt_async import ConfigurationError, RateLimitInfo, RateLimits
from mpt_async._limiter import Limiter, Ticket
from mpt_async._quota_model import QuotaModel
from mpt_async._quota_store import MemoryQuotaStore
from mpt_async._ratelimit import read_rate_limit
from mpt_async.testing import Emulator, Fault

from .clientkit import HI, cancel_the_first_waiter, chat_requests, token_client, until


def limited(emu: Emulator, limits: RateLimits | None, **kwargs: Any) -> mpt_async.Client:
    """A token client with these rate limits; errors surface at once unless told otherwise."""
    kwargs.setdefault("max_retries", 0)
    return token_client(emu, rate_limits=limits, **kwargs)


async def burst(client: mpt_async.Client, n: int) -> list[BaseException | None]:
    """Start ``n`` calls at once; return each one's error (``None``: answered)."""
    outcomes: list[BaseException | None] = []

    async def one() -> None:
        try:
            await client.chat(HI)
        except mpt_async.MPTError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return outcomes


def local_limiter(limits: RateLimits, *, window: float = 60.0) -> Limiter:
    """A limiter counting in this process, on the event loop's clock."""
    model = QuotaModel(limits, clock=anyio.current_time, window=window)
    return Limiter(model, MemoryQuotaStore(model))


#: For tests where the HTTP transport under asyncio makes no difference (the limiter on its
#: own), or that are slow (the big burst): once per event loop.
BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


# -- the settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"qps": 0},
        {"qps": -1.5},
        {"qps": math.nan},
        {"qps": math.inf},
        {"qps": "5"},
        {"qps": True},
        {"rpm": 0},
        {"rpm": 2.5},
        {"rpm": False},
        {"tpm": -10},
        {"tpm": "100"},
        {"adopt_server_limits": "yes"},
        {"adaptive": 1},
    ],
)
def test_bad_rate_limits_are_refused(kwargs: dict[str, Any]) -> None:
    """A limit that is not positive (rpm/tpm: a positive int) raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))) as info:
        RateLimits(**kwargs)
    assert isinstance(info.value, ValueError)


def test_good_rate_limits_are_kept() -> None:
    """Valid limits are stored as given; the server's limits are adopted by default."""
    limits = RateLimits(qps=2.5, rpm=60, tpm=10_000)
    assert (limits.qps, limits.rpm, limits.tpm, limits.adopt_server_limits) == (
        2.5,
        60,
        10_000,
        True,
    )
    assert RateLimits(adopt_server_limits=False).adopt_server_limits is False


def test_client_refuses_a_non_rate_limits() -> None:
    """Client(rate_limits=...) takes a RateLimits or None, nothing else."""
    with pytest.raises(ConfigurationError, match="rate_limits"):
        mpt_async.Client(auth="t", base_url="http://127.0.0.1:1", rate_limits={"qps": 5})  # type: ignore[arg-type]


def test_headers_are_read() -> None:
    """X-Ratelimit-* headers (any case) become a RateLimitInfo; bad values become None."""
    headers = httpx.Headers(
        {
            "Content-Type": "application/json",
            "X-Ratelimit-Limit-Requests": "300",
            "x-ratelimit-remaining-requests": "299",
            "X-RateLimit-Limit-Tokens": "lots",
            "X-Ratelimit-Remaining-Tokens": "-4",
        }
    )
    assert read_rate_limit(headers) == RateLimitInfo(
        limit_requests=300, limit_tokens=None, remaining_requests=299, remaining_tokens=None
    )
    assert read_rate_limit(httpx.Headers({"X-Ratelimit-Reset": "1"})) is None
    assert read_rate_limit(httpx.Headers({"Content-Type": "text/plain"})) is None


# -- the limiter on its own ------------------------------------------------------------


@pytest.mark.anyio
@BACKENDS
async def test_qps_spacing_never_exceeds_the_limit() -> None:
    """40 calls started at once at qps=100 are spaced: the last starts 0.39 s after the first.

    (The exact spacing is checked on a test clock in test_quota_model.)
    """
    limiter = local_limiter(RateLimits(qps=100, adopt_server_limits=False, adaptive=False))
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire(10)
        times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(one)
    times.sort()
    # The first is admitted (and timed) at once; the others can only be late, never early.
    assert times[-1] - times[0] >= 39 / 100 - 1e-3


@pytest.mark.anyio
@BACKENDS
async def test_waiters_are_served_in_arrival_order() -> None:
    """Calls that wait are admitted first come, first served."""
    limiter = local_limiter(RateLimits(qps=20, adopt_server_limits=False, adaptive=False))
    order: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire(10)
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(one, i)
            await anyio.wait_all_tasks_blocked()  # it reached the queue before the next starts
    assert order == list(range(6))


@pytest.mark.anyio
@BACKENDS
async def test_a_place_at_once_never_goes_before_a_waiting_call() -> None:
    """admit_now (the request loop's way in when nothing waits) gives a place only then.

    One call a second: a second call waits; once its second has passed, a newcomer asking
    for a place at once gets none (the waiting call goes first), and nothing is counted.
    """
    now = [0.0]
    model = QuotaModel(
        RateLimits(qps=1, adopt_server_limits=False, adaptive=False), clock=lambda: now[0]
    )
    limiter = Limiter(model, MemoryQuotaStore(model))
    assert limiter.admit_now(10) is not None
    assert limiter.admit_now(10) is None  # within the second: no place
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 10)
        await anyio.wait_all_tasks_blocked()
        now[0] = 2.0  # the waiting call's place is free (it sleeps on the loop's clock)
        assert limiter.admit_now(10) is None
        assert limiter.store.usage().last_second == 0  # nothing counted for the newcomer
        tg.cancel_scope.cancel()


async def three_wait_for_tokens(limiter: Limiter, tg: TaskGroup, admitted: list[int]) -> Ticket:
    """TPM 100: a first call is charged 95 tokens for now, and three of 35 queue behind it."""

    async def one(i: int) -> None:
        await limiter.acquire(10)  # 10 prompt tokens and 25 guessed for the answer
        admitted.append(i)

    first = await limiter.acquire(70)
    for i in range(3):
        tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()  # it reached the queue before the next starts
    assert limiter.waiting == 3
    return first


@pytest.mark.anyio
@BACKENDS
async def test_a_queue_is_served_at_once_when_capacity_comes() -> None:
    """The waiters that may start are given their places together, in order, not one a turn."""
    limiter = local_limiter(RateLimits(tpm=100, adopt_server_limits=False, adaptive=False))
    admitted: list[int] = []
    async with anyio.create_task_group() as tg:
        first = await three_wait_for_tokens(limiter, tg, admitted)
        first.settle(20)  # 80 tokens free: two of the three fit
        assert limiter.waiting == 1  # before either of them ran
        assert limiter.store.usage().calls == 3
        await anyio.wait_all_tasks_blocked()
        assert sorted(admitted) == [0, 1]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@BACKENDS
async def test_a_waiter_served_then_cancelled_gives_its_place_back() -> None:
    """A waiter cancelled after the queue took its place, before it ran, holds nothing."""
    limiter = local_limiter(RateLimits(tpm=100, adopt_server_limits=False, adaptive=False))
    admitted: list[int] = []
    async with anyio.create_task_group() as tg:
        first = await three_wait_for_tokens(limiter, tg, admitted)
        tg.cancel_scope.cancel()  # all three are cancelled ...
        first.settle(20)  # ... and two are served before they run
        assert limiter.store.usage().calls == 3
    assert admitted == []
    assert limiter.waiting == 0
    assert limiter.store.usage().calls == 1  # only the first call's place is counted


@pytest.mark.anyio
@BACKENDS
async def test_tokens_are_estimated_then_corrected() -> None:
    """TPM: a first call costs its prompt and a guessed answer; then estimates follow usage."""
    limiter = local_limiter(RateLimits(tpm=100, adopt_server_limits=False, adaptive=False))
    first = await limiter.acquire(10)
    admitted: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire(10)
        admitted.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 1)
        tg.start_soon(one, 2)
        tg.start_soon(one, 3)
        await anyio.wait_all_tasks_blocked()
        # Unknown answers are guessed at a quarter of the budget: 10 + 25 each, so the
        # first two fit in 100 and the third waits (never the whole budget for one).
        assert len(admitted) == 1
        first.settle(30, prompt_tokens=10)  # 10 prompt + 20 answer tokens
        await anyio.wait_all_tasks_blocked()
        assert len(admitted) == 2  # 30 + 35 + 30 <= 100; a fourth would not fit
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@BACKENDS
async def test_window_frees_a_call_a_window_after_its_start() -> None:
    """RPM: a call counts from its start for a window and its margin, then leaves."""
    limits = RateLimits(rpm=1, adopt_server_limits=False, adaptive=False)
    limiter = local_limiter(limits, window=0.2)
    start = anyio.current_time()
    (await limiter.acquire(10)).finish()
    with anyio.move_on_after(0.1) as scope:
        await limiter.acquire(10)  # answered or not, the first call still counts
    assert scope.cancelled_caught
    await limiter.acquire(10)
    assert anyio.current_time() - start >= 0.2 * 1.02 - 1e-3


# -- against the emulator --------------------------------------------------------------


@pytest.mark.anyio
@BACKENDS
async def test_burst_under_the_client_limit_sees_no_refusal(emulator: Emulator) -> None:
    """200 calls at once with qps=100 on both sides: every one is answered, none refused."""
    emulator.set_rate_limits(qps=100)
    async with limited(emulator, RateLimits(qps=100)) as client:
        outcomes = await burst(client, 200)
    assert outcomes == [None] * 200
    assert emulator.stats.error_responses == 0
    assert len(chat_requests(emulator)) == 200


@pytest.mark.anyio
async def test_burst_without_learning_is_refused(emulator: Emulator) -> None:
    """With adaptation off and no ceiling, a burst is refused (the test above means something).

    The refusals wait, and the bound on that wait (0.01 s) ends them.

    The server allows 10 a second, so the 200 calls are refused however slowly a busy
    machine sends them (they would need 19 s to pass).
    """
    emulator.set_rate_limits(qps=10)
    timeout = mpt_async.Timeouts(quota=0.01)
    limits = RateLimits(adaptive=False, adopt_server_limits=False)
    async with limited(emulator, limits, timeout=timeout) as client:
        outcomes = await burst(client, 200)
    refused = [e for e in outcomes if e is not None]
    assert refused
    assert all(isinstance(e, mpt_async.RateLimitError) and e.can_wait for e in refused)
    # The service's refusal (error 18), or the client's own wait behind it.
    kinds = {(e.error_code, e.quota) for e in refused if isinstance(e, mpt_async.RateLimitError)}
    assert kinds <= {(18, mpt_async.QuotaKind.SECOND), (None, None)}
    assert (18, mpt_async.QuotaKind.SECOND) in kinds
    assert emulator.stats.error_responses > 0


@pytest.mark.anyio
async def test_timeouts_quota_bounds_a_wait_for_an_announced_minute(emulator: Emulator) -> None:
    """Under an announced rpm=2, a third call waits for the window: Timeouts.quota ends it.

    A RateLimitError that says waiting would help, after the bound and not the minute, and
    the call is never sent.
    """
    emulator.set_rate_limits(rpm=2)
    timeout = mpt_async.Timeouts(quota=0.3)
    async with limited(emulator, RateLimits(), timeout=timeout) as client:
        await client.chat(HI)
        await client.chat(HI)
        assert client.learned_limits().rpm == 2
        started = anyio.current_time()
        with pytest.raises(mpt_async.RateLimitError) as info:
            await client.chat(HI)
        waited = anyio.current_time() - started
    assert info.value.can_wait
    assert 0.29 <= waited < 30
    assert emulator.stats.chat_requests == 2


@pytest.mark.anyio
async def test_rpm_is_adopted_from_the_headers(emulator: Emulator) -> None:
    """With RateLimits() and a server at rpm=4, the client sends 4 calls and holds the rest."""
    emulator.set_rate_limits(rpm=4)
    done: list[mpt_async.ChatResponse] = []

    async def one() -> None:
        done.append(await client.chat(HI))

    async with limited(emulator, RateLimits()) as client, anyio.create_task_group() as tg:
        for _ in range(7):
            tg.start_soon(one)
        await until(lambda: len(done) == 4)
        await anyio.sleep(0.1)  # the other three stay held back, for a minute
        tg.cancel_scope.cancel()
    assert len(done) == 4
    assert len(chat_requests(emulator)) == 4
    assert emulator.stats.error_responses == 0
    assert {reply.rate_limit.limit_requests for reply in done if reply.rate_limit} == {4}


@pytest.mark.anyio
async def test_tpm_is_adopted_and_charged_real_usage(emulator: Emulator) -> None:
    """With a server at tpm for 3.5 calls, the client sends 3 and holds the rest."""
    async with limited(emulator, None) as client:
        cost = (await client.chat(HI)).usage.total_tokens
    emulator.set_rate_limits(tpm=3 * cost + cost // 2)
    done: list[mpt_async.ChatResponse] = []

    async def one() -> None:
        done.append(await client.chat(HI))

    async with limited(emulator, RateLimits()) as client, anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
        await until(lambda: len(done) == 3)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert len(done) == 3
    assert emulator.stats.error_responses == 0
    assert len(chat_requests(emulator)) == 1 + 3


@pytest.mark.anyio
async def test_quota_is_visible_on_replies_and_streams(emulator: Emulator) -> None:
    """The X-Ratelimit-* headers show as .rate_limit on responses and streams."""
    emulator.set_rate_limits(rpm=100, tpm=100_000)
    async with token_client(emulator) as client:
        reply = await client.chat(HI)
        cost = reply.usage.total_tokens
        assert reply.rate_limit == RateLimitInfo(100, 100_000, 99, 100_000 - cost)
        async with client.chat_stream(HI) as stream:
            assert stream.rate_limit == RateLimitInfo(100, 100_000, 98, 100_000 - 2 * cost)
            final = await stream.get_final_response()
        assert final.rate_limit == stream.rate_limit
        assert final == reply.__class__(
            **{**_fields(reply), "id": final.id, "created": final.created}
        )


def _fields(reply: mpt_async.ChatResponse) -> dict[str, Any]:
    return {
        "id": reply.id,
        "object": reply.object,
        "created": reply.created,
        "result": reply.result,
        "is_truncated": reply.is_truncated,
        "need_clear_history": reply.need_clear_history,
        "ban_round": reply.ban_round,
        "usage": reply.usage,
    }


@pytest.mark.anyio
async def test_no_headers_no_quota(emulator: Emulator) -> None:
    """Without X-Ratelimit-* headers, .rate_limit is None on responses and streams."""
    async with token_client(emulator) as client:
        assert (await client.chat(HI)).rate_limit is None
        async with client.chat_stream(HI) as stream:
            assert (await stream.get_final_response()).rate_limit is None
            assert stream.rate_limit is None


@pytest.mark.anyio
async def test_copies_share_the_limiter(emulator: Emulator) -> None:
    """A client and its with_options copy draw from one limit: 6 calls at qps=20 take 0.25 s."""
    async with limited(emulator, RateLimits(qps=20, adopt_server_limits=False)) as client:
        copy = client.with_options(timeout=30)
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for user in (client, copy) * 3:
                tg.start_soon(user.chat, HI)
        elapsed = anyio.current_time() - start
    assert elapsed >= 0.25 - 0.02  # 0.1 s if each had its own limiter
    assert len(chat_requests(emulator)) == 6


@pytest.mark.anyio
async def test_cancelled_waiter_gives_back_its_place(emulator: Emulator) -> None:
    """At qps=1, a cancelled waiter held nothing: the next one's place is the next second."""
    limits = RateLimits(qps=1, adopt_server_limits=False, adaptive=False)
    async with limited(emulator, limits) as client:
        seen = await cancel_the_first_waiter(client, {}, {})
    assert seen.waiting == (2, 1)
    # What the third is told: the slot one second after the first call, no later.
    assert 0 < seen.next_wait <= 1.0
    assert seen.cancelled
    assert len(chat_requests(emulator)) == 2


@pytest.mark.anyio
async def test_waiting_is_not_part_of_the_timeout(emulator: Emulator) -> None:
    """A call that waits 2.5 s for its place still succeeds with a total deadline of 2 s."""
    limits = RateLimits(qps=0.4, adopt_server_limits=False, adaptive=False)
    async with limited(emulator, limits, timeout=mpt_async.Timeouts(total=2.0)) as client:
        start = anyio.current_time()
        outcomes = await burst(client, 2)
        assert anyio.current_time() - start >= 2.5 - 0.02
    assert outcomes == [None] * 2


class _CountingClient(httpx.AsyncClient):
    """An httpx client that notes the path of every request it builds."""

    def __init__(self) -> None:
        super().__init__()
        self.built: list[str] = []

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        request = super().build_request(*args, **kwargs)
        self.built.append(request.url.path)
        return request


@pytest.mark.anyio
async def test_a_waiting_call_holds_no_request(emulator: Emulator) -> None:
    """A call waiting for its place has no request built yet: it is built once admitted."""
    limits = RateLimits(qps=1, adopt_server_limits=False, adaptive=False)
    async with _CountingClient() as http, limited(emulator, limits, http_client=http) as client:

        def chats() -> int:
            return sum("/chat/" in path for path in http.built)

        await client.chat(HI)  # takes this second's place
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.chat, HI)
            await anyio.wait_all_tasks_blocked()
            assert (client._request_loop.limiter.waiting, chats()) == (1, 1)
        assert chats() == 2  # admitted a second later, then built
    assert len(chat_requests(emulator)) == 2


@pytest.mark.anyio
async def test_retries_wait_for_their_place(emulator: Emulator) -> None:
    """A retry after error 18 waits for the next slot like any call."""
    emulator.inject(Fault.error(18))
    limits = RateLimits(qps=5, adopt_server_limits=False)
    async with limited(emulator, limits, max_retries=1) as client:
        start = anyio.current_time()
        await client.chat(HI)
        elapsed = anyio.current_time() - start
    assert elapsed >= 0.2 - 0.02
    assert len(chat_requests(emulator)) == 2


@pytest.mark.anyio
async def test_rate_limit_refusal_holds_back_other_calls(emulator: Emulator) -> None:
    """After a 429 with Retry-After, the client's other calls wait too."""
    emulator.inject(Fault.http(429, headers={"Retry-After": "0.3"}))
    limits = RateLimits(qps=1000, adopt_server_limits=False)
    async with limited(emulator, limits, max_retries=1) as client:
        model = client._request_loop.limiter.model
        waited: list[float] = []
        remaining: list[float] = []

        async def other() -> None:
            # From the moment the refusal has been read (not merely sent): event order.
            await until(lambda: model.current().not_before > 0)
            start = anyio.current_time()
            remaining.append(model.current().not_before - start)
            await client.chat(HI)
            waited.append(anyio.current_time() - start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.chat, HI)
            tg.start_soon(other)
    assert remaining[0] > 0  # it was held back by the 429 (by up to 0.3 s)
    assert waited[0] >= remaining[0] - 0.01
    assert emulator.stats.error_responses == 0  # the 429 came from an injected HTTP fault
    assert len(chat_requests(emulator)) == 3


@pytest.mark.anyio
async def test_stream_charges_its_real_usage(emulator: Emulator) -> None:
    """A stream's tokens are charged from its last chunk's usage when it ends."""
    async with limited(emulator, RateLimits(tpm=10**6, adopt_server_limits=False)) as client:
        async with client.chat_stream(HI) as stream:
            final = await stream.get_final_response()
        assert client._request_loop.limiter.store.usage().tokens == final.usage.total_tokens


@pytest.mark.anyio
async def test_a_call_cancelled_in_flight_gives_back_its_tokens(emulator: Emulator) -> None:
    """TPM: a first call cancelled before its reply does not make the next wait a minute."""
    emulator.inject(Fault.stall(30))
    async with limited(emulator, RateLimits(tpm=2_000, adopt_server_limits=False)) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.chat, HI)
            await until(lambda: len(chat_requests(emulator)) == 1)
            tg.cancel_scope.cancel()
        tokens = client._request_loop.limiter.store.usage().tokens
        assert 0 < tokens < 2_000 // 4  # its prompt's estimate, no more
        with anyio.fail_after(20):  # it waited about 60 s before
            await client.chat(HI)


@pytest.mark.anyio
async def test_a_dropped_call_gives_back_its_tokens(emulator: Emulator) -> None:
    """TPM: a first call whose connection drops does not make the next wait a minute."""
    emulator.inject(Fault.drop())
    async with limited(emulator, RateLimits(tpm=2_000, adopt_server_limits=False)) as client:
        with pytest.raises(mpt_async.APIConnectionError):
            await client.chat(HI)
        with anyio.fail_after(20):
            await client.chat(HI)
    assert len(chat_requests(emulator)) == 2
