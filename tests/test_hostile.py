"""A hostile server, byte by byte: no secret leaks, every wait ends, every reply costs little.

Each test points a client at :mod:`tests.hostile`'s loopback server, which sends exactly the
bytes the test chooses, and runs on asyncio (aiohttp and httpx transports) and trio.
"""

from __future__ import annotations

import gc
import json
import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import mpt_async
from mpt_async import _converter

from .clientkit import until
from .hostile import (
    ANSWER,
    SECRET_KEY,
    TOKEN,
    Wire,
    chunk_event,
    gzip_bomb,
    hostile,
    http_head,
    json_reply,
)

pytestmark = [pytest.mark.anyio, pytest.mark.transport]

HI = [{"role": "user", "content": "hi"}]
SSE = {"content_type": "text/event-stream"}
#: Generous: the bounds under test are a fraction of a second; the machine may be busy.
SLOW = 15.0


def fixed(url: str, **kwargs: Any) -> mpt_async.Client:
    """A client with a fixed access token and no retries."""
    kwargs.setdefault("max_retries", 0)
    return mpt_async.Client(auth=mpt_async.FixedTokenAuth(TOKEN), base_url=url, **kwargs)


def fetching(url: str, **kwargs: Any) -> mpt_async.Client:
    """A client that fetches its token with the API Key / Secret Key."""
    kwargs.setdefault("max_retries", 0)
    auth = mpt_async.AccessTokenAuth("api-key", SECRET_KEY)
    return mpt_async.Client(auth=auth, base_url=url, **kwargs)


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception reachable through causes and contexts."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]


def everything_shown(error: BaseException) -> str:
    """All an application could print or log about ``error``: each chained one's traceback."""
    parts = []
    for exc in chain(error):
        parts += traceback.format_exception(exc)
        parts += [repr(exc), str(exc), repr(exc.args), repr(vars(exc))]
    return "\n".join(parts)


def assert_secret_free(error: BaseException, *secrets: str) -> None:
    """No secret anywhere in what ``error`` shows, chained exceptions included."""
    shown = everything_shown(error)
    for secret in (TOKEN, SECRET_KEY, *secrets):
        assert secret not in shown


async def failure(call: Any) -> BaseException:
    """The exception ``call()`` raises (it must raise an MPTError)."""
    with pytest.raises(mpt_async.MPTError) as info:
        await call()
    return info.value


async def read_stream(client: mpt_async.Client) -> list[int]:
    """Read a whole stream; the sentence ids received."""
    got = []
    async with client.chat_stream(HI) as stream:
        async for chunk in stream:
            got.append(chunk.sentence_id)
    return got


# -- secrets, all the way down ------------------------------------------------------------


def echo_error_body(wire: Wire) -> None:
    """An error body whose message echoes the request line and the token."""
    text = f"bad request {wire.target} (token {TOKEN})"
    wire.send(json_reply({"error_code": 336003, "error_msg": text}, "400 Bad Request"))


async def test_echoed_url_and_token_in_error_msg_are_masked() -> None:
    """A server echoing the URL and the token in error_msg: the error shows neither."""
    with hostile(echo_error_body) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.InvalidRequestError)
    assert "bad request" in str(error)
    assert_secret_free(error)


async def test_echoed_secret_key_in_error_description_is_masked() -> None:
    """The token endpoint echoing the Secret Key in error_description: never shown."""

    def refuse(wire: Wire) -> None:
        reply = {"error": f"invalid_client {SECRET_KEY}", "error_description": wire.target}
        wire.send(json_reply(reply, "401 Unauthorized"))

    with hostile(refuse) as server:
        async with fetching(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.AuthenticationError)
    assert "refused the credentials" in str(error)
    assert error.error is not None
    assert SECRET_KEY not in error.error
    assert_secret_free(error)


async def test_echoed_url_in_reason_phrase_is_masked() -> None:
    """A reason phrase holding the URL (with its token) shows no token."""

    def reason(wire: Wire) -> None:
        wire.send(http_head(f"503 {wire.target}", content_length=0))

    with hostile(reason) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.InternalServerError)
    assert "HTTP 503" in str(error)
    assert_secret_free(error)


async def test_echoed_signature_is_masked() -> None:
    """A server echoing the Authorization header of a signed request: no signature shown."""
    signatures: list[str] = []

    def echo(wire: Wire) -> None:
        head = wire.request.split(b"\r\n\r\n")[0].decode()
        auth = next(line for line in head.split("\r\n") if line.lower().startswith("auth"))
        signatures.append(auth.rpartition("/")[2])
        text = f"signature mismatch: {auth} / {signatures[-1]}"
        wire.send(json_reply({"error_code": 14, "error_msg": text}, "401 Unauthorized"))

    with hostile(echo) as server:
        auth = mpt_async.AKSKAuth("access-key", SECRET_KEY)
        client = mpt_async.Client(auth=auth, base_url=server.url, max_retries=0, api="v1")
        async with client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.AuthenticationError)
    assert_secret_free(error, *signatures)


@pytest.mark.parametrize(
    "tail",
    [
        b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\n",  # broken chunked framing
        b'Content-Length: 500\r\n\r\n{"id": ',  # cut short
    ],
    ids=["bad-chunked", "cut-short"],
)
async def test_broken_reply_chains_nothing_that_holds_the_url(tail: bytes) -> None:
    """A broken body: an APIConnectionError in plain words, with no URL or token chained."""

    def broken(wire: Wire) -> None:
        wire.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + tail)

    with hostile(broken) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.APIConnectionError)
    assert "TransferEncodingError" not in str(error)
    assert "400" not in str(error)
    assert_secret_free(error)
    assert "access_token" not in everything_shown(error)


async def test_echoed_token_mid_stream_is_masked() -> None:
    """After a chunk, an error body or a bad line echoing the token: masked in the error."""

    def stream(wire: Wire) -> None:
        echo = json.dumps({"error_code": 336100, "error_msg": f"{wire.target} {TOKEN}"})
        wire.send(http_head(**SSE) + chunk_event(0) + b"data: " + echo.encode() + b"\n\n")

    def bad_line(wire: Wire) -> None:
        wire.send(http_head(**SSE) + chunk_event(0) + f"nonsense {TOKEN}\n".encode())

    for script, kind in (
        (stream, mpt_async.InternalServerError),
        (bad_line, mpt_async.StreamError),
    ):
        with hostile(script) as server:
            async with fixed(server.url) as client:
                error = await failure(lambda: read_stream(client))
        assert isinstance(error, kind)
        assert_secret_free(error)


# -- every wait has a bound ----------------------------------------------------------------


def trickled_body(wire: Wire) -> None:
    """A whole answer's head, then its body a byte at a time."""
    wire.send(http_head(content_type="application/json", content_length=10_000))
    wire.trickle(b" ", every=0.05)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (mpt_async.Timeouts(read=0.5, total=10.0), "no whole answer within 0.5 s (read)"),
        (mpt_async.Timeouts(read=0.5, total=None), "no whole answer within 0.5 s (read)"),
        (mpt_async.Timeouts(read=20.0, total=0.5), "total deadline of 0.5 s"),
    ],
    ids=["read", "read-without-total", "total-before-read"],
)
async def test_trickled_whole_answer_is_bounded(bounds: mpt_async.Timeouts, message: str) -> None:
    """A body trickled a byte at a time ends at `read` (or `total`, if that comes first)."""
    with hostile(trickled_body) as server:
        async with fixed(server.url, timeout=bounds) as client:
            started = time.monotonic()
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.APITimeoutError)
    assert message in str(error)
    assert time.monotonic() - started < SLOW


@pytest.mark.parametrize("total", [10.0, None], ids=["total", "no-total"])
async def test_trickled_reply_head_is_bounded(total: float | None) -> None:
    """A reply head trickled a byte at a time ends at its bound: `read` plus the sending's."""

    def trickle(wire: Wire) -> None:
        wire.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        wire.trickle(b"a", every=0.05)

    with hostile(trickle) as server:
        bounds = mpt_async.Timeouts(read=0.3, connect=0.1, write=0.1, pool=0.1, total=total)
        async with fixed(server.url, timeout=bounds) as client:
            started = time.monotonic()
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.APITimeoutError)
    assert "timed out waiting for the answer (reply head)" in str(error)
    assert time.monotonic() - started < SLOW


@pytest.mark.parametrize("noise", [b": keep-alive\n", b"\n"], ids=["comments", "blank-lines"])
async def test_trickled_noise_between_chunks_is_bounded_by_stream_read(noise: bytes) -> None:
    """SSE comments or blank lines every 50 ms do not hold a stream past `stream_read`."""

    def stream(wire: Wire) -> None:
        wire.send(http_head(**SSE) + chunk_event(0))
        wire.trickle(noise, every=0.05)

    with hostile(stream) as server:
        async with fixed(server.url, timeout=mpt_async.Timeouts(stream_read=0.5)) as client:
            async with client.chat_stream(HI) as stream_:
                assert (await stream_.__anext__()).sentence_id == 0
                started = time.monotonic()
                error = await failure(stream_.__anext__)
    assert isinstance(error, mpt_async.APITimeoutError)
    assert "after 1 chunk " in str(error)
    assert time.monotonic() - started < SLOW


async def test_trickled_noise_before_the_first_chunk_is_bounded() -> None:
    """Blank lines trickled before chunk 0 end the wait at `stream_read`."""

    def stream(wire: Wire) -> None:
        wire.send(http_head(**SSE))
        wire.trickle(b"\n", every=0.05)

    with hostile(stream) as server:
        async with fixed(server.url, timeout=mpt_async.Timeouts(stream_read=0.5)) as client:
            started = time.monotonic()
            error = await failure(lambda: read_stream(client))
    assert isinstance(error, mpt_async.APITimeoutError)
    assert time.monotonic() - started < SLOW


async def test_a_phase_timeout_is_retried_and_the_retry_answers() -> None:
    """A body that outlasts `read` is tried again; the next attempt's answer is the result."""

    def first_trickles(wire: Wire) -> None:
        if len(server.requests) == 1:
            trickled_body(wire)
        else:
            wire.send(json_reply(ANSWER))

    backoff = mpt_async.Backoff(initial=0.01, maximum=0.01)
    with hostile(first_trickles) as server:
        bounds = mpt_async.Timeouts(read=0.3, total=SLOW)
        async with fixed(server.url, timeout=bounds, max_retries=1, backoff=backoff) as client:
            reply = await client.chat(HI)
    assert reply.result == ANSWER["result"]
    assert len(server.requests) == 2


async def test_a_call_cancelled_mid_body_is_not_retried() -> None:
    """The caller's cancel, once the head has come, ends the call: no retry, no error."""
    with hostile(trickled_body) as server:
        async with fixed(server.url, max_retries=3) as client:
            with anyio.move_on_after(SLOW) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.chat, HI)
                    await until(lambda: len(server.requests) == 1)
                    await anyio.sleep(0.2)  # the head is out, the body trickles
                    tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert len(server.requests) == 1


async def test_a_retry_the_deadline_forbids_is_not_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backoff longer than the time left ends the call at once, with no retry logged."""
    caplog.set_level(logging.DEBUG, "mpt_async")
    backoff = mpt_async.Backoff(initial=5.0, maximum=5.0, jitter=0.0)
    bounds = mpt_async.Timeouts(read=0.2, total=1.0)
    with hostile(trickled_body) as server:
        async with fixed(server.url, timeout=bounds, max_retries=5, backoff=backoff) as client:
            started = time.monotonic()
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.APITimeoutError)
    assert time.monotonic() - started < 1.0 + SLOW / 3
    assert len(server.requests) == 1
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


async def test_total_deadline_ends_retries() -> None:
    """With endless retries, `total` still ends the call (per client, and per call)."""

    def silent(wire: Wire) -> None:
        wire.wait(30)

    backoff = mpt_async.Backoff(initial=0.01, maximum=0.02)
    bounds = mpt_async.Timeouts(read=0.2, total=1.0)
    with hostile(silent) as server:
        async with fixed(server.url, timeout=bounds, max_retries=1000, backoff=backoff) as client:
            started = time.monotonic()
            error = await failure(lambda: client.chat(HI))
            assert time.monotonic() - started < SLOW
            assert isinstance(error, mpt_async.APITimeoutError)
            assert "total deadline of 1 s" in str(error)
            per_call = mpt_async.Timeouts(read=0.2, total=0.5)
            error = await failure(lambda: client.chat(HI, timeout=per_call))
            assert "total deadline of 0.5 s" in str(error)
    assert len(server.requests) > 2  # it did retry, until the deadline


async def test_total_deadline_ends_an_endless_stream() -> None:
    """A stream of chunks that never ends is cut off at `total`."""

    def endless(wire: Wire) -> None:
        wire.send(http_head(**SSE))
        for i in range(1000):
            if not wire.send(chunk_event(i)):
                return
            wire.wait(0.05)

    with hostile(endless) as server:
        bounds = mpt_async.Timeouts(total=1.0)
        async with fixed(server.url, timeout=bounds) as client:
            started = time.monotonic()
            error = await failure(lambda: read_stream(client))
    assert isinstance(error, mpt_async.APITimeoutError)
    assert "total deadline" in str(error)
    assert time.monotonic() - started < SLOW


# -- every hostile reply has a bounded cost --------------------------------------------------


def gzipped(body: bytes, **headers: str) -> Any:
    def script(wire: Wire) -> None:
        head = http_head(content_encoding="gzip", content_length=len(body), **headers)
        wire.send(head + body)

    return script


async def test_gzip_bomb_on_chat_is_refused() -> None:
    """1 MiB of gzip expanding to 1 GiB: refused once 16 MiB are decoded."""
    with hostile(gzipped(gzip_bomb(), content_type="application/json")) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.MalformedResponseError)
    assert "decodes to more than" in str(error)


async def test_gzip_bomb_on_stream_is_refused() -> None:
    """A gzipped stream of endless blank lines: refused once 16 MiB are decoded."""
    with hostile(gzipped(gzip_bomb(piece=b"\n"), content_type="text/event-stream")) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: read_stream(client))
    assert isinstance(error, mpt_async.StreamError)
    assert "decodes to more than" in str(error)


async def test_gzip_bomb_on_token_endpoint_is_refused() -> None:
    """The token endpoint's reply is capped too."""
    with hostile(gzipped(gzip_bomb(), content_type="application/json")) as server:
        async with fetching(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.MalformedResponseError)
    assert "decodes to more than" in str(error)


async def test_unasked_content_coding_is_refused() -> None:
    """A coding the client did not ask for (br) is a MalformedResponseError."""

    def brotli(wire: Wire) -> None:
        wire.send(
            http_head(content_type="application/json", content_encoding="br", content_length=4)
            + b"\x00\x01\x02\x03"
        )

    with hostile(brotli) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.MalformedResponseError)
    assert "'br'" in str(error)


async def test_endless_stream_line_is_refused() -> None:
    """A `data:` line of 30 MB without its end is refused at 1 MiB, not buffered whole."""

    def long_line(wire: Wire) -> None:
        wire.send(http_head(**SSE) + chunk_event(0) + b"data: ")
        piece = b"x" * 65536
        for _ in range(30 * 16):
            if not wire.send(piece):
                return

    with hostile(long_line) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: read_stream(client))
    assert isinstance(error, mpt_async.StreamError)
    assert "longer than" in str(error)


@pytest.fixture(params=["default-json", "stdlib-json"])
def json_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the package's parser (orjson when installed) and with the standard library's."""
    if request.param == "stdlib-json":
        monkeypatch.setattr(_converter, "loads", json.loads)
    return str(request.param)


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        json.dumps({**ANSWER, "usage": {**ANSWER["usage"], "total_tokens": 10**4000}}).encode(),
        json.dumps({**ANSWER, "created": 10**30}).encode(),
        json.dumps(ANSWER).encode().replace(b'"created": 1', b'"created": 1e999'),
    ],
    ids=["deep", "huge-int", "int-over-64-bits", "huge-float"],
)
async def test_deep_or_huge_reply_is_malformed(json_parser: str, body: bytes) -> None:
    """Deep nesting and huge numbers: MalformedResponseError, with or without orjson."""

    def reply(wire: Wire) -> None:
        wire.send(json_reply(body))

    with hostile(reply) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.MalformedResponseError)


@pytest.mark.parametrize("field", ["created", "completion_tokens", "ban_round"])
async def test_a_chunk_int_over_64_bits_is_a_stream_error(json_parser: str, field: str) -> None:
    """Every integer of a chunk must fit in 64 bits, as in a whole answer."""
    # The last chunk, well-formed but for one number: only that number can fail it.
    huge = chunk_event(1, is_end=True).replace(b'"created": 1', b'"created": 1, "ban_round": 1')
    huge = huge.replace(f'"{field}": 1'.encode(), f'"{field}": {10**30}'.encode(), 1)
    assert str(10**30).encode() in huge

    def stream(wire: Wire) -> None:
        wire.send(http_head(**SSE) + chunk_event(0) + huge)

    with hostile(stream) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: read_stream(client))
    assert isinstance(error, mpt_async.StreamError)


async def test_deep_chunk_is_a_stream_error(json_parser: str) -> None:
    """A chunk nested 100,000 deep: StreamError, never RecursionError."""

    def stream(wire: Wire) -> None:
        wire.send(http_head(**SSE) + chunk_event(0) + b"data: " + DEEP + b"\n\n")

    with hostile(stream) as server:
        async with fixed(server.url) as client:
            error = await failure(lambda: read_stream(client))
    assert isinstance(error, mpt_async.StreamError)


# -- messages in the library's words, and clean closes ------------------------------------


async def test_refused_connection_is_said_plainly() -> None:
    """Nothing listening: "could not connect to HOST:PORT (connection refused)"."""
    with hostile(lambda wire: None) as server:
        url = server.url
    async with fixed(url) as client:
        error = await failure(lambda: client.chat(HI))
    assert isinstance(error, mpt_async.APIConnectionError)
    assert f"could not connect to 127.0.0.1:{url.rpartition(':')[2]}" in str(error)
    assert "connection refused" in str(error)
    assert "ssl" not in str(error)
    assert "Cannot connect" not in str(error)


async def test_stream_closed_early_leaves_nothing_for_the_collector() -> None:
    """Leaving a stream that is still flowing closes its body at once: no ResourceWarning."""

    def flowing(wire: Wire) -> None:
        wire.send(http_head(**SSE))
        for i in range(1000):
            if not wire.send(chunk_event(i)):
                return
            wire.wait(0.01)

    with hostile(flowing) as server:
        async with fixed(server.url) as client:
            for _ in range(3):
                async with client.chat_stream(HI) as stream:
                    async for chunk in stream:
                        if chunk.sentence_id == 2:
                            break
            gc.collect()  # a half-read async generator would warn (an error here) now
            await anyio.lowlevel.checkpoint()
