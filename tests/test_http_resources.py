"""The HTTP layer's resources are bounded: connections come back, and nothing stays open.

Over real sockets (the emulator, or a byte-level server in the test's loop), on each
transport the client picks by itself: the pool with httptools and with h11 (asyncio and
trio), and aiohttp (asyncio).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.abc
import httpx
import pytest

import mpt_async
from mpt_async import _client, _pool
from mpt_async._pool import PoolTransport
from mpt_async.testing import Emulator

from . import routes
from .clientkit import HI, token_client, wait_no_connections
from .routes import transport
from .test_pool import OK, Handler, Server, serving

pytestmark = pytest.mark.anyio

# The (event loop, transport) fixtures, shared with the other transport-level tests.
route = routes.route
anyio_backend = routes.anyio_backend


# trio warns of each async generator collected unexhausted (the caller's mistake, shown
# to them) and still closes it: that closing is what this test is about.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_stream_left_by_break_gives_its_connection_back_when_collected(
    emulator: Emulator, route: tuple[str, str]
) -> None:
    """A stream left by ``break`` without ``async with`` gives its connection back when collected."""
    http = httpx.AsyncClient(transport=transport(route[1], max_connections=1))
    async with http, token_client(emulator, http_client=http, max_retries=0) as client:
        for _ in range(2):
            stream = client.chat_stream(HI)
            async for _chunk in stream:
                break
            del stream, _chunk
            gc.collect()
        reply = await client.chat(HI, timeout=mpt_async.Timeouts(pool=5.0))
        assert reply.result
    assert await wait_no_connections(emulator) == 0


@contextlib.contextmanager
def descriptors_taken(below: int) -> Iterator[None]:
    """Hold every free file descriptor numbered under ``below``: the next socket's is above."""
    resource = pytest.importorskip("resource")
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = limits
    if soft != resource.RLIM_INFINITY and soft < below + 100:
        if hard != resource.RLIM_INFINITY and hard < below + 100:
            pytest.skip(f"at most {hard} open files here")
        resource.setrlimit(resource.RLIMIT_NOFILE, (below + 100, hard))
    taken: list[int] = []
    try:
        while (fd := os.open(os.devnull, os.O_RDONLY)) < below:
            taken.append(fd)
        os.close(fd)
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


async def test_connections_numbered_past_what_select_takes_are_reused(
    emulator: Emulator, route: tuple[str, str]
) -> None:
    """A connection whose descriptor is numbered 1024 or more is checked and reused like any."""
    with descriptors_taken(1024):
        http = httpx.AsyncClient(transport=transport(route[1], max_connections=1))
        async with http, token_client(emulator, http_client=http, max_retries=0) as client:
            for _ in range(3):
                assert (await client.chat(HI)).result
    assert emulator.stats.connections_seen == 1


@contextlib.asynccontextmanager
async def after_four_at_once(
    route: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    handler: Handler,
    **limits: float,
) -> AsyncIterator[tuple[Server, PoolTransport, httpx.AsyncClient]]:
    """The route's pool and its client, after four requests at once to ``handler``'s server.

    The pool sweeps its idle connections at every request. Skipped on aiohttp, whose connector sweeps its own idle connections.
    """
    if route[1] == "aiohttp":
        pytest.skip("aiohttp's connector sweeps its own idle connections")
    monkeypatch.setattr(_pool, "SWEEP_EVERY", 0.0)
    async with serving(handler) as server:
        pool = transport(route[1], max_connections=10, **limits)
        assert isinstance(pool, PoolTransport)
        async with httpx.AsyncClient(transport=pool) as http:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(http.get, server.url)
            yield server, pool, http


async def test_idle_connections_the_server_closed_are_swept(
    route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle connections the server closed, under a live one: the next request closes them."""

    async def answer_then_close(stream: anyio.abc.SocketStream, n: int) -> bool:
        # The fourth answer comes last, so its connection (kept) tops the idle stack: the
        # next request takes it without meeting the three dead ones below; only the sweep
        # closes those.
        await anyio.sleep(0.5 if n == 4 else 0.01 if n < 4 else 0)
        await stream.send(OK)
        if n < 4:  # the first three are closed by the server once idle in the pool
            await anyio.sleep(0.1)
        return n >= 4

    async with after_four_at_once(route, monkeypatch, answer_then_close) as (server, pool, http):
        await server.wait_open(1)
        assert pool.idle_connections == 4
        assert (await http.get(server.url)).text == "ok"
        assert (pool.connections, pool.idle_connections) == (1, 1)
        assert server.accepted == 4  # the request went over the live connection


async def test_expired_idle_connections_are_swept(
    route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle connections past keepalive_expiry are closed by the next request, not kept."""

    async def slow(stream: anyio.abc.SocketStream, n: int) -> bool:
        await anyio.sleep(0.01)
        await stream.send(OK)
        return True

    after = after_four_at_once(route, monkeypatch, slow, keepalive_expiry=0.05)
    async with after as (server, pool, http):
        assert pool.idle_connections == 4
        await anyio.sleep(0.1)  # past the expiry (a busier machine only waits longer)
        assert (await http.get(server.url)).text == "ok"
        assert pool.connections == 1
        await server.wait_open(1)


async def test_closing_the_client_with_calls_in_flight(
    emulator: Emulator, route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aclose()`` amid 50 calls: each ends in its answer or an MPTError; nothing stays open."""
    emulator.set_chunk_delay(0.02)
    monkeypatch.setattr(
        _client, "_pick_transport", lambda limits, *_: transport(route[1], max_connections=10)
    )
    client = token_client(emulator, max_connections=10, max_retries=2)
    outcomes: list[object] = []

    async def one(n: int) -> None:
        try:
            if n % 2:
                outcomes.append(await client.chat(HI))
            else:
                async with client.chat_stream(HI) as stream:
                    outcomes.append([chunk async for chunk in stream])
        except mpt_async.MPTError as exc:
            outcomes.append(exc)

    with anyio.fail_after(60):  # a read left waiting by the close fails here, not hangs
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(one, n)
            while emulator.stats.stream_requests < 5:  # noqa: ASYNC110 - the emulator's thread
                await anyio.sleep(0.01)
            await client.aclose()
    assert len(outcomes) == 50
    assert any(isinstance(outcome, mpt_async.MPTError) for outcome in outcomes)
    assert all(
        isinstance(outcome, (mpt_async.MPTError, mpt_async.ChatResponse, list))
        for outcome in outcomes
    )
    assert await wait_no_connections(emulator) == 0


async def test_endless_trailers_are_refused_with_bounded_reads(route: tuple[str, str]) -> None:
    """Endless trailers are a protocol error after a bounded read, not read without end."""
    if route[1] == "aiohttp":
        pytest.skip("aiohttp's own parser bounds trailers (tested with the hostile servers)")
    sent = 0

    async def endless_trailers(stream: anyio.abc.SocketStream, n: int) -> bool:
        nonlocal sent
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
        await stream.send(head)
        line = b"X-Trailer: " + b"a" * 1000 + b"\r\n"
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            while sent < 64 * 1024 * 1024:  # the client must stop reading long before
                await stream.send(line * 64)
                sent += len(line) * 64
        return False

    async with serving(endless_trailers) as server:
        async with httpx.AsyncClient(transport=transport(route[1]), timeout=30) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url)
    assert sent < 64 * 1024 * 1024
