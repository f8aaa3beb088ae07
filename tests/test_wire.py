"""The pool's two parsers, httptools (``_wire.py``) and h11 (httpcore), byte by byte.

Each test runs with both parsers on every backend, against a server written here that
sends exactly the bytes chosen: the same framing, reuse and refusals are expected of both.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import httpx
import pytest

from mpt_async import _pool
from mpt_async._pool import PoolTransport

from .test_pool import Handler, serving

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n"


@pytest.fixture(params=["httptools", "h11"])
def parser(request: pytest.FixtureRequest) -> str:
    """Run with each of the pool's parsers."""
    return str(request.param)


def pooled(parser: str) -> tuple[PoolTransport, httpx.AsyncClient]:
    pool = PoolTransport(limits=httpx.Limits(max_connections=5), parser=parser)  # type: ignore[arg-type]
    return pool, httpx.AsyncClient(transport=pool, timeout=5)


def replying(*replies: bytes, keep: bool = True) -> Handler:
    """A handler sending ``replies[n - 1]`` to the n-th request (the last one after that)."""

    async def handler(stream: anyio.abc.SocketStream, n: int) -> bool:
        await stream.send(replies[min(n, len(replies)) - 1])
        return keep

    return handler


async def twice(parser: str, handler: Handler) -> tuple[list[str], int, int]:
    """Two GETs one after the other: their texts, connections accepted, connections kept."""
    async with serving(handler) as server:
        pool, http = pooled(parser)
        async with http:
            texts = [(await http.get(server.url)).text for _ in range(2)]
            return texts, server.accepted, pool.idle_connections


async def answer(parser: str, reply: bytes, method: str = "GET") -> httpx.Response:
    """The response (read whole) to one request that the server answers with ``reply``."""
    async with serving(replying(reply)) as server:
        _, http = pooled(parser)
        async with http:
            return await http.request(method, server.url)


async def test_chunked_body_and_the_connection_is_reused(parser: str) -> None:
    """A chunked body arrives whole, and the next request reuses the connection."""
    texts, accepted, kept = await twice(parser, replying(CHUNKED))
    assert texts == ["ok!!!", "ok!!!"]
    assert (accepted, kept) == (1, 1)


async def test_content_length_body_and_the_connection_is_reused(parser: str) -> None:
    """A Content-Length body arrives whole, and the next request reuses the connection."""
    texts, accepted, kept = await twice(parser, replying(OK))
    assert texts == ["ok", "ok"]
    assert (accepted, kept) == (1, 1)


async def test_body_ended_by_the_close_is_whole_and_not_reused(parser: str) -> None:
    """No length and not chunked: the body ends when the server closes; a new one next."""
    reply = b"HTTP/1.1 200 OK\r\n\r\nto the end"
    texts, accepted, kept = await twice(parser, replying(reply, keep=False))
    assert (texts, accepted) == (["to the end", "to the end"], 2)
    if parser == "httptools":  # h11 keeps it idle, and finds it closed when next taken
        assert kept == 0


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_server_that_closes_does_not_get_the_connection_reused(
    parser: str, reply: bytes
) -> None:
    """``Connection: close`` or HTTP/1.0 without keep-alive: each request opens anew."""
    texts, accepted, kept = await twice(parser, replying(reply))
    assert texts == ["ok", "ok"]
    assert (accepted, kept) == (2, 0)


async def test_http_1_0_is_never_reused(parser: str) -> None:
    """HTTP/1.0, even with ``Connection: keep-alive``: each request opens anew (as h11)."""
    reply = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    texts, accepted, kept = await twice(parser, replying(reply))
    assert texts == ["ok", "ok"]
    assert (accepted, kept) == (2, 0)


async def test_interim_answers_are_skipped(parser: str) -> None:
    """A ``100 Continue`` and a ``103`` before the answer: the answer is what comes back."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    response = await answer(parser, interim + OK)
    assert (response.status_code, response.text) == (200, "ok")
    assert "link" not in response.headers
    texts, accepted, kept = await twice(parser, replying(interim + OK))
    assert (texts, accepted, kept) == (["ok", "ok"], 1, 1)


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_no_body_for_204_and_304(parser: str, status: bytes) -> None:
    """204 and 304 have no body, whatever their head says; the connection is reused."""
    reply = b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n"
    texts, accepted, kept = await twice(parser, replying(reply, OK))
    assert (texts, accepted, kept) == (["", "ok"], 1, 1)


async def test_no_body_for_head(parser: str) -> None:
    """The answer to HEAD has no body, though its head gives a length."""
    response = await answer(parser, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == "5"


@pytest.mark.parametrize("upgrade", [b"Upgrade: x\r\nConnection: upgrade\r\n", b""])
async def test_an_unasked_101_is_refused(parser: str, upgrade: bytes) -> None:
    """A 101 though no upgrade was asked: RemoteProtocolError, and the connection is closed."""
    reply = b"HTTP/1.1 101 Switching Protocols\r\n" + upgrade + b"\r\nstuff"
    async with serving(replying(reply)) as server:
        pool, http = pooled(parser)
        async with http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url)
            assert pool.connections == 0


async def test_bytes_after_the_answer_spoil_the_connection() -> None:
    """httptools: bytes after the whole answer leave the answer whole, the connection closed."""
    texts, accepted, kept = await twice("httptools", replying(OK + b"HTTP/1.1 200 OK\r\n"))
    assert (texts, accepted, kept) == (["ok", "ok"], 2, 0)


async def test_reason_phrase_and_version_reach_the_response(parser: str) -> None:
    """The response's reason_phrase and http_version come from the status line."""
    response = await answer(parser, b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n")
    assert (response.status_code, response.reason_phrase) == (418, "I'm a teapot")
    assert response.http_version == "HTTP/1.1"


async def test_a_large_head_within_the_limit_is_read(parser: str) -> None:
    """A 60 KiB header is within the head limit that both parsers share (100 KiB)."""
    big = b"x" * (60 * 1024)
    reply = b"HTTP/1.1 200 OK\r\nX-Big: " + big + b"\r\nContent-Length: 2\r\n\r\nok"
    response = await answer(parser, reply)
    assert (response.text, len(response.headers["x-big"])) == ("ok", len(big))


KEEP, CLOSE = True, False


@pytest.mark.parametrize(
    ("reply", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (1 << 20) + b"\r\n\r\n", KEEP),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Many: x\r\n" * 20_000 + b"\r\n", KEEP),
        (b"SPAM/1.1 200 OK\r\n\r\n", KEEP),
        (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", KEEP),
        (b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n", KEEP),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", KEEP),
        (b"", CLOSE),
        (b"HTTP/1.1 200 OK\r\nContent-", CLOSE),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", CLOSE),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n", CLOSE),
    ],
    ids=[
        "one-long-header",
        "many-headers",
        "garbage-protocol",
        "garbage-status",
        "garbage-length",
        "garbage-chunk-size",
        "closed-before-anything",
        "closed-mid-head",
        "closed-mid-body",
        "closed-mid-chunks",
    ],
)
async def test_a_bad_or_cut_response_is_a_remote_protocol_error(
    parser: str, reply: bytes, keep: bool
) -> None:
    """An oversized head, garbage, or a close before the end: RemoteProtocolError, never raw."""
    async with serving(replying(reply, keep=keep)) as server:
        pool, http = pooled(parser)
        async with http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url)
            assert pool.connections == 0


async def test_an_abandoned_body_closes_the_connection(parser: str) -> None:
    """A body closed half read: its connection is closed, the next request opens anew."""
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    async with serving(replying(first, OK)) as server:
        pool, http = pooled(parser)
        async with http:
            # Straight to the transport: httpx's own iterators are async generators, which
            # would be left for the garbage collector.
            response = await pool.handle_async_request(http.build_request("GET", server.url))
            body = aiter(response.stream)  # an async generator: closed below, not collected
            assert isinstance(body, AsyncIterator)
            assert await body.__anext__() == b"half"
            await response.aclose()
            await body.aclose()  # type: ignore[attr-defined]
            assert pool.connections == 0
            assert (await http.get(server.url)).text == "ok"
            assert server.accepted == 2


async def test_cancelled_while_reading_the_body_closes_the_connection(parser: str) -> None:
    """Cancelled mid-body: the connection is closed and its slot serves the next request."""

    async def stall(stream: anyio.abc.SocketStream, n: int) -> bool:
        if n == 1:
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            await stream.receive()  # until the client hangs up
        await stream.send(OK)
        return True

    async with serving(stall) as server:
        pool = PoolTransport(limits=httpx.Limits(max_connections=1), parser=parser)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=pool, timeout=5) as http:
            got: list[bytes] = []
            with anyio.CancelScope() as scope:
                response = await pool.handle_async_request(http.build_request("GET", server.url))
                try:
                    body = aiter(response.stream)
                    assert isinstance(body, AsyncIterator)
                    got.append(await body.__anext__())
                    scope.cancel()
                    got.append(await body.__anext__())  # cancelled while waiting
                finally:
                    await response.aclose()
            assert (scope.cancelled_caught, got) == (True, [b"half"])
            assert pool.connections == 0
            assert (await http.get(server.url)).text == "ok"
            assert server.accepted == 2


async def test_a_slow_body_times_out_as_httpx_read_timeout(parser: str) -> None:
    """A body that stops coming: httpx's ReadTimeout after the read timeout."""

    async def stall(stream: anyio.abc.SocketStream, n: int) -> bool:
        await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await stream.receive()
        return False

    async with serving(stall) as server:
        pool, http = pooled(parser)
        async with http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url, timeout=httpx.Timeout(5, read=0.05))
            assert pool.connections == 0


async def test_an_idle_connection_closed_by_the_server_is_not_reused(parser: str) -> None:
    """The server hung up on an idle connection: the next request opens a new one."""
    async with serving(replying(OK, keep=False)) as server:
        pool, http = pooled(parser)
        async with http:
            assert (await http.get(server.url)).text == "ok"
            await server.wait_open()
            await anyio.sleep(0.05)  # let the hang-up reach the client's socket
            assert (await http.get(server.url)).text == "ok"
            assert server.accepted == 2
            assert pool.connections <= 1  # the second may be seen closed when it comes back


async def test_an_expired_idle_connection_is_not_reused(parser: str) -> None:
    """An idle connection older than keepalive_expiry is closed, not used."""
    async with serving(replying(OK)) as server:
        limits = httpx.Limits(max_connections=1, keepalive_expiry=0)
        pool = PoolTransport(limits=limits, parser=parser)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=pool, timeout=5) as http:
            assert (await http.get(server.url)).text == "ok"
            await anyio.sleep(0.01)
            assert (await http.get(server.url)).text == "ok"
    assert server.accepted == 2


async def test_a_request_asking_to_close_is_not_reused(parser: str) -> None:
    """A request sent with ``Connection: close``: its connection is not kept."""
    async with serving(replying(OK)) as server:
        pool, http = pooled(parser)
        async with http:
            response = await http.get(server.url, headers={"Connection": "close"})
            assert (response.text, pool.connections) == ("ok", 0)


async def test_a_streamed_request_body_goes_chunked(parser: str) -> None:
    """A body of unknown length is sent in chunked coding, ended by a zero chunk."""

    async def upload(stream: anyio.abc.SocketStream, n: int) -> bool:
        while not server.received.endswith(b"0\r\n\r\n"):
            server.received += await stream.receive()
        await stream.send(OK)
        return True

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"hello", b"", b" world"):
            yield piece

    async with serving(upload) as server:
        _, http = pooled(parser)
        async with http:
            assert (await http.post(server.url, content=pieces())).text == "ok"
    head, _, body = server.received.partition(b"\r\n\r\n")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


async def test_a_request_body_of_known_length_is_sent_as_is(parser: str) -> None:
    """Bytes content goes with its Content-Length, unframed."""

    async def upload(stream: anyio.abc.SocketStream, n: int) -> bool:
        while not server.received.endswith(b"payload"):
            server.received += await stream.receive()
        await stream.send(OK)
        return True

    async with serving(upload) as server:
        _, http = pooled(parser)
        async with http:
            assert (await http.post(server.url, content=b"payload")).text == "ok"
    assert server.received.startswith(b"POST / HTTP/1.1\r\n")
    assert server.received.endswith(b"\r\nContent-Length: 7\r\n\r\npayload")


async def test_a_header_that_would_break_framing_is_refused(parser: str) -> None:
    """A CR LF in a header value: LocalProtocolError, and nothing reaches the server."""
    async with serving(replying(OK)) as server:
        pool, http = pooled(parser)
        async with http:
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(server.url, headers={"X-Evil": "a\r\nX-Injected: 1"})
            assert pool.connections == 0
    assert server.requests == 0


def test_the_default_parser_falls_back_to_h11_without_httptools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without httptools, the pool uses httpcore's h11 connection."""
    monkeypatch.delitem(sys.modules, "mpt_async._wire", raising=False)
    monkeypatch.setitem(sys.modules, "httptools", None)  # makes ``import httptools`` fail
    assert _pool._opener(None) is _pool._H11Connection
    with pytest.raises(ModuleNotFoundError):
        _pool._opener("httptools")


def test_the_default_parser_is_httptools_when_installed() -> None:
    """With httptools installed, the pool parses with it (unless told h11)."""
    from mpt_async import _wire

    assert _pool._opener(None) is _wire.Connection
    assert _pool._opener("h11") is _pool._H11Connection
