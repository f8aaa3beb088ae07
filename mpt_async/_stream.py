"""A streamed answer: an async context manager first, and an async iterator of chunks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import httpx

from mpt_async import _converter
from mpt_async._exceptions import MalformedResponseError, StreamError
from mpt_async._limiter import Ticket
from mpt_async._models import ChatChunk, ChatResponse, Usage, set_rate_limit
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._sse import BadLine, EventReader
from mpt_async._transport import OpenStream, aclose_response, envelope_error, transport_error

__all__ = ["ChatStream"]

if TYPE_CHECKING:
    from typing_extensions import Self

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

    def __init__(
        self, opener: Opener, observe: Callable[[], CallObserver | None] | None = None
    ) -> None:
        self._opener: Opener | None = opener
        self._observe = observe
        #: Follows the call for telemetry, from the stream's opening to its end.
        self._observer: CallObserver | None = None
        self._response: httpx.Response | None = None
        self._reader: EventReader | None = None
        self._first: dict[str, Any] | None = None
        self._parts: list[str] = []
        self._last: ChatChunk | None = None
        self._flagged: ChatChunk | None = None
        self._done = False
        self._ticket: Ticket | None = None
        self._rate_limit: RateLimitInfo | None = None
        self._structure = _converter.CONVERTER.get_structure_hook(ChatChunk)

    def __repr__(self) -> str:
        state = "finished" if self._done else "open" if self._response else "not started"
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
            if self._reader is None:
                await self._open()
            if self._first is not None:
                data, self._first = self._first, None
            else:
                data = await self._next_data()
                if self._observer is not None:
                    self._observer.chunk()
            chunk = self._accept(data)
        except BaseException as exc:
            if self._observer is not None:
                self._observer.failed(exc)
            await self.aclose()
            raise
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
        reader = self._reader
        if reader is not None:
            # The body ends right after the last event; a server that keeps it open
            # only costs its connection, never the caller's time.
            with anyio.move_on_after(_DRAIN_LIMIT):
                try:
                    while await reader.next_payload() is not None:
                        pass  # anything after is_end is not part of the answer
                except (httpx.TransportError, BadLine):
                    pass
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
        response, self._response = self._response, None
        if response is not None:
            await aclose_response(response)

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
        flagged = self._flagged
        response = ChatResponse(
            id=last.id,
            object=last.object,
            created=last.created,
            result=self.text,
            is_truncated=last.is_truncated,
            need_clear_history=flagged is not None,
            ban_round=flagged.ban_round if flagged is not None else None,
            usage=last.usage,
        )
        if self._rate_limit is not None:
            set_rate_limit(response, self._rate_limit)
        return response

    # -- reading ----------------------------------------------------------------------

    async def _open(self) -> None:
        opener, self._opener = self._opener, None
        if opener is None:
            if self._reader is None:
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
            await aclose_response(opened.response)
            return
        self._response, self._reader, self._first = opened.response, opened.reader, opened.first
        self._ticket, self._rate_limit = opened.ticket, opened.rate_limit

    def _reject(self, data: Any, received: int) -> NoReturn:
        """Raise the error a non-chunk deserves: the API's error, or a StreamError."""
        if isinstance(data, dict) and "error_code" in data:
            response = self._response
            _, error = envelope_error(
                data,
                status_code=response.status_code if response is not None else None,
                request_id=None,
            )
            raise error
        try:
            _converter.structure(data, ChatChunk)
        except MalformedResponseError as exc:
            raise StreamError(
                f"chunk {received} is malformed: {exc.error_msg}", received=received
            ) from None
        raise StreamError(f"chunk {received} is malformed", received=received)  # pragma: no cover

    async def _next_data(self) -> Any:
        reader = self._reader
        assert reader is not None
        received = len(self._parts)
        try:
            payload = await reader.next_payload()
        except httpx.TransportError as exc:
            raise transport_error(exc, f"after {received} chunks") from exc
        except BadLine as exc:
            raise StreamError(
                f"malformed line after {received} chunks: {exc}", received=received
            ) from None
        if payload is None:
            raise StreamError(
                f"the stream ended after {received} chunks without is_end", received=received
            )
        try:
            return _converter.loads(payload)
        except ValueError:
            raise StreamError(
                f"chunk {received} is not JSON: {payload[:80]!r}", received=received
            ) from None

    def _accept(self, data: Any) -> ChatChunk:
        received = len(self._parts)
        try:
            # The hot path: one call per sentence, straight to the converter's hook.
            chunk: ChatChunk = self._structure(data, ChatChunk)
        except Exception:  # noqa: BLE001 - anything but a chunk: find out what it is
            self._reject(data, received)
        if chunk.sentence_id != received:
            what = "repeats" if chunk.sentence_id < received else "skips to"
            raise StreamError(
                f"sentence_id {what} {chunk.sentence_id} where {received} was due",
                received=received,
            )
        self._parts.append(chunk.result)
        self._last = chunk
        if chunk.need_clear_history and self._flagged is None:
            self._flagged = chunk
        return chunk
