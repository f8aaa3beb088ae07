"""A streamed answer: an async context manager first, and an async iterator of chunks.

:class:`ChatStream` is what the caller holds; :class:`ChunkDecoder` reads its chunks off the
body (event-stream lines split by ``_sse``), checked in order and bounded in time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import anyio
import httpx

from mpt_async import _converter
from mpt_async._body import Body, BodyTooLarge, UnsupportedEncoding
from mpt_async._codes import Action
from mpt_async._exceptions import (
    APIConnectionError,
    APITimeoutError,
    MalformedResponseError,
    MPTError,
    StreamError,
)
from mpt_async._limiter import Ticket
from mpt_async._models import ChatChunk, ChatResponse, Usage
from mpt_async._public import claim
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._redact import scrub
from mpt_async._reply import whole_stream
from mpt_async._sse import BadLine, EventReader
from mpt_async._verdict import AttemptFailed, connection_error, error_body_failure, is_error_body

__all__ = ["ChatStream", "ChunkDecoder", "Deadline", "where"]

if TYPE_CHECKING:
    from typing_extensions import Self

    from mpt_async._request_loop import OpenStream
    from mpt_async._telemetry import CallObserver

    Opener = Callable[[CallObserver | None], Awaitable[OpenStream]]

#: How long to wait for the body's end after the last chunk before giving up on reuse.
_DRAIN_LIMIT = 1.0


class ChatStream:
    """The sentences of one answer, as they arrive.

    Use it as ``async with client.chat_stream(...) as stream: async for chunk in stream``:
    leaving the block closes the connection whatever happened (``break``, an error, a
    cancellation). The connection is also released as soon as the last chunk arrives.

    Chunks come in ``sentence_id`` order 0, 1, 2, ...; the stream ends after the chunk with
    ``is_end``. A gap, a repeat, a line that is not JSON, or an end without ``is_end``
    raises :class:`~mpt_async.StreamError`; a broken connection raises
    :class:`~mpt_async.APIConnectionError` (or its :class:`~mpt_async.APITimeoutError`).
    Nothing is retried once a chunk has been handed over.
    """

    # No __dict__: 10,000 streams waiting for their place hold 10,000 of these.
    __slots__ = (
        "_decoder",
        "_done",
        "_first",
        "_flagged",
        "_last",
        "_observe",
        "_observer",
        "_opener",
        "_parts",
        "_rate_limit",
        "_secrets",
        "_ticket",
    )

    def __init__(
        self, opener: Opener, observe: Callable[[], CallObserver | None] | None = None
    ) -> None:
        self._opener: Opener | None = opener
        self._observe = observe
        #: Follows the call for telemetry, from the stream's opening to its end.
        self._observer: CallObserver | None = None
        self._decoder: ChunkDecoder | None = None
        self._first: dict[str, Any] | None = None
        self._parts: list[str] = []
        self._last: ChatChunk | None = None
        self._flagged: ChatChunk | None = None
        self._done = False
        self._ticket: Ticket | None = None
        self._rate_limit: RateLimitInfo | None = None
        self._secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        state = "finished" if self._done else "open" if self._decoder else "not started"
        return f"<ChatStream {state}, {len(self._parts)} chunks>"

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._observer is not None:
            self._observer.left(exc)
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatChunk:
        if self._done:
            raise StopAsyncIteration
        try:
            decoder = self._decoder or await self._opened()
            if self._first is not None:
                data, self._first = self._first, None
            else:
                data = await decoder.next_data()
                if self._observer is not None:
                    self._observer.chunk()
            chunk = decoder.chunk(data)
        except BaseException as exc:
            if isinstance(exc, MPTError):
                scrub(exc, self._secrets)  # cuts the chain too
            if self._observer is not None:
                self._observer.failed(exc)
            await self.aclose()
            raise
        self._parts.append(chunk.result)
        self._last = chunk
        if chunk.need_clear_history and self._flagged is None:
            self._flagged = chunk
        if chunk.is_end:
            await self._finish()
        return chunk

    async def _finish(self) -> None:
        """After ``is_end``: read to the body's end, so the connection can be reused."""
        ticket, last = self._ticket, self._last
        if ticket is not None and last is not None:
            ticket.settle(last.usage.total_tokens, last.usage.prompt_tokens)
        if self._observer is not None and last is not None:
            self._observer.succeeded(last, self.text)
        decoder = self._decoder
        if decoder is not None:
            # The body ends right after the last event; a server that keeps it open
            # only costs its connection, never the caller's time.
            with anyio.move_on_after(_DRAIN_LIMIT):
                await decoder.drain()
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the connection; safe to call more than once."""
        self._done = True
        self._opener = None
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.closed_early()  # nothing if it has ended already
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            ticket.finish()  # without is_end, the tokens used stay an estimate
        decoder = self._decoder
        if decoder is not None:
            await decoder.body.aclose()

    # -- what callers commonly want ---------------------------------------------------

    @property
    def text(self) -> str:
        """The answer's text received so far."""
        return "".join(self._parts)

    @property
    def chunks_received(self) -> int:
        """How many chunks have been handed over."""
        return len(self._parts)

    @property
    def finished(self) -> bool:
        """Whether the last chunk (``is_end``) has arrived."""
        return self._last is not None and self._last.is_end

    @property
    def usage(self) -> Usage | None:
        """The token counts of the latest chunk (the totals once finished)."""
        return self._last.usage if self._last is not None else None

    @property
    def rate_limit(self) -> RateLimitInfo | None:
        """The quota the reply's ``X-Ratelimit-*`` headers announced, once the stream is open."""
        return self._rate_limit

    async def get_final_response(self) -> ChatResponse:
        """Read the rest of the stream and return the whole answer as one response.

        Raises:
            StreamError: If the stream breaks, or was closed before its end.
        """
        async for _ in self:
            pass
        last = self._last
        if last is None or not last.is_end:
            raise StreamError(
                "the stream was closed before its last chunk", received=len(self._parts)
            )
        return whole_stream(last, self.text, self._flagged, self._rate_limit)

    # -- reading ----------------------------------------------------------------------

    async def _opened(self) -> ChunkDecoder:
        await self._open()
        if self._decoder is None:  # closed while opening
            raise StopAsyncIteration
        return self._decoder

    async def _open(self) -> None:
        opener, self._opener = self._opener, None
        if opener is None:
            if self._decoder is None:
                raise StreamError("the stream was closed before it started")
            return
        observer = self._observer = self._observe() if self._observe is not None else None
        try:
            opened = await opener(observer)
        except BaseException as exc:
            if observer is not None:
                observer.failed(exc)
            raise
        if observer is not None:
            observer.first_chunk()
        if self._done:  # closed while opening (a cancelled task): give the connection back
            if opened.ticket is not None:
                opened.ticket.finish()
            await opened.decoder.body.aclose()
            return
        self._decoder, self._first, self._secrets = opened.decoder, opened.first, opened.secrets
        self._ticket, self._rate_limit = opened.ticket, opened.rate_limit


# -- reading the chunks ----------------------------------------------------------------


_monotonic = time.monotonic


def where(received: int) -> str:
    """Where in a stream something happened, for an error message."""
    if not received:
        return "before any chunk"
    return f"after {received} chunk" if received == 1 else f"after {received} chunks"


class Deadline(Protocol):
    """A call's total deadline, as the request loop keeps it (and pushes it back)."""

    #: On ``time.monotonic()``.
    at: float


class ChunkDecoder:
    """Reads a stream's chunks: the first inside the request loop, the others for the caller.

    ``idle`` (``stream_read``) bounds the wait for each chunk, however the server trickles
    bytes (SSE comments, blank lines, a byte at a time); ``deadline``, the request loop's own
    deadline object (read, never copied), ends the call. A chunk that arrives whole in one
    read costs no timer: one starts only when the wait goes on past a read that brought no
    chunk (the transport's byte timer, set to ``idle``, bounds that first read).

    Args:
        body: The stream's body.
        idle: The longest wait for one chunk, in seconds.
        deadline: The call's deadline, by which the whole call must end.
    """

    __slots__ = ("_deadline", "_idle", "_reader", "_structure", "body", "received")

    def __init__(self, body: Body, *, idle: float, deadline: Deadline) -> None:
        self.body = body
        self._reader = self._events(body)
        self._structure = _converter.chunk_structurer()
        self._idle = idle
        self._deadline = deadline
        #: How many chunks have been accepted.
        self.received = 0

    @staticmethod
    def _events(body: Body) -> EventReader:
        return EventReader(body.chunks)

    async def first(self) -> dict[str, Any]:
        """Chunk 0's JSON object, checked for an error body.

        Raises:
            AttemptFailed: Retried for a broken connection or a silence; otherwise as the error
                body says, or raised.
        """
        try:
            data = await self.next_data()
        except APIConnectionError as exc:
            failure = AttemptFailed(exc, Action.RETRY)
        except MPTError as exc:
            failure = AttemptFailed(exc, Action.RAISE)
        else:
            if is_error_body(data):
                raise error_body_failure(data, self.body.response)
            if isinstance(data, dict):
                return data
            failure = AttemptFailed(StreamError("chunk 0 is not a JSON object"), Action.RAISE)
        raise failure

    async def next_data(self) -> Any:
        """The next chunk's parsed JSON (not yet checked).

        Raises:
            APIConnectionError: The connection broke, or no chunk came in time.
            StreamError: A bad line, the body's end, or text that is not JSON.
        """
        ready = self._reader.ready
        if not ready:
            await self._wait()
        payload = ready.popleft() if ready else None
        if payload is None:
            raise StreamError(
                f"the stream ended {where(self.received)}, without is_end", received=self.received
            )
        try:
            return _converter.loads(payload)
        except (ValueError, RecursionError):
            pass
        raise StreamError(
            f"chunk {self.received} is not JSON: {payload[:80]!r}", received=self.received
        )

    async def _wait(self) -> None:
        """Read until a payload is ready or the body ends, within the chunk's bounds."""
        reader = self._reader
        error: MPTError | None = None
        try:
            started = _monotonic()
            # The common case: one read brings the chunk, and the byte timer (``idle``)
            # bounds it; a timer of our own starts only if the wait goes on.
            if self._deadline.at - started <= self._idle or (
                await reader.fill() and not reader.ready
            ):
                await self._wait_more(started)
        except httpx.TransportError as exc:
            error = connection_error(exc, where(self.received))
        except (BadLine, BodyTooLarge, UnsupportedEncoding) as exc:
            error = StreamError(
                f"malformed stream {where(self.received)}: {exc}", received=self.received
            )
        if error is not None:
            raise error

    async def _wait_more(self, started: float) -> None:
        reader = self._reader
        left = min(self._deadline.at, started + self._idle) - _monotonic()
        with anyio.move_on_after(left):
            while await reader.fill() and not reader.ready:
                pass
            return
        raise APITimeoutError(self._silence(started))

    def _silence(self, started: float) -> str:
        if _monotonic() >= self._deadline.at:
            return f"the call's total deadline passed {where(self.received)}"
        return f"no chunk for {self._idle:g} s {where(self.received)} (stream_read)"

    async def drain(self) -> None:
        """Read what is left of the body after the last chunk (the caller bounds the time)."""
        try:
            while await self._reader.next_payload() is not None:
                pass  # anything after is_end is not part of the answer
        except (httpx.TransportError, BadLine, BodyTooLarge, UnsupportedEncoding):
            pass

    def chunk(self, data: Any) -> ChatChunk:
        """Turn one chunk's JSON into a chunk, in order.

        Raises:
            APIError: For an error body in the middle of the stream.
            StreamError: For anything else that is not the chunk due.
        """
        received = self.received
        try:
            # The hot path: one call per sentence, straight to the converter's chunk hook.
            chunk: ChatChunk = self._structure(data, ChatChunk)
        except Exception:  # noqa: BLE001 - anything but a chunk: find out what it is
            self._reject(data)
        if chunk.sentence_id != received:
            what = "repeats" if chunk.sentence_id < received else "skips to"
            raise StreamError(
                f"sentence_id {what} {chunk.sentence_id} where {received} was due",
                received=received,
            )
        self.received = received + 1
        return chunk

    def _reject(self, data: Any) -> NoReturn:
        """Raise the error a non-chunk deserves: the API's error, or a StreamError."""
        received = self.received
        if is_error_body(data):
            raise error_body_failure(data, self.body.response).error
        try:
            _converter.structure(data, ChatChunk)
        except MalformedResponseError as exc:
            message = f"chunk {received} is malformed: {exc.error_msg}"
        else:  # pragma: no cover - the fast path and the converter disagree
            message = f"chunk {received} is malformed"
        raise StreamError(message, received=received)


claim(globals(), "ChatStream")  # public as mpt_async.X, even when loaded on first use
