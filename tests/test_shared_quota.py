"""The quota shared through Redis: one learned rate for a fleet, and Redis state that lies.

Against a real redis-server, and a RESP server that answers the quota script with replies
of every wrong type.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import mpt_async
from mpt_async import QuotaKind, RateLimits, RedisStore, SharedStoreError
from mpt_async._limiter import Limiter
from mpt_async._quota_model import MARGIN, QuotaModel
from mpt_async._redis_quota import RedisQuotaStore

from . import redisrun
from .redisrun import RedisServer
from .resp import lying_redis, scripts_answer

BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
AUTH = mpt_async.AccessTokenAuth("app-key", "app-secret")

# coredis's leftovers collected, one redis-server for the module, a key prefix per test.
pytestmark = redisrun.COREDIS_LEFTOVERS
_collect_coredis_leftovers = redisrun.collect_coredis_leftovers
redis = redisrun.redis
prefix = redisrun.prefix


def shared(store: RedisStore, **kwargs: object) -> Limiter:
    """A limiter counting in ``store``, as a client of one application has."""
    kwargs.setdefault("adopt_server_limits", False)
    model = QuotaModel(RateLimits(shared=store, **kwargs), clock=anyio.current_time)  # type: ignore[arg-type]
    quota = RedisQuotaStore(
        model, store, base_url="http://127.0.0.1:1", auth=AUTH, endpoint="mpt-30b-instruct"
    )
    return Limiter(model, quota)


def state_key(server: RedisServer, prefix: str) -> str:
    (key,) = server.cli("--scan", "--pattern", prefix + ":*quota-s*").split()
    return key


# -- one learned rate --------------------------------------------------------------------


@pytest.mark.anyio
@BACKENDS
async def test_a_cut_learned_by_one_process_holds_for_the_other(
    redis: RedisServer, prefix: str
) -> None:
    """A refusal seen by one limiter cuts the fleet's rate; the other adopts it next call."""
    async with (
        RedisStore(redis.url, prefix=prefix) as one_store,
        RedisStore(redis.url, prefix=prefix) as other_store,
    ):
        one, other = shared(one_store), shared(other_store)
        await other.acquire(10)
        ticket = await one.acquire(10)  # Redis answers: two calls in the last second
        ticket.refused(mpt_async.RateLimitError("qps", error_code=18, quota=QuotaKind.SECOND))
        assert one.model.rate == pytest.approx(MARGIN * 2)
        await one.acquire(10)  # carries the cut to Redis (waiting for its place)
        await other.acquire(10)
        assert other.model.rate == pytest.approx(one.model.rate)
        assert other.model.epoch == one.model.epoch == 1


@pytest.mark.anyio
@BACKENDS
async def test_a_refined_cut_holds_for_the_fleet(redis: RedisServer, prefix: str) -> None:
    """A later refusal of a call sent before the cut lowers the fleet's rate, in that epoch.

    Redis takes it as a lower rate for the same cut: the other process adopts it, and the
    process that refined keeps it (Redis's answer does not put the first cut back).
    """
    qps = mpt_async.RateLimitError("qps", error_code=18, quota=QuotaKind.SECOND)
    async with (
        RedisStore(redis.url, prefix=prefix) as one_store,
        RedisStore(redis.url, prefix=prefix) as other_store,
    ):
        one, other = shared(one_store), shared(other_store)
        await calls(one, 1)  # the first reply: calls no longer go one at a time
        sent = [await one.acquire(10) for _ in range(5)]
        sent[0].refused(qps)
        await one.store.flush()  # the cut, and the refused call's place given back
        cut = one.model.rate
        measured = one.store.usage().last_second
        sent[1].refused(qps)
        refined = MARGIN * measured  # a call fewer than the cut measured
        assert refined < cut
        assert one.model.rate == pytest.approx(refined)
        await one.store.flush()
        await other.acquire(10)
        assert other.model.rate == pytest.approx(refined)
        assert one.model.rate == pytest.approx(refined)
        assert other.model.epoch == one.model.epoch == 1


@pytest.mark.anyio
@BACKENDS
async def test_cancelled_waiters_hold_no_shared_capacity(redis: RedisServer, prefix: str) -> None:
    """Ten waiters cancelled at qps=1: the next place is the next second, not the eleventh.

    A waiter asks again later, and reserves nothing meanwhile.
    """
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=1, adaptive=False)
        await limiter.acquire(10)
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(limiter.acquire, 10)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        grant = await limiter.store.take(limiter.model, 10)
    assert 0 < grant.wait <= 1.0


@pytest.mark.anyio
@BACKENDS
async def test_a_flushed_redis_allows_no_burst(redis: RedisServer, prefix: str) -> None:
    """After FLUSHALL the schedule starts afresh: one call now, the next one interval on."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=0.2, adaptive=False)  # one call every 5 s
        await limiter.acquire(10)
        redis.cli("flushall")
        first = await limiter.store.take(limiter.model, 10)
        second = await limiter.store.take(limiter.model, 10)
    assert first.wait == 0
    assert second.wait > 1.0


@pytest.mark.anyio
@BACKENDS
async def test_a_schedule_far_ahead_of_redis_is_reset(redis: RedisServer, prefix: str) -> None:
    """A schedule or pause an hour ahead of Redis's clock is corrupt: calls are not held."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=100, adaptive=False)
        await limiter.acquire(10)
        key = state_key(redis, prefix)
        hour_ahead = (int(redis.cli("time").split()[0]) + 3600) * 1_000_000
        redis.cli("hset", key, "tat", str(hour_ahead), "pause", str(hour_ahead))
        with anyio.fail_after(10):
            await limiter.acquire(10)
        assert int(redis.cli("hget", key, "tat").strip()) < hour_ahead


# -- claims: several places a round trip -------------------------------------------------


def count_round_trips(store: RedisStore) -> list[int]:
    """Count ``store``'s round trips to Redis from now on."""
    count = [0]
    run = store.run

    async def counted(operation: Any) -> Any:
        count[0] += 1
        return await run(operation)

    store.run = counted  # type: ignore[method-assign]
    return count


def logged_places(redis: RedisServer, prefix: str) -> int:
    """How many places the budget's log in Redis holds."""
    return int(redis.cli("zcard", state_key(redis, prefix).replace("quota-s", "quota-l")))


async def calls(limiter: Limiter, count: int) -> None:
    """``count`` interactive calls, one after the other, each answered at once."""
    for _ in range(count):
        ticket = await limiter.acquire(10)
        ticket.reply(None)
        ticket.finish()


@pytest.mark.anyio
@BACKENDS
async def test_calls_in_a_row_claim_places_ahead(redis: RedisServer, prefix: str) -> None:
    """100 calls in a row: a few round trips to Redis claim their places, not one each."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=100_000, adaptive=False)
        trips = count_round_trips(store)
        await calls(limiter, 100)
    assert trips[0] <= 50  # claims of 1, 2, 4, 8, 16, 32, 32, 5 (fewer if some lapse)


@pytest.mark.anyio
@BACKENDS
async def test_a_place_claimed_ahead_is_not_handed_out_before_its_start(
    redis: RedisServer, prefix: str
) -> None:
    """At qps=50 a claim for three calls gets the places of now and 20 ms on.

    The next call is told to wait for the second place's start, not given it at once.
    """
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=50, adaptive=False)
        first = await limiter.store.take(limiter.model, 10, behind=2)
        second = await limiter.store.take(limiter.model, 10)
    assert first.wait == 0
    assert second.handle is None
    assert 0 < second.wait <= 0.02  # (about 0.02 unless the machine stalled between)


@pytest.mark.anyio
@BACKENDS
async def test_places_not_used_in_time_are_given_back(redis: RedisServer, prefix: str) -> None:
    """Places claimed ahead and left unused leave Redis's log with the next round trip.

    Nor do they count in what the store reports (the rate's cuts measure by it).
    """
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=1000, adaptive=False)
        await calls(limiter, 8)  # the last claims more places than the calls use
        assert limiter.store.usage().last_second == limiter.store.usage().calls == 8
        await anyio.sleep(0.1)  # past every place's time
        await calls(limiter, 1)
        assert logged_places(redis, prefix) == 9


@pytest.mark.anyio
@BACKENDS
async def test_a_cut_gives_back_the_places_claimed_at_the_old_rate(
    redis: RedisServer, prefix: str
) -> None:
    """After a refusal cuts the rate, the next call waits for the new schedule.

    It does not start at once on a place claimed at the old rate (a fresh model lets 16
    start at once, so the calls before claimed several).
    """
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store)
        await calls(limiter, 8)
        ticket = await limiter.acquire(10)
        ticket.refused(mpt_async.RateLimitError("qps", error_code=18, quota=QuotaKind.SECOND))
        started = anyio.current_time()
        with anyio.fail_after(10):
            await calls(limiter, 1)
        assert anyio.current_time() - started >= 0.05
        assert limiter.model.rate < 10


# -- replies of the wrong type -----------------------------------------------------------

WRONG = {
    "nil": b"_\r\n",
    "integer": b":7\r\n",
    "string": b"$3\r\nyes\r\n",
    "short array": b"*2\r\n:0\r\n:0\r\n",
    "map": b"%1\r\n$1\r\na\r\n:1\r\n",
    "inf": b",inf\r\n",
    "huge": b"*10\r\n" + b":0\r\n" * 3 + b":9223372036854775807\r\n" + b":0\r\n" * 6,
    "negative": b"*10\r\n" + b":-5\r\n" * 10,
    "texts": b"*10\r\n" + b"$1\r\n0\r\n" * 10,
    "ten": b"*10\r\n" + b":0\r\n" * 10,
    "places missing": b"*11\r\n" + b":0\r\n" * 10 + b":3\r\n",
    "a place an hour ahead": b"*12\r\n" + b":0\r\n" * 10 + b":1\r\n:3600000000\r\n",
}


@pytest.mark.anyio
@BACKENDS
@pytest.mark.parametrize("reply", list(WRONG.values()), ids=list(WRONG))
async def test_a_quota_reply_of_the_wrong_type_fails_open_or_raises(reply: bytes) -> None:
    """A quota reply of the wrong type: calls go on here (open), or SharedStoreError (raise).

    Never a raw TypeError, IndexError, KeyError or OverflowError.
    """
    with lying_redis(scripts_answer(reply)) as server, anyio.fail_after(20):
        async with RedisStore(server.url, timeout=0.5) as store:
            limiter = shared(store, qps=50, adaptive=False)
            for _ in range(3):
                (await limiter.acquire(10)).finish()
        async with RedisStore(server.url, on_error="raise", timeout=0.5) as store:
            limiter = shared(store, qps=50, adaptive=False)
            with pytest.raises(SharedStoreError, match="wrong type"):
                await limiter.acquire(10)


@pytest.mark.anyio
@BACKENDS
async def test_a_full_second_frees_a_second_and_its_margin_later(
    redis: RedisServer, prefix: str
) -> None:
    """Five calls just started under 5 a second: the next may start about 1.02 s on.

    As in one process: the margin is 20 ms of the second, not a share of the minute window
    (which held the whole fleet back 2.2 s).
    """
    async with RedisStore(redis.url, prefix=prefix) as store:
        limiter = shared(store, qps=5, adaptive=False)
        (await limiter.acquire(10)).finish()
        log = state_key(redis, prefix).replace("quota-s", "quota-l")
        sec, usec = redis.cli("time").split()
        now = int(sec) * 1_000_000 + int(usec)
        redis.cli("zadd", log, *(x for i in range(5) for x in (str(now), f"call-{i}")))
        key = state_key(redis, prefix)
        redis.cli("hset", key, "tat", "0")  # only the calls of the last second count
        grant = await limiter.store.take(limiter.model, 10)
    assert 0.5 < grant.wait <= 1.02
