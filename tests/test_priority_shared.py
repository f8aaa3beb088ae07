"""Priorities across clients that share a RedisStore: live calls first, fleet-wide.

Two clients on one store in one test process stand in for two processes (each has its own
limiter and its own lease); one test runs a real second process and kills it. Against a
real redis-server and the emulator.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest

import mpt_async
from mpt_async import RateLimits, RedisStore
from mpt_async._limiter import INTERACTIVE, Ticket
from mpt_async._priority import LEASE
from mpt_async._redis_quota import RedisQuotaStore
from mpt_async.testing import Emulator

from . import redis_worker, redisrun
from .clientkit import HI, chat_requests, token_client, until
from .redisrun import RedisServer, redis_server

# coredis's leftovers collected, one redis-server for the module, a key prefix per test.
pytestmark = redisrun.COREDIS_LEFTOVERS
_collect_coredis_leftovers = redisrun.collect_coredis_leftovers
redis = redisrun.redis
prefix = redisrun.prefix


def spaced(emu: Emulator, store: RedisStore, qps: float) -> mpt_async.Client:
    """A client held to ``qps`` by its ceiling alone, counted in ``store``'s shared budget."""
    limits = RateLimits(qps=qps, adaptive=False, adopt_server_limits=False, shared=store)
    return token_client(emu, rate_limits=limits, max_retries=0)


def record(
    client: mpt_async.Client, name: str, admitted: list[str], mp: pytest.MonkeyPatch
) -> None:
    """Append ``name`` and the call's queue to ``admitted`` as each attempt is admitted."""
    limiter = client._request_loop.limiter
    acquire, admit_now = limiter.acquire, limiter.admit_now

    def note(priority: int) -> None:
        admitted.append(f"{name} {'interactive' if priority == INTERACTIVE else 'batch'}")

    async def recording(size: int, priority: int = INTERACTIVE) -> Ticket:
        ticket = await acquire(size, priority)
        note(priority)
        return ticket

    def recording_now(size: int, priority: int = INTERACTIVE) -> Ticket | None:
        ticket = admit_now(size, priority)
        if ticket is not None:
            note(priority)
        return ticket

    mp.setattr(limiter, "acquire", recording)
    mp.setattr(limiter, "admit_now", recording_now)


def key(server: RedisServer, prefix: str, kind: str) -> str | None:
    """The budget's key of ``kind`` (s state, l log, p leases), if it exists."""
    keys = server.cli("--scan", "--pattern", f"{prefix}:*quota-{kind}*").split()
    return keys[0] if keys else None


def leases(server: RedisServer, prefix: str) -> int:
    """How many clients hold a lease (lapsed ones not pruned yet count too)."""
    name = key(server, prefix, "p")
    return 0 if name is None else int(server.cli("zcard", name))


def logged(server: RedisServer, prefix: str) -> int:
    """How many calls the shared budget counted in its window."""
    name = key(server, prefix, "l")
    return 0 if name is None else int(server.cli("zcard", name))


def hold(server: RedisServer, prefix: str, seconds: float) -> None:
    """Make the shared schedule's next place ``seconds`` from now, by Redis's clock.

    The clients then queue with time to spare, however slow a busy machine is.
    """
    sec, usec = server.cli("time").split()
    name = key(server, prefix, "s")
    assert name is not None
    server.cli("hset", name, "tat", str(int(sec) * 1_000_000 + int(usec) + int(seconds * 1e6)))


def slow_to_ask_again(client: mpt_async.Client, seconds: float, mp: pytest.MonkeyPatch) -> None:
    """Make ``client``'s waiting calls ask the store again ``seconds`` late (a busy process).

    Other clients then ask first when capacity frees: only a lease keeps the order.
    """
    store = client._request_loop.limiter.store
    take = store.take
    asked = 0

    async def late(*args: Any) -> Any:
        nonlocal asked
        asked += 1
        if asked > 1:
            await anyio.sleep(seconds)
        return await take(*args)

    mp.setattr(store, "take", late)


def limiter_of(client: mpt_async.Client) -> Any:
    """The client's limiter."""
    return client._request_loop.limiter


@pytest.mark.anyio
async def test_a_waiting_interactive_call_goes_before_another_clients_waiting_batch_calls(
    emulator: Emulator, redis: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batch calls of one client wait, then a live call of another: it starts first.

    Even though the live call's process asks late when capacity frees: its client holds a
    lease while the call waits, and none once it has started.
    """
    admitted: list[str] = []
    async with (
        RedisStore(redis.url, prefix=prefix) as store,
        spaced(emulator, store, 4) as live,
        spaced(emulator, store, 4) as batch,
    ):
        await batch.chat(HI, priority="batch")  # tokens fetched, the script loaded
        await live.chat(HI)
        record(live, "live", admitted, monkeypatch)
        record(batch, "batch", admitted, monkeypatch)
        slow_to_ask_again(live, 0.3, monkeypatch)
        hold(redis, prefix, 1.0)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(partial(batch.chat, HI, priority="batch"))
            await until(lambda: limiter_of(batch).waiting == 3)
            assert leases(redis, prefix) == 0  # batch calls wait without one
            tg.start_soon(live.chat, HI)
            await until(lambda: limiter_of(live).waiting == 1)
            assert leases(redis, prefix) == 1
        assert admitted == ["live interactive"] + ["batch batch"] * 3
        assert leases(redis, prefix) == 0
    assert len(chat_requests(emulator)) == 6


@pytest.mark.anyio
async def test_one_client_holds_one_lease_and_orders_its_own_calls(
    emulator: Emulator, redis: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client's waiting live and batch calls: its own queue orders them, one lease.

    The client holds one lease however many of its calls wait, and none once they started.
    """
    admitted: list[str] = []
    async with RedisStore(redis.url, prefix=prefix) as store, spaced(emulator, store, 4) as client:
        await client.chat(HI)
        record(client, "one", admitted, monkeypatch)
        hold(redis, prefix, 1.0)
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(partial(client.chat, HI, priority="batch"))
            await until(lambda: limiter_of(client).waiting == 2)
            for _ in range(2):
                tg.start_soon(client.chat, HI)
            await until(lambda: limiter_of(client).waiting == 4)
            assert leases(redis, prefix) == 1  # one per client, however many calls wait
        assert admitted == ["one interactive"] * 2 + ["one batch"] * 2
        assert leases(redis, prefix) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("cancelled", ["interactive", "batch"])
async def test_a_cancelled_waiter_of_either_priority_loses_no_capacity_and_leaves_no_lease(
    emulator: Emulator,
    redis: RedisServer,
    prefix: str,
    cancelled: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancelled waiter (either priority) is counted nowhere, and its client's lease goes.

    The other client's waiting call (of the other priority) is then the one that starts.
    """
    other = "batch" if cancelled == "interactive" else "interactive"
    async with (
        RedisStore(redis.url, prefix=prefix) as store,
        spaced(emulator, store, 4) as one,
        spaced(emulator, store, 4) as two,
    ):
        await one.chat(HI)
        await two.chat(HI)
        # The background task's flush is sent below, at a known point (not racing it).
        monkeypatch.setattr(store, "nudge", lambda: None)
        hold(redis, prefix, 1.0)
        scope = anyio.CancelScope()

        async def waiting() -> None:
            with scope:
                await one.chat(HI, priority=cancelled)  # type: ignore[arg-type]

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting)
            await until(lambda: limiter_of(one).waiting == 1)
            tg.start_soon(partial(two.chat, HI, priority=other))  # type: ignore[arg-type]
            await until(lambda: limiter_of(two).waiting == 1)
            assert leases(redis, prefix) == 1  # the interactive waiter's client's
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert limiter_of(one).waiting == 0
            quota = limiter_of(one).store
            assert isinstance(quota, RedisQuotaStore)
            await quota.flush()  # what the background task sends soon, sent now
            # Only the waiting interactive call's lease, if it is not the cancelled one.
            assert leases(redis, prefix) == (1 if other == "interactive" else 0)
        assert leases(redis, prefix) == 0
        assert logged(redis, prefix) == 3  # the cancelled call took no place
    assert scope.cancelled_caught
    assert len(chat_requests(emulator)) == 3


@pytest.mark.anyio
async def test_a_lapsed_lease_is_pruned_and_holds_no_batch_back(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """A lease left by a client that vanished lapses: a batch call then starts.

    The script prunes lapsed leases, and drops at once a lease far longer than any given
    (a clock step).
    """
    async with RedisStore(redis.url, prefix=prefix) as store, spaced(emulator, store, 50) as batch:
        await batch.chat(HI, priority="batch")
        name = key(redis, prefix, "s")
        assert name is not None
        leases_key = name.replace("quota-s", "quota-p")
        sec, usec = redis.cli("time").split()
        now = int(sec) * 1_000_000 + int(usec)
        redis.cli("zadd", leases_key, str(now + 10**9), "from-a-broken-clock")
        await batch.chat(HI, priority="batch")  # not held back
        assert leases(redis, prefix) == 0
        redis.cli("zadd", leases_key, str(now + int(LEASE * 1e6)), "vanished")
        with anyio.fail_after(30):
            await batch.chat(HI, priority="batch")
        assert leases(redis, prefix) == 0
    assert len(chat_requests(emulator)) == 3


@pytest.mark.anyio
async def test_fail_open_when_redis_dies_mid_run_calls_answered_order_kept_in_process(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-server killed while batch and live calls run: every call is answered.

    Then, with no Redis, one client's waiting live call still starts before its batch calls.
    """
    with redis_server() as server:
        async with RedisStore(server.url, timeout=0.5) as store:
            async with spaced(emulator, store, 20) as live, spaced(emulator, store, 20) as batch:
                await live.chat(HI)

                async def live_calls() -> None:
                    for _ in range(3):
                        await live.chat(HI)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(live_calls)
                    async with batch.batch([HI] * 10, concurrency=4) as results:
                        await until(lambda: len(chat_requests(emulator)) >= 4)
                        server.stop()
                        errors = [result.error async for result in results]
                assert errors == [None] * 10
            assert len(chat_requests(emulator)) == 14
            admitted: list[str] = []
            async with spaced(emulator, store, 2) as client:
                record(client, "one", admitted, monkeypatch)
                await client.chat(HI)
                async with anyio.create_task_group() as tg:
                    for _ in range(2):
                        tg.start_soon(partial(client.chat, HI, priority="batch"))
                    await until(lambda: limiter_of(client).waiting == 2)
                    tg.start_soon(client.chat, HI)
                    await until(lambda: limiter_of(client).waiting == 3)
            assert admitted == ["one interactive"] * 2 + ["one batch"] * 2
    assert len(chat_requests(emulator)) == 18


def test_the_lease_of_a_process_that_died_lapses(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """A process whose live call waits (holding a lease) is killed: no batch starves.

    Another process's batch call is held back only until the lease lapses, then starts.
    """
    config = {"qps": 0.5, "seconds": 60, "concurrency": 2, "backend": "asyncio"}
    with redis_worker.spawn(emulator, redis.url, prefix, **config) as worker:
        try:
            assert worker.stdout is not None
            assert worker.stdin is not None
            assert worker.stdout.readline().strip() == "ready"
            worker.stdin.write("go\n")
            worker.stdin.flush()
            anyio.run(until, lambda: leases(redis, prefix) == 1)  # its second caller waits
        finally:
            worker.kill()
    assert leases(redis, prefix) == 1  # nobody dropped it

    async def batch_call() -> None:
        async with RedisStore(redis.url, prefix=prefix) as store:
            async with spaced(emulator, store, 0.5) as client:
                with anyio.fail_after(30):
                    await client.chat(HI, priority="batch")

    sent = len(chat_requests(emulator))
    anyio.run(batch_call)
    assert leases(redis, prefix) == 0
    assert len(chat_requests(emulator)) == sent + 1
