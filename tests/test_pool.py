"""The constant-time pool of httpcore connections, over real sockets.

The emulator serves the ordinary exchanges; a small byte-level server written here (in the
test's own event loop) plays the misbehaving ones: slow answers, bodies that stop half way,
connections closed under the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest

import mpt_async
from mpt_async import _client
from mpt_async._pool import PoolTransport
from mpt_async.testing import Emulator

from .clientkit import HI, cancel_when, token_client, wait_no_connections

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Handler = Callable[[anyio.abc.SocketStream, int], Awaitable[bool]]


class Server:
    """Counts connections; ``handler(stream, n)`` answers the n-th request of the server.

    The handler returns whether to keep the connection for another request.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.url = ""
        #: What the last request's first reads brought (its head, and maybe more).
        self.received = b""
        self._changed = anyio.Event()

    def _count(self, delta: int) -> None:
        self.open += delta
        self._changed.set()
        self._changed = anyio.Event()

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        self._count(+1)
        try:
            async with stream:
                while await self._one(stream):
                    pass
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass
        finally:
            self._count(-1)

    async def _one(self, stream: anyio.abc.SocketStream) -> bool:
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive()
            head += data
        self.requests += 1
        self.received = head
        return await self.handler(stream, self.requests)

    async def wait_open(self, count: int = 0) -> None:
        """Until the server holds ``count`` open connections (bounded)."""
        with anyio.fail_after(5):
            while self.open != count:
                await self._changed.wait()


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"http://127.0.0.1:{port}/"
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
    await listener.aclose()


async def answer_ok(stream: anyio.abc.SocketStream, n: int) -> bool:
    await stream.send(OK)
    return True


def pooled(**limits: int | float | None) -> tuple[PoolTransport, httpx.AsyncClient]:
    pool = PoolTransport(limits=httpx.Limits(**limits))  # type: ignore[arg-type]
    return pool, httpx.AsyncClient(transport=pool, timeout=5)


async def test_reuses_one_connection_for_sequential_calls(emulator: Emulator) -> None:
    """Calls made one after another share one connection to the emulator."""
    pool, http = pooled(max_connections=10)
    async with http, token_client(emulator, http_client=http) as client:
        for _ in range(5):
            assert (await client.chat(HI)).result
        async with client.chat_stream(HI) as stream:
            assert [c async for c in stream][-1].is_end
        assert (await client.chat(HI)).result
        assert pool.connections == 1
        assert pool.idle_connections == 1
        assert emulator.stats.open_connections == 1


async def test_never_opens_more_than_max_connections(emulator: Emulator) -> None:
    """Thirty calls at once through a pool of 3 use 3 connections, and all succeed."""
    emulator.set_chunk_delay(0.005)
    pool, http = pooled(max_connections=3)
    peak = 0
    async with http, token_client(emulator, http_client=http) as client:

        async def one() -> None:
            nonlocal peak
            async with client.chat_stream(HI) as stream:
                peak = max(peak, pool.connections)
                assert [c async for c in stream][-1].is_end

        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(one)
        assert peak == 3
        assert pool.connections == 3
    assert emulator.stats.stream_requests == 30


async def test_keeps_at_most_max_keepalive_idle() -> None:
    """Beyond ``max_keepalive_connections``, connections coming back are closed."""

    async def slow(stream: anyio.abc.SocketStream, n: int) -> bool:
        await anyio.sleep(0.05)
        await stream.send(OK)
        return True

    async with serving(slow) as server:
        pool, http = pooled(max_connections=4, max_keepalive_connections=1)
        async with http:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(http.get, server.url)
            assert server.accepted == 4
            assert pool.connections == pool.idle_connections == 1
            await server.wait_open(1)


async def test_pool_timeout_when_every_connection_is_busy() -> None:
    """A request that cannot get a connection within the pool timeout fails with PoolTimeout."""
    async with serving(answer_ok) as server:
        _, http = pooled(max_connections=1)
        async with http:
            async with http.stream("GET", server.url) as held:
                with pytest.raises(httpx.PoolTimeout):
                    await http.get(server.url, timeout=httpx.Timeout(5, pool=0.05))
                await held.aread()
            assert (await http.get(server.url)).text == "ok"  # the slot was not lost
            assert server.accepted == 1


async def test_a_queued_request_gets_the_connection_handed_back() -> None:
    """With one connection, requests queue and reuse it in turn."""
    async with serving(answer_ok) as server:
        pool, http = pooled(max_connections=1)
        async with http:
            results: list[str] = []

            async def get() -> None:
                results.append((await http.get(server.url)).text)

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(get)
            assert results == ["ok"] * 10
            assert server.accepted == 1
            assert pool.connections == 1


async def test_a_request_cancelled_mid_way_is_discarded_and_frees_its_slot() -> None:
    """Cancelled while waiting for the answer: the connection is closed, never reused."""

    async def late(stream: anyio.abc.SocketStream, n: int) -> bool:
        if n == 1:
            await stream.receive()  # no answer: ends (EndOfStream) when the client hangs up
        await stream.send(OK)
        return True

    async with serving(late) as server:
        pool, http = pooled(max_connections=1)
        async with http:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cancel_when, scope, lambda: server.requests == 1)
                    await http.get(server.url)  # cancelled once the server has it
            assert scope.cancelled_caught
            assert pool.connections == 0
            await server.wait_open()
            assert (await http.get(server.url)).text == "ok"
            assert server.accepted == 2


async def test_a_cancelled_waiter_does_not_take_a_connection() -> None:
    """A queued request cancelled before its turn leaves the connection to the next one."""
    async with serving(answer_ok) as server:
        pool, http = pooled(max_connections=1)
        async with http:
            async with http.stream("GET", server.url) as held:
                with anyio.move_on_after(0.05):
                    await http.get(server.url)
                await held.aread()
            assert (await http.get(server.url)).text == "ok"
            assert server.accepted == 1
            assert pool.connections == 1


async def test_a_refused_connection_raises_connect_error() -> None:
    """Nobody listening: httpx's ConnectError, and the slot is given back."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    pool, http = pooled(max_connections=1)
    async with http:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")
        assert pool.connections == 0


async def test_another_origin_takes_the_place_of_an_idle_connection() -> None:
    """With the pool full of idle connections to A, a call to B closes one of them."""
    async with serving(answer_ok) as a, serving(answer_ok) as b:
        pool, http = pooled(max_connections=1)
        async with http:
            assert (await http.get(a.url)).text == "ok"
            assert (await http.get(b.url)).text == "ok"
            await a.wait_open()
            assert (a.accepted, b.accepted, pool.connections) == (1, 1, 1)


async def test_close_closes_every_connection(emulator: Emulator) -> None:
    """Closing the client closes its pooled connections on the server's side too."""
    client = token_client(emulator)
    async with client:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(client.chat, HI)
        assert emulator.stats.open_connections >= 1
    assert await wait_no_connections(emulator) == 0


async def test_a_closed_pool_refuses_requests() -> None:
    """After aclose, the transport refuses to send (httpx's ConnectError)."""
    async with serving(answer_ok) as server:
        pool = PoolTransport()
        async with httpx.AsyncClient(transport=pool) as http:
            assert (await http.get(server.url)).text == "ok"
        await server.wait_open()
        with pytest.raises(httpx.ConnectError):
            await pool.handle_async_request(httpx.Request("GET", server.url))


async def test_only_http_and_https() -> None:
    """Any other scheme is refused before connecting."""
    with pytest.raises(httpx.UnsupportedProtocol):
        await PoolTransport().handle_async_request(httpx.Request("GET", "ftp://example.com/"))


def test_the_client_picks_the_pool_without_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    """No aiohttp: the pool, a proxy in the environment or not (the pool speaks to proxies)."""
    monkeypatch.delenv("MPT_ASYNC_TRANSPORT", raising=False)
    monkeypatch.setattr(_client, "AIOHTTP_AVAILABLE", False)
    limits = httpx.Limits(max_connections=7)
    assert isinstance(_client._pick_transport(limits), PoolTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert isinstance(_client._pick_transport(limits), PoolTransport)
    monkeypatch.setenv("MPT_ASYNC_TRANSPORT", "httpx")
    assert isinstance(_client._pick_transport(limits), httpx.AsyncHTTPTransport)


async def test_trio_and_asyncio_clients_work_through_the_pool(emulator: Emulator) -> None:
    """mpt_async's calls and streams run over the pool injected as a user's client."""
    pool, http = pooled(max_connections=2)
    async with http:
        client = mpt_async.Client(
            auth=mpt_async.AccessTokenAuth(emulator.api_key, emulator.secret_key),
            base_url=emulator.base_url,
            http_client=http,
        )
        async with client:
            reply = await client.chat(HI)
            assert reply.result
            async with client.chat_stream(HI) as stream:
                text = "".join([c.result async for c in stream])
            assert text
        assert pool.connections >= 1  # the user's client is left open
    assert pool.connections == 0
