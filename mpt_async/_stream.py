"""A streamed answer: an async context manager first, and an async iterator of chunks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from mpt_async._exceptions import MPTError, StreamError
from mpt_async._limiter import Ticket
from mpt_async._models import ChatChunk, ChatResponse, Usage
from mpt_async._public import claim
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._reply import ChunkDecoder, scrub, whole_stream

__all__ = ["ChatStream"]

if TYPE_CHECKING:
    from typing_extensions import Self

    from mpt_async._telemetry import CallObserver
    from mpt_async._transport import OpenStream

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


claim(globals(), "ChatStream")  # public as mpt_async.X, even when loaded on first use
