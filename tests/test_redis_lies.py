"""RedisStore against a Redis that lies (a byte-level RESP server): it never crashes or stalls."""

from __future__ import annotations

import logging
from urllib.parse import quote

import anyio
import pytest

from mpt_async import RedisStore, SharedStoreError
from mpt_async._redis_store import _spawn

from . import redisrun
from .resp import HANG_UP, Command, LyingRedis, endless, honest, lying_redis, scripts_answer

BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

# coredis's leftovers collected (see redisrun.COREDIS_LEFTOVERS).
pytestmark = redisrun.COREDIS_LEFTOVERS
_collect_coredis_leftovers = redisrun.collect_coredis_leftovers


def slow_info(server: list[LyingRedis], seconds: float) -> object:
    """A script that answers everything at once, but INFO after ``seconds``."""

    def script(command: Command) -> bytes | None:
        if command[0].upper() == b"INFO":
            server[0].wait(seconds)
        return honest(command)

    return script


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("info_delay", [0.3, 2.0])
def test_a_redis_slow_on_info_never_crashes_the_program(backend: str, info_delay: float) -> None:
    """Redis answers HELLO, is slow on INFO: calls fail open, the loop ends cleanly (trio too)."""
    holder: list[LyingRedis] = []
    with lying_redis(slow_info(holder, info_delay)) as server:  # type: ignore[arg-type]
        holder.append(server)

        async def main(linger: float) -> None:
            store = RedisStore(server.url, timeout=0.2)
            results: list[object] = []

            async def load() -> None:
                results.append(await store.load("app"))

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(load)
            assert results == [None] * 10
            await anyio.sleep(linger)  # 0: the loop ends while the connection's task runs

        for linger in (0.0, 0.0, 0.1, 0.5):
            anyio.run(main, linger, backend=backend)
        assert b"INFO" in server.names()


def test_a_background_task_ending_in_an_error_and_a_cancel_is_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A system task's error next to trio's cancel is logged, never a TrioInternalError."""
    import trio
    import trio.testing

    caplog.set_level(logging.DEBUG, "mpt_async")

    async def connection() -> None:
        async with trio.open_nursery() as nursery:

            async def cleanup_fails() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    raise TimeoutError  # as coredis's teardown may, when cancelled

            nursery.start_soon(cleanup_fails)
            await trio.sleep_forever()

    async def main() -> None:
        _spawn(connection, set())
        await trio.testing.wait_all_tasks_blocked()

    trio.run(main)  # ends by cancelling the system task
    assert any("task failed: " in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
@BACKENDS
async def test_a_percent_encoded_password_is_sent_decoded() -> None:
    """The password Redis receives in HELLO's AUTH is the URL's, percent-decoded."""
    password = "p/a#s?s@w%rd x"
    with lying_redis() as server:
        url = f"redis://me:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        async with RedisStore(url) as store:
            assert await store.load("app") is None
        hellos = [c for c in server.commands if c[0].upper() == b"HELLO"]
    assert hellos
    assert hellos[0][1:] == [b"3", b"AUTH", b"me", password.encode()]


@pytest.mark.anyio
@BACKENDS
@pytest.mark.parametrize(
    "reply",
    [b"+OK\r\n", b"_\r\n", b":7\r\n", b"$3\r\nyes\r\n", b"*1\r\n:1\r\n", b"%0\r\n", b",inf\r\n"],
    ids=["status", "nil", "seven", "string", "array", "map", "inf"],
)
async def test_a_lock_reply_of_the_wrong_type_is_a_failure_not_a_wait(reply: bytes) -> None:
    """A lock reply other than 0 or 1 is a failure (open: go on; raise: SharedStoreError)."""
    with lying_redis(scripts_answer(reply)) as server:
        # The lock's own wait is 60 s: a third of it tells a failure from a wait.
        with anyio.fail_after(20):
            async with RedisStore(server.url) as store:
                async with store.lock("app"):
                    pass
            async with RedisStore(server.url, on_error="raise") as store:
                with pytest.raises(SharedStoreError, match="wrong type"):
                    async with store.lock("app"):
                        pass


@pytest.mark.anyio
@BACKENDS
async def test_a_redis_that_hangs_up_fails_open() -> None:
    """A Redis that closes the connection on every command: loads fail open, quickly."""

    def script(command: Command) -> bytes | None:
        return HANG_UP if command[0].upper() == b"GET" else honest(command)

    with lying_redis(script) as server:
        with anyio.fail_after(20):
            async with RedisStore(server.url, timeout=0.5) as store:
                assert await store.load("app") is None
                assert await store.load("app") is None  # backing off: no new connection


@pytest.mark.anyio
@BACKENDS
async def test_an_endless_reply_is_dropped_after_a_bounded_read() -> None:
    """A reply that never ends: the store drops the connection within a few MB, fails open."""

    def script(command: Command) -> object:
        return endless() if command[0].upper() == b"GETRANGE" else honest(command)

    with lying_redis(script) as server:  # type: ignore[arg-type]
        async with RedisStore(server.url, timeout=5) as store:
            assert await store.load("app") is None
        taken = server.sent
    assert taken < 64 << 20  # the socket buffers' worth past the 1 MiB bound, not 5 s of it
