"""RedisStore against a real redis-server: a shared token, shared limits, failing open."""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Any
from urllib.parse import quote

import anyio
import pytest

import mpt_async
from mpt_async import ConfigurationError, RateLimits, RedisStore, SharedStoreError
from mpt_async._limiter import Limiter
from mpt_async._quota_model import QuotaModel
from mpt_async._redis_quota import RedisQuotaStore
from mpt_async._token_store import StoredToken, token_key
from mpt_async.testing import Emulator

from . import redis_worker, redisrun
from .clientkit import HI, chat_requests, token_client, until
from .redisrun import RedisServer, redis_cluster, redis_server, require_redis

BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

# coredis's leftovers collected, one redis-server for the module, a key prefix per test.
pytestmark = redisrun.COREDIS_LEFTOVERS
_collect_coredis_leftovers = redisrun.collect_coredis_leftovers
redis = redisrun.redis
prefix = redisrun.prefix


def shared_client(emu: Emulator, store: RedisStore, **limits: Any) -> mpt_async.Client:
    """A token client sharing its token and its limits through ``store``."""
    limits.setdefault("adopt_server_limits", False)
    return token_client(
        emu,
        token_store=store,
        rate_limits=RateLimits(**limits, shared=store),
        max_retries=0,
    )


def limiter(store: RedisStore, emu: Emulator, **kwargs: Any) -> Limiter:
    """A shared limiter on its own, as a client with the emulator's credentials has."""
    window = kwargs.pop("window", 60.0)
    kwargs.setdefault("adopt_server_limits", False)
    kwargs.setdefault("adaptive", False)
    model = QuotaModel(RateLimits(**kwargs, shared=store), clock=anyio.current_time, window=window)
    quota = RedisQuotaStore(
        model,
        store,
        base_url=emu.base_url,
        auth=mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key),
        endpoint="mpt-30b-instruct",
    )
    return Limiter(model, quota)


def announced(server: RedisServer, prefix: str) -> str:
    """The per-minute calls announced to the fleet, as Redis keeps them ("" if none)."""
    keys = server.cli("--scan", "--pattern", prefix + ":*quota-s*").split()
    return server.cli("hget", keys[0], "rpm").strip() if keys else ""


def all_of_redis(server: RedisServer) -> str:
    """Every key and every value in the server, as text."""
    keys = server.cli("--scan").split()
    dumped = [server.cli("--no-raw", "dump", key) for key in keys]
    return "\n".join(keys + dumped)


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("http://localhost",), {}, "redis://"),
        ((6379,), {}, "redis://"),
        (("redis://localhost",), {"prefix": "a{b}"}, "prefix"),
        (("redis://localhost",), {"prefix": ""}, "prefix"),
        (("redis://localhost",), {"on_error": "ignore"}, "on_error"),
        (("redis://localhost",), {"timeout": 0}, "timeout"),
        (("redis://localhost",), {"timeout": True}, "timeout"),
    ],
)
def test_bad_settings_are_refused(args: Any, kwargs: Any, match: str) -> None:
    """A bad URL, prefix, on_error or timeout raises ConfigurationError before any I/O."""
    with pytest.raises(ConfigurationError, match=match):
        RedisStore(*args, **kwargs)


def test_shared_must_be_a_redis_store() -> None:
    """RateLimits(shared=...) takes a RedisStore or None."""
    with pytest.raises(ConfigurationError, match="shared"):
        RateLimits(qps=1, shared=mpt_async.MemoryTokenStore())  # type: ignore[arg-type]


def test_repr_shows_no_password() -> None:
    """The store's repr names host and port, never the URL's password."""
    store = RedisStore("redis://:hunter2@127.0.0.1:7777/0")
    assert "hunter2" not in repr(store)
    assert "127.0.0.1:7777" in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2/x@127.0.0.1:6379/0",
        "redis://:hunter2#x@127.0.0.1:6379/0",
        "redis://:hunter2?x@127.0.0.1:6379/0",
        "redis://user:hunter2#?/@127.0.0.1:6379",
        "redis://:hunter2@127.0.0.1:70000/0",
        "redis://:hunter2@127.0.0.1:0/0",
        "redis://:hunter2@127.0.0.1:-1/0",
        "redis://:hunter2@127.0.0.1:6379/zero",
        "redis://:hunter2@/0",
        "unix://:hunter2@",
    ],
    ids=["slash", "hash", "query", "all", "port-high", "port-zero", "port-negative", "db",
         "no-host", "no-path"],
)  # fmt: skip
def test_a_malformed_url_is_refused_without_its_password(url: str) -> None:
    """A raw / # ? in a password, a bad port or db: ConfigurationError, password unsaid."""
    with pytest.raises(ConfigurationError, match="percent-encode") as info:
        RedisStore(url)
    assert "hunter" not in str(info.value)
    assert "hunter" not in "".join(traceback.format_exception(info.value))
    assert info.value.__context__ is None


@pytest.mark.anyio
@BACKENDS
async def test_a_percent_encoded_password_reaches_redis_decoded(emulator: Emulator) -> None:
    """A percent-encoded password with / # ? @ % and a space authenticates to a real Redis."""
    password = "p/a#s?s@w%rd x"
    require_redis()
    server = RedisServer(None, "--requirepass", password).start()
    try:
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        for _ in range(2):
            async with RedisStore(url, on_error="raise") as store:
                assert password not in repr(store)
                async with token_client(emulator, token_store=store) as client:
                    await client.chat(HI)
        assert emulator.stats.token_requests == 1
    finally:
        server.stop()


# -- the token ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_token_for_many_stores(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """Clients on separate stores (as separate processes) fetch one token between them."""
    stores = [RedisStore(redis.url, prefix=prefix) for _ in range(3)]
    clients = [token_client(emulator, token_store=store) for store in stores]

    async def call(client: mpt_async.Client) -> None:
        async with client:
            await client.chat(HI)

    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(call, client)
    for store in stores:
        await store.aclose()
    assert emulator.stats.token_requests == 1
    assert len(chat_requests(emulator)) == 3
    assert emulator.secret_key not in all_of_redis(redis)
    assert emulator.api_key not in all_of_redis(redis)


# -- shared limits -----------------------------------------------------------------------


@pytest.mark.anyio
@BACKENDS
async def test_separate_stores_share_one_qps_budget(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """Two limiters on two stores space their calls as one: any k span k/qps or more."""
    stores = [RedisStore(redis.url, prefix=prefix) for _ in range(2)]
    limiters = [limiter(store, emulator, qps=50) for store in stores]
    times: list[float] = []

    async def one(shared: Limiter) -> None:
        await shared.acquire(10)
        times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, limiters[i % 2])
    for store in stores:
        await store.aclose()
    times.sort()
    # Redis schedules the starts 20 ms apart; the sleeps only ever end late, never early.
    assert times[-1] - times[0] >= 19 / 50 - 0.02


@pytest.mark.anyio
@BACKENDS
async def test_cancelled_waiter_gives_back_its_place(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """At qps=1, a cancelled waiter held nothing: the next caller gets the next slot."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        shared = limiter(store, emulator, qps=1)
        await shared.acquire(10)  # the first slot: now
        with anyio.move_on_after(0.1):
            await shared.acquire(10)  # waits for the slot at 1 s, and is cancelled
        start = anyio.current_time()
        await shared.acquire(10)
        waited = anyio.current_time() - start
    # The cancelled slot (0.9 s away), not the one after it (1.9 s): 0.8 s to spare.
    assert waited < 1.7


@pytest.mark.anyio
async def test_tokens_are_charged_estimate_then_real(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """TPM: a call reserves an estimate, then its real usage replaces it in Redis."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        async with shared_client(emulator, store, tpm=100_000) as client:
            reply = await client.chat(HI)
            await client.chat(HI)  # carries the first call's real count to Redis
    costs_key = [
        k for k in redis.cli("--scan").split() if k.startswith(prefix + ":") and "quota-c" in k
    ]
    assert len(costs_key) == 1
    charged = sorted(int(v) for v in redis.cli("hvals", costs_key[0]).split())
    assert reply.usage.total_tokens in charged
    assert len(charged) == 2


@pytest.mark.anyio
async def test_server_limits_are_shared(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """An X-Ratelimit-Limit-Requests header seen by one client holds back another's calls."""
    emulator.set_rate_limits(rpm=2)
    async with RedisStore(redis.url, prefix=prefix) as first_store:
        async with shared_client(emulator, first_store, adopt_server_limits=True) as client:
            await client.chat(HI)
        # Sent to Redis in the background, at once.
        await until(lambda: announced(redis, prefix) == "2")
    async with (
        RedisStore(redis.url, prefix=prefix) as second_store,
        shared_client(emulator, second_store, adopt_server_limits=True) as other,
        anyio.create_task_group() as tg,
    ):
        for _ in range(3):
            tg.start_soon(other.chat, HI)
        await until(lambda: len(chat_requests(emulator)) == 2)
        await anyio.sleep(0.3)  # the other two stay held back, for a minute
        tg.cancel_scope.cancel()
    assert len(chat_requests(emulator)) == 2
    assert emulator.stats.error_responses == 0


@pytest.mark.anyio
@BACKENDS
async def test_a_dead_reservation_expires(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """A reservation never settled (its process died) leaves the window by itself."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        dead = limiter(store, emulator, rpm=1, window=0.3)
        await dead.acquire(10)  # and never a word again
    assert all(
        int(redis.cli("pttl", key)) > 0
        for key in redis.cli("--scan", "--pattern", prefix + ":*").split()
    )
    async with RedisStore(redis.url, prefix=prefix) as store:
        alive = limiter(store, emulator, rpm=1, window=0.3)
        with anyio.fail_after(5):
            await alive.acquire(10)


# -- failing open, failing closed --------------------------------------------------------


@pytest.mark.anyio
@BACKENDS
async def test_unreachable_redis_fails_open_and_says_so_once(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """With no Redis, calls go on under per-process limits and one warning is logged."""
    caplog.set_level(logging.WARNING, "mpt_async")
    with redis_server() as gone:
        url = gone.url
    async with RedisStore(url, timeout=0.5) as store:
        async with shared_client(emulator, store, qps=20) as client:
            with anyio.fail_after(10):
                for _ in range(5):
                    await client.chat(HI)
    warnings = [r for r in caplog.records if "did not answer" in r.getMessage()]
    assert len(warnings) == 1
    assert len(chat_requests(emulator)) == 5


@pytest.mark.anyio
@BACKENDS
async def test_unreachable_redis_fails_closed_when_asked(emulator: Emulator) -> None:
    """With on_error="raise", a call raises SharedStoreError, with no coredis error chained."""
    with redis_server() as gone:
        url = gone.url
    async with RedisStore(url, on_error="raise", timeout=0.5) as store:
        async with shared_client(emulator, store, qps=20) as client:
            with pytest.raises(SharedStoreError) as info:
                await client.chat(HI)
    # Redis's outage is not the service's.
    assert not isinstance(info.value, mpt_async.APIConnectionError)
    assert isinstance(info.value, mpt_async.MPTError)
    error: BaseException | None = info.value
    while error is not None:
        assert not type(error).__module__.startswith("coredis")
        error = error.__cause__ or error.__context__
    assert chat_requests(emulator) == []


@pytest.mark.anyio
async def test_server_limits_are_shared_again_after_redis_lost_them(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """Announced limits go with every call, so a Redis emptied meanwhile learns them again."""
    emulator.set_rate_limits(rpm=100)
    async with (
        RedisStore(redis.url, prefix=prefix) as store,
        shared_client(emulator, store, adopt_server_limits=True) as client,
    ):
        await client.chat(HI)
        await until(lambda: announced(redis, prefix) == "100")
        redis.cli("flushall")  # a restart, or a day without calls
        await client.chat(HI)  # the same limits announced again: nothing new to this client
        await until(lambda: announced(redis, prefix) == "100", limit=5.0)


@pytest.mark.anyio
@BACKENDS
async def test_redis_killed_paused_and_restarted(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, prefix: str
) -> None:
    """Redis dying or freezing mid-run never stops the calls; sharing resumes after."""
    caplog.set_level(logging.WARNING, "mpt_async")
    with redis_server() as server:
        async with RedisStore(server.url, prefix=prefix, timeout=0.3) as store:
            async with shared_client(emulator, store, qps=50) as client:
                await client.chat(HI)
                server.stop()
                with anyio.fail_after(10):
                    await client.chat(HI)
                    await client.chat(HI)
                server.start()  # the same port, empty
                await anyio.sleep(1.1)  # the store leaves Redis alone for a second
                await client.chat(HI)
                assert server.cli("--scan", "--pattern", prefix + ":*").split()  # shared again
                server.pause()
                try:
                    with anyio.fail_after(10):
                        await client.chat(HI)
                finally:
                    server.resume()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("did not answer" in m for m in messages) == 2
    assert sum("answers again" in m for m in messages) == 1
    assert len(chat_requests(emulator)) == 5


# -- Redis Cluster -----------------------------------------------------------------------


@pytest.mark.anyio
@BACKENDS
async def test_cluster_shares_token_and_budget(emulator: Emulator) -> None:
    """On a 3-node Redis Cluster, separate stores share one token and one QPS budget."""
    with redis_cluster() as nodes:
        stores = [RedisStore(nodes[i].url, on_error="raise") for i in range(3)]
        clients = [shared_client(emulator, store, qps=20) for store in stores]
        start = anyio.current_time()

        async def calls(client: mpt_async.Client) -> None:
            async with client:
                for _ in range(3):
                    await client.chat(HI)

        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(calls, client)
        elapsed = anyio.current_time() - start
        for store in stores:
            await store.aclose()
    assert emulator.stats.token_requests == 1
    assert len(chat_requests(emulator)) == 9
    assert elapsed >= 8 / 20 - 0.02  # nine calls, one budget: 50 ms apart


# -- many processes ----------------------------------------------------------------------


def run_workers(
    emu: Emulator, url: str, prefix: str, backends: list[str], **config: Any
) -> list[dict[str, Any]]:
    """Start one worker process per backend, start them together, return their counts."""
    workers = [
        redis_worker.spawn(
            emu, url, prefix, backend=backend, skew=37.0 if i == 0 else 0.0, **config
        )
        for i, backend in enumerate(backends)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    return results


def test_four_processes_share_one_budget_and_one_token(
    emulator: Emulator, redis: RedisServer, prefix: str
) -> None:
    """2 asyncio + 2 trio processes (one with a clock 37 s off) share qps=20 and one token.

    Against the emulator enforcing qps=20: no refusal, the budget used to 90% or more, and
    no process starved (each gets a share; how even the shares are depends on when a busy
    machine schedules each process, so it is not asserted).
    """
    emulator.set_rate_limits(qps=20)
    results = run_workers(
        emulator,
        redis.url,
        prefix,
        ["asyncio", "trio", "asyncio", "trio"],
        qps=20,
        seconds=5.0,
        # A short queue (12 places, 0.6 s), so that a process the busy machine starts late
        # is not left behind the others' whole queue in so short a run.
        concurrency=3,
    )
    # Shares once all four run (the first second starts processes and fetches the token).
    begin = min(t for result in results for t in result["times"]) + 1.0
    answered = [sum(t >= begin for t in result["times"]) for result in results]
    assert sum(result["refused"] + result["failed"] for result in results) == 0
    assert emulator.stats.error_responses == 0
    assert emulator.stats.token_requests == 1
    times = sorted(request.time for request in chat_requests(emulator))
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate >= 0.9 * 20  # (and never over it: the emulator refused nothing)
    assert min(answered) >= 0.05 * sum(answered)


@pytest.mark.anyio
@BACKENDS
async def test_a_lock_cancelled_on_the_wire_is_given_back(redis: RedisServer, prefix: str) -> None:
    """Cancelled while its SET waits on a paused Redis, the fetch lock is still released."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        await store.load("app")  # connected
        name = store.key("app", "token-lock")
        redis.cli("client", "pause", "300")
        with anyio.move_on_after(0.1):
            async with store.lock("app"):
                pass  # never reached: Redis holds the SET until the pause ends
        await until(lambda: redis.cli("exists", name).strip() == "0", limit=10.0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "entry",
    [
        '{"value": "t", "expires_at": 1e999, "obtained_at": 1}',
        '{"value": "t", "expires_at": true, "obtained_at": 1}',
        '{"value": "t", "expires_at": "9999999999", "obtained_at": 1}',
        '{"value": "", "expires_at": 9999999999, "obtained_at": 1}',
        '["t", 9999999999, 1]',
        json.dumps({"value": "t" * 70_000, "expires_at": 9999999999, "obtained_at": 1}),
        '{"value": "t", "expires_at": 9999999999, "obtained_at": 1, "seal": 7}',
    ],
    ids=["endless", "bool", "string", "empty-value", "not-an-object", "too-long", "seal-type"],
)
async def test_a_malformed_stored_token_is_ignored(
    redis: RedisServer, prefix: str, entry: str
) -> None:
    """A token entry another writer left malformed reads as no token, never as a forever one."""
    async with RedisStore(redis.url, prefix=prefix) as store:
        redis.cli("set", store.key("app", "token"), entry)
        assert await store.load("app") is None


# -- what a stranger leaves in Redis -----------------------------------------------------


def _plant(redis: RedisServer, store: RedisStore, emu: Emulator, value: str) -> str:
    """Write a token entry the way a stranger to the credentials would (no seal)."""
    name = store.key(token_key(emu.base_url, emu.api_key, emu.secret_key), "token")
    now = time.time()
    entry = {"value": value, "expires_at": now + 3600, "obtained_at": now}
    redis.cli("set", name, json.dumps(entry))
    return name


@pytest.mark.anyio
@pytest.mark.parametrize("planted", ["valid", "too-long"])
async def test_a_token_planted_without_the_secret_key_is_not_used_and_replaced(
    emulator: Emulator, redis: RedisServer, prefix: str, planted: str
) -> None:
    """A token planted without the Secret Key (valid, or 70,000 chars) is never sent: replaced."""
    value = emulator.issue_token() if planted == "valid" else "t" * 70_000
    async with RedisStore(redis.url, prefix=prefix, on_error="raise") as store:
        name = _plant(redis, store, emulator, value)
        for _ in range(2):
            async with token_client(emulator, token_store=store) as client:
                await client.chat(HI)
    used = {r.query["access_token"] for r in chat_requests(emulator)}
    assert value not in used
    assert len(used) == 1
    assert emulator.stats.token_requests == 1
    entry = json.loads(redis.cli("--raw", "get", name))
    assert entry["value"] in used
    assert len(entry["seal"]) == 64


@pytest.mark.anyio
@BACKENDS
@pytest.mark.parametrize("ttl", [None, 10**9], ids=["no-ttl", "endless-ttl"])
async def test_a_lock_without_a_ttl_is_taken_over(
    emulator: Emulator, redis: RedisServer, prefix: str, ttl: int | None
) -> None:
    """A token lock with no TTL (or an endless one) is taken over at once, then released."""
    async with RedisStore(redis.url, prefix=prefix, on_error="raise") as store:
        key = token_key(emulator.base_url, emulator.api_key, emulator.secret_key)
        name = store.key(key, "token-lock")
        redis.cli("set", name, "someone", *(() if ttl is None else ("px", str(ttl))))
        # The lock's own wait is 60 s: a third of it tells a take-over from a wait.
        with anyio.fail_after(20):
            async with token_client(emulator, token_store=store) as client:
                await client.chat(HI)
    assert emulator.stats.token_requests == 1
    assert redis.cli("exists", name).strip() == "0"


def test_back_off_does_not_outlive_a_trio_run(redis: RedisServer, prefix: str) -> None:
    """Redis failing in one trio.run() is used again in the next: no back-off on trio's clock."""
    import trio
    import trio.testing

    store = RedisStore(redis.url, prefix=prefix, timeout=0.5)
    late = trio.testing.MockClock(rate=1)
    late.jump(1e7)  # this run's clock reads far ahead of any the next run may get

    async def first() -> None:
        redis.pause()
        try:
            assert await store.load("app") is None  # failed open: Redis is paused
        finally:
            redis.resume()

    async def second() -> None:
        await store.save("app", StoredToken("tok", time.time() + 600, time.time()))
        assert await store.load("app") is not None
        await store.aclose()

    trio.run(first, clock=late)
    time.sleep(1.1)  # past the back-off (1 s)
    trio.run(second)


@pytest.mark.anyio
@BACKENDS
@pytest.mark.parametrize("kind", ["huge", "hash"])
async def test_a_token_key_that_is_no_token_is_read_bounded_and_replaced(
    emulator: Emulator, redis: RedisServer, prefix: str, kind: str
) -> None:
    """A 64 MB string or a hash at the token's key reads as no token, and is replaced."""
    async with RedisStore(redis.url, prefix=prefix, on_error="raise") as store:
        key = token_key(emulator.base_url, emulator.api_key, emulator.secret_key)
        name = store.key(key, "token")
        if kind == "huge":
            redis.cli("setrange", name, str(64 << 20), "x")
        else:
            redis.cli("hset", name, "value", "t")
        assert await store.load(key) is None
        async with token_client(emulator, token_store=store) as client:
            await client.chat(HI)
        stored = await store.load(key)
    assert stored is not None
    assert stored.value == chat_requests(emulator)[0].query["access_token"]
