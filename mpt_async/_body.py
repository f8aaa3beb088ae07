"""A reply's body, read at a bounded cost and closed deterministically.

The body is read as it came over the wire (``aiter_raw``) and decompressed here, a bounded
piece at a time, so that a small compressed body cannot grow without limit in memory:
decoded bytes count against :data:`MAX_BODY_BYTES` (a whole non-stream body, a token reply,
or everything a compressed stream expands to). Only ``gzip`` and ``deflate`` are asked for
and accepted.

Closing a body closes its response, then drives the body's iterator to its end, so that no
half-read async generator is left for the garbage collector (trio warns about each one).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import anyio
import httpx

from mpt_async._logging import logger

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_BODY_BYTES",
    "Body",
    "RequestContent",
    "BodyTooLarge",
    "UnsupportedEncoding",
    "aclose_response",
    "finish_iterator",
    "plain_content",
]

#: The most bytes a reply's body may decode to (16 MiB).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: The content codings the client asks for, and the only ones it decodes.
ACCEPT_ENCODING = "gzip, deflate"
#: The most bytes one step of decompression produces.
_PIECE = 64 * 1024
#: The most buffered pieces a closed body is driven through before its generators finish.
_DRIVE_LIMIT = 10_000
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class BodyTooLarge(ValueError):
    """The body decodes to more than it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the reply's body decodes to more than {limit} bytes")


class UnsupportedEncoding(ValueError):
    """The body is compressed in a way the client did not ask for, or is corrupt."""


class _Inflated:
    """Decompresses a raw body a bounded piece at a time, up to a limit in all."""

    __slots__ = ("_left", "_limit", "_raw", "_tail", "_zlib")

    def __init__(self, raw: AsyncIterator[bytes], wbits: int, limit: int) -> None:
        self._raw = raw
        self._zlib = zlib.decompressobj(wbits)
        self._tail = b""
        self._left = self._limit = limit

    def __aiter__(self) -> _Inflated:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if not self._tail:
                try:
                    self._tail = await self._raw.__anext__()
                except StopAsyncIteration:
                    return self._count(self._zlib.flush()) or self._end()
            try:
                piece = self._zlib.decompress(self._tail, _PIECE)
            except zlib.error as exc:
                raise UnsupportedEncoding(
                    f"the reply's compressed body is corrupt ({exc})"
                ) from None
            self._tail = self._zlib.unconsumed_tail
            if piece:
                return self._count(piece)

    def _count(self, piece: bytes) -> bytes:
        self._left -= len(piece)
        if self._left < 0:
            raise BodyTooLarge(self._limit)
        return piece

    @staticmethod
    def _end() -> bytes:
        raise StopAsyncIteration


class _Once:
    """A body that is already in memory, as an iterator of one piece."""

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content: bytes | None = content

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        content, self._content = self._content, None
        if not content:
            raise StopAsyncIteration
        return content


class Body:
    """A response's body: its decoded bytes as they arrive, and a deterministic close.

    Args:
        response: A response opened with ``stream=True``; the body owns it from now on.
        limit: The most bytes a compressed body may expand to.

    Raises:
        UnsupportedEncoding: For a content coding other than gzip or deflate.
    """

    __slots__ = ("_raw", "chunks", "response")

    def __init__(self, response: httpx.Response, limit: int = MAX_BODY_BYTES) -> None:
        self.response = response
        coding = response.headers.get("content-encoding", "").strip().lower()
        raw: AsyncIterator[bytes]
        if response.is_stream_consumed:
            # Built with its content (a mock transport, say): httpx has decoded it already.
            raw, coding = _Once(response.content), ""
        else:
            raw = response.aiter_raw()
        self._raw = raw
        #: The decoded bytes (an identity body passes through untouched).
        self.chunks: AsyncIterator[bytes] = raw
        if coding not in ("", "identity"):
            wbits = _WBITS.get(coding)
            if wbits is None:
                msg = f"the reply is compressed with {coding[:40]!r}, which was not asked for"
                raise UnsupportedEncoding(msg)
            self.chunks = _Inflated(raw, wbits, limit)

    async def read(self, limit: int = MAX_BODY_BYTES) -> bytes:
        """The whole decoded body.

        Raises:
            BodyTooLarge: If it is longer than ``limit``.
            UnsupportedEncoding: If its compressed form is corrupt.
        """
        pieces: list[bytes] = []
        left = limit
        async for piece in self.chunks:
            left -= len(piece)
            if left < 0:
                raise BodyTooLarge(limit)
            pieces.append(piece)
        return b"".join(pieces)

    async def aclose(self) -> None:
        """Close the response, and finish the body's iterators (safe to call again)."""
        if self.response.is_closed:
            # httpx closes a response once its raw body has been read to the end (or this
            # ran before): nothing is left open, and no cancel scope is needed.
            return
        with anyio.CancelScope(shield=True):
            await _close_quietly(self.response)
            await finish_iterator(self._raw)


class RequestContent(httpx.AsyncByteStream):
    """A request body sent in one piece, without an async generator.

    httpx's own byte stream iterates with an async generator; a request cancelled while
    sending would leave it for the garbage collector (and trio warns).
    """

    __slots__ = ("_content", "_sent")

    def __init__(self, content: bytes) -> None:
        self._content = content
        self._sent = False

    def __aiter__(self) -> RequestContent:
        self._sent = False
        return self

    async def __anext__(self) -> bytes:
        if self._sent or not self._content:
            raise StopAsyncIteration
        self._sent = True
        return self._content


def plain_content(request: httpx.Request) -> httpx.Request:
    """Give ``request`` (built with bytes content) a body stream without a generator."""
    request.stream = RequestContent(request.content)
    return request


async def finish_iterator(chunks: AsyncIterator[bytes]) -> None:
    """Drive an abandoned body's iterator to its end, once its connection is closed.

    What was already received comes out of the buffers, then the closed connection fails
    (or ends) at once, and every generator under this one finishes too; ``aclose()`` alone
    would leave the inner generators for the garbage collector (trio warns about each one).
    """
    try:
        for _ in range(_DRIVE_LIMIT):
            await chunks.__anext__()
    except Exception:  # noqa: BLE001 - an abandoned body: any end will do
        return
    closer = getattr(chunks, "aclose", None)  # pragma: no cover - a body still flowing
    if closer is not None:  # pragma: no cover
        await closer()


async def aclose_response(response: httpx.Response) -> None:
    """Close a response even while the caller is being cancelled, so its connection is freed."""
    with anyio.CancelScope(shield=True):
        await _close_quietly(response)


async def _close_quietly(response: httpx.Response) -> None:
    try:
        await response.aclose()
    except Exception:  # noqa: BLE001 - closing must not mask the error being handled
        logger.debug("closing a response failed", exc_info=True)
