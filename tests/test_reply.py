"""The reply decoder's parts, one by one: bodies, event lines, failures, deadlines."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

import mpt_async
from mpt_async._body import Body, BodyTooLarge
from mpt_async._codes import Action
from mpt_async._redact import scrub
from mpt_async._sse import MAX_LINE_BYTES, BadLine, EventReader
from mpt_async._timeouts import DEFAULT_TOTAL, as_timeouts
from mpt_async._verdict import AttemptFailed

from .hostile import ANSWER

pytestmark = pytest.mark.anyio


class pieces:
    """The given parts as a body (a plain iterator: nothing is left for the collector)."""

    def __init__(self, *parts: bytes) -> None:
        self._parts = list(parts)

    def __aiter__(self) -> pieces:
        return self

    async def __anext__(self) -> bytes:
        if not self._parts:
            raise StopAsyncIteration
        return self._parts.pop(0)


async def test_a_line_in_many_pieces_is_joined_once() -> None:
    """A data line split over 1,000 reads comes out whole."""
    line = b"data: " + b"x" * 1000 + b"\n\n"
    reader = EventReader(pieces(*(line[i : i + 1] for i in range(len(line)))))
    assert await reader.next_payload() == b"x" * 1000
    assert await reader.next_payload() is None


async def test_a_line_beyond_the_cap_is_refused() -> None:
    """Once more than MAX_LINE_BYTES of one line are held, the reader refuses the stream."""
    reader = EventReader(pieces(b"data: ", *(b"y" * 65536 for _ in range(20))))
    with pytest.raises(BadLine, match="longer than"):
        await reader.next_payload()
    assert MAX_LINE_BYTES == 1024 * 1024


async def test_a_gzipped_body_is_decoded_and_capped() -> None:
    """Gzip is decoded; a body longer than the limit raises BodyTooLarge."""
    raw = gzip.compress(b"z" * 5000)
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=_Stream(raw))
    )
    async with httpx.AsyncClient(transport=transport) as http:
        body = Body(await http.send(http.build_request("GET", "http://x"), stream=True))
        assert await body.read() == b"z" * 5000
        await body.aclose()
        body = Body(await http.send(http.build_request("GET", "http://x"), stream=True), 100)
        with pytest.raises(BodyTooLarge, match="more than 100 bytes"):
            await body.read(limit=100)
        await body.aclose()


class _Stream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


async def test_a_mock_transport_reply_with_content_still_works() -> None:
    """A response built with its content (httpx.MockTransport) is read as it is."""
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=ANSWER))
    async with mpt_async.Client(
        auth=mpt_async.FixedTokenAuth("tok-1234"),
        base_url="http://mock",
        http_client=httpx.AsyncClient(transport=transport),
    ) as client:
        reply = await client.chat([{"role": "user", "content": "hi"}])
    assert reply.result == ANSWER["result"]


def test_a_failure_names_only_its_error_class() -> None:
    """The loop's internal AttemptFailed carries no token in its message, even as a context."""
    failure = AttemptFailed(mpt_async.APIError("boom"), Action.RAISE)
    failure.token = "tok-SECRET"
    assert "tok-SECRET" not in str(failure) + repr(failure)


def test_scrub_masks_and_cuts_the_chain() -> None:
    """Scrub masks the secrets in message and error_msg, and drops cause and context."""
    error = mpt_async.APIError("bad key sk-SECRET-1", error_code=1)
    error.__cause__ = ValueError("http://h/?access_token=tok")
    scrub(error, ["sk-SECRET-1"])
    assert "sk-SECRET-1" not in str(error)
    assert "sk-SECRET-1" not in error.error_msg
    assert error.__cause__ is None
    assert error.__context__ is None


def test_total_defaults_and_validation() -> None:
    """Total defaults to 600 s, accepts None, refuses non-positive values; a number keeps it."""
    assert mpt_async.Timeouts().total == DEFAULT_TOTAL == 600.0
    assert mpt_async.Timeouts(total=None).total is None
    with pytest.raises(mpt_async.ConfigurationError, match="total"):
        mpt_async.Timeouts(total=0)
    assert as_timeouts(5).total == DEFAULT_TOTAL
    assert as_timeouts(5).read == 5
    assert as_timeouts(1000).total == 1000
