"""``Conversation``: a multi-round history kept for the caller, by the API's rules.

The API keeps no state: every call carries the whole history, which must alternate
``user`` / ``assistant``, end with the current question, and hold at most 4,800 characters.
A :class:`Conversation` builds that list, trims it, and updates it only when an answer
has fully arrived, so a failed, broken, abandoned or cancelled call changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import attrs

from mpt_async._client import Client
from mpt_async._exceptions import RequestValidationError
from mpt_async._models import (
    MAX_TOTAL_CONTENT,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Message,
    MessageLike,
    Usage,
    to_messages,
)
from mpt_async._options import ChatOptions, check_options
from mpt_async._timeouts import TimeoutLike, Timeouts, as_timeouts
from mpt_async._validate import check_instance, check_int

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from mpt_async._stream import ChatStream

__all__ = ["Conversation", "ConversationFlag", "ConversationStream"]

#: One round: the user's question and the assistant's answer.
_Round = tuple[Message, Message]
#: The ``ban_round`` that names the question of the flagged request itself.
_CURRENT_QUESTION = -1


@attrs.frozen
class ConversationFlag:
    """What a flagged answer (``need_clear_history``) removed from a conversation.

    The flagged question is never kept, whatever ``ban_round`` says.

    Attributes:
        ban_round: As the service sent it: ``-1`` for the question just asked, ``n >= 1``
            for the n-th round of the history sent with it (counted from 1, oldest first).
        removed: The history messages dropped because of the flag (empty when only the
            question was flagged).
        cleared: Whether the whole history was dropped: with ``clear_on_flag``, or when
            ``ban_round`` names no round that was sent.
    """

    ban_round: int | None
    removed: tuple[Message, ...]
    cleared: bool


def _flatten(rounds: Iterable[_Round]) -> list[Message]:
    return [message for pair in rounds for message in pair]


def _size(rounds: Iterable[_Round]) -> int:
    return sum(len(asked.content) + len(answered.content) for asked, answered in rounds)


def _to_rounds(history: Iterable[MessageLike]) -> tuple[_Round, ...]:
    """Check a starting history (alternating, user first, even count) and pair it up."""
    try:
        messages = to_messages(history)
    except RequestValidationError as exc:
        raise RequestValidationError(
            exc.field.replace("messages", "history", 1), exc.rule
        ) from None
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            raise RequestValidationError(
                f"history[{i}].role", f"must be {expected!r}: rounds are user, then assistant"
            )
    if len(messages) % 2:
        raise RequestValidationError("history", "must end with an assistant's answer")
    return tuple(zip(messages[::2], messages[1::2], strict=True))


def _check_max_chars(value: object) -> int:
    return check_int(value, "max_chars", low=1, high=MAX_TOTAL_CONTENT)


class Conversation:
    """A multi-round chat: the history kept, trimmed and sent for you.

    ``await conv.ask("...")`` sends the history plus the question and, once the answer
    has arrived, appends both; ``async with conv.ask_stream("...") as stream`` does the
    same sentence by sentence, appending when the last chunk (``is_end``) arrives. A call
    that fails, is cancelled, or a stream that breaks or is left early leaves the history
    exactly as it was.

    Before each call the oldest whole rounds are dropped (for good) until the history and
    the question add up to at most ``max_chars`` characters; the question itself is never
    dropped. An answer that is empty is not kept (the API refuses empty messages), and
    neither is its question.

    A flagged answer (``need_clear_history``) adds nothing: its question is not kept. Its
    ``ban_round`` says what else goes: ``-1`` (the question itself) drops nothing more; ``n``
    (counted from 1, oldest first, among the rounds sent with the question, as Baidu's
    "the n-th round" reads; one past them is the question again) drops that round; any
    other value drops the whole history, as does ``clear_on_flag=True`` whatever the round.
    :attr:`last_flag` tells what happened.

    Calls on one conversation take turns: a second ``ask`` waits until the first has
    finished (a stream holds its turn until its ``async with`` block is left), so each
    question is sent with the answer before it.

    Args:
        client: The :class:`~mpt_async.Client` to ask through.
        history: Earlier rounds to start from: ``user``, ``assistant``, ... ending with an
            answer (:class:`~mpt_async.Message` objects or dicts).
        max_chars: The most characters one request's messages may add up to (at most the
            API's 4,800).
        clear_on_flag: Drop the whole history on any flagged answer (Baidu's advice to end
            the session), not only the flagged round.
        timeout: The timeouts of every call (default: the client's).
        **options: The sampling options of every call (see :class:`~mpt_async.ChatOptions`);
            a call's own options replace them.

    Raises:
        RequestValidationError: If ``history`` or a default option breaks a rule of the API.
        ConfigurationError: If ``client`` is not a Client, ``max_chars`` is not in 1..4800,
            or ``timeout`` is not a timeout.
    """

    def __init__(
        self,
        client: Client,
        *,
        history: Iterable[MessageLike] = (),
        max_chars: int = MAX_TOTAL_CONTENT,
        clear_on_flag: bool = False,
        timeout: TimeoutLike | None = None,
        **options: Unpack[ChatOptions],
    ) -> None:
        self._client = check_instance(client, "client", Client, what="a mpt_async.Client")
        self._max_chars = _check_max_chars(max_chars)
        self._clear_on_flag = bool(clear_on_flag)
        self._timeout: Timeouts | None = None if timeout is None else as_timeouts(timeout)
        self._defaults = check_options(options)
        self._rounds: tuple[_Round, ...] = _to_rounds(history)
        #: Bumped by clear(): an answer to a question sent before it is not kept.
        self._generation = 0
        self._lock = anyio.Lock()
        self._owner: int | None = None
        self._last_flag: ConversationFlag | None = None

    def __repr__(self) -> str:
        return f"<Conversation {len(self._rounds)} rounds, {_size(self._rounds)} chars>"

    def __len__(self) -> int:
        """The number of rounds (question and answer pairs) kept."""
        return len(self._rounds)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The history as a snapshot, oldest first (``user``, ``assistant``, ...)."""
        return tuple(_flatten(self._rounds))

    @property
    def last_flag(self) -> ConversationFlag | None:
        """What the flag on the latest answer removed; ``None`` if it was not flagged.

        Set each time an answer arrives; a failed call leaves it as it was.
        """
        return self._last_flag

    def clear(self) -> None:
        """Forget the whole history; an answer still on its way will not be kept."""
        self._rounds = ()
        self._generation += 1

    async def ask(
        self,
        question: str,
        *,
        # The client's per-call bounds on waiting (as in Client.chat), not a deadline.
        timeout: TimeoutLike | None = None,  # noqa: ASYNC109
        **options: Unpack[ChatOptions],
    ) -> ChatResponse:
        """Ask the next question with the history; keep the round once answered.

        Options given here replace the conversation's defaults for this call.

        Args:
            question: The user's question; never trimmed.
            timeout: Override the timeouts for this call.
            **options: The sampling options for this call (see
                :class:`~mpt_async.ChatOptions`).

        Returns:
            The service's answer; see :attr:`last_flag` when ``need_clear_history`` is set.

        Raises:
            RequestValidationError: Before anything is sent, if the question is empty or
                longer than ``max_chars``, or an option breaks a rule of the API.
            RuntimeError: If called inside this conversation's own ``ask_stream`` block.
            APIError: If the service refused the call (the history is unchanged).
            APIConnectionError: If no answer came back (the history is unchanged).
        """
        turn = self._checked_question(question)
        given = self._options(options)
        timeout = self._timeout if timeout is None else timeout
        await self._acquire()
        try:
            window = self._window(turn)
            generation = self._generation
            request = ChatRequest(messages=[*_flatten(window), turn], **given)
            response = await self._client._send(request, timeout)
            self._commit(
                generation,
                window,
                turn,
                response.result,
                response.need_clear_history,
                response.ban_round,
            )
        finally:
            self._release()
        return response

    def ask_stream(
        self,
        question: str,
        *,
        timeout: TimeoutLike | None = None,
        **options: Unpack[ChatOptions],
    ) -> ConversationStream:
        """Ask the next question and stream the answer; keep the round at its last chunk.

        Use it as ``async with conv.ask_stream("...") as stream: async for chunk in
        stream``. The question and options are checked now; the history is read and the
        request sent when the block is entered, and the conversation's turn is held until
        the block is left.

        The arguments are those of :meth:`ask`.

        Raises:
            RequestValidationError: At once, if the question is empty or longer than
                ``max_chars``, or an option breaks a rule of the API.
        """
        turn = self._checked_question(question)
        given = self._options(options)
        return ConversationStream(self, turn, given, self._timeout if timeout is None else timeout)

    # -- the machinery ------------------------------------------------------------------

    def _checked_question(self, question: object) -> Message:
        if not isinstance(question, str):
            raise RequestValidationError(
                "question", f"must be a string, not {type(question).__name__}"
            )
        if not question:
            raise RequestValidationError("question", "must not be empty")
        if len(question) > self._max_chars:
            raise RequestValidationError(
                "question",
                f"must be at most {self._max_chars} characters (the conversation's "
                f"max_chars), not {len(question)}",
            )
        return Message("user", question)

    def _options(self, options: ChatOptions) -> ChatOptions:
        """A call's options, checked, over the conversation's defaults."""
        return {**self._defaults, **check_options(options)}

    def _window(self, turn: Message) -> tuple[_Round, ...]:
        """The newest rounds that fit in ``max_chars`` together with ``turn``."""
        rounds = self._rounds
        total = len(turn.content) + _size(rounds)
        start = 0
        while total > self._max_chars:
            asked, answered = rounds[start]
            total -= len(asked.content) + len(answered.content)
            start += 1
        return rounds[start:]

    async def _acquire(self) -> None:
        task = anyio.get_current_task().id
        if self._owner == task:
            msg = (
                "this task already holds the conversation's turn (inside its own ask_stream "
                "block): leave the block before asking again"
            )
            raise RuntimeError(msg)
        await self._lock.acquire()
        self._owner = task

    def _release(self) -> None:
        self._owner = None
        self._lock.release()

    def _commit(
        self,
        generation: int,
        window: tuple[_Round, ...],
        turn: Message,
        answer: str,
        flagged: bool,
        ban_round: int | None,
    ) -> None:
        """Keep what a fully arrived answer leaves: no await here, so nothing interleaves."""
        if generation != self._generation:
            return  # clear() was called while the answer was on its way
        self._last_flag = None
        if not flagged:
            # The API refuses an empty message, so an empty answer cannot be history.
            self._rounds = (*window, (turn, Message("assistant", answer))) if answer else window
            return
        if ban_round == _CURRENT_QUESTION or ban_round == len(window) + 1:
            dropped: int | None = None  # only the question itself, never kept anyway
            cleared = self._clear_on_flag
        elif ban_round is not None and 1 <= ban_round <= len(window):
            dropped = ban_round - 1
            cleared = self._clear_on_flag
        else:
            dropped, cleared = None, True  # no round sent has that number: drop them all
        kept: tuple[_Round, ...]
        removed: tuple[_Round, ...]
        if cleared:
            kept, removed = (), window
        elif dropped is None:
            kept, removed = window, ()
        else:
            kept = (*window[:dropped], *window[dropped + 1 :])
            removed = (window[dropped],)
        self._rounds = kept
        self._last_flag = ConversationFlag(
            ban_round=ban_round, removed=tuple(_flatten(removed)), cleared=cleared
        )


class ConversationStream:
    """One streamed answer of a :class:`Conversation`; made by :meth:`Conversation.ask_stream`.

    An async context manager, and inside it an async iterator of
    :class:`~mpt_async.ChatChunk`, like :class:`~mpt_async.ChatStream`. The round is kept
    when the chunk with ``is_end`` is handed over; leaving the block earlier (``break``, an
    error, a cancellation) or a broken stream keeps nothing.
    """

    def __init__(
        self,
        conversation: Conversation,
        turn: Message,
        options: ChatOptions,
        timeout: TimeoutLike | None,
    ) -> None:
        self._conversation = conversation
        self._turn = turn
        self._options = options
        self._timeout = timeout
        self._stream: ChatStream | None = None
        self._entered = False
        self._held = False
        self._window: tuple[_Round, ...] = ()
        self._generation = 0
        self._flag: ChatChunk | None = None

    def __repr__(self) -> str:
        return f"<ConversationStream {self._stream!r}>"

    async def __aenter__(self) -> Self:
        if self._entered:
            msg = "a ConversationStream can be entered only once"
            raise RuntimeError(msg)
        self._entered = True
        conversation = self._conversation
        await conversation._acquire()
        self._held = True
        try:
            self._window = conversation._window(self._turn)
            self._generation = conversation._generation
            messages = [*_flatten(self._window), self._turn]
            request = ChatRequest(messages=messages, stream=True, **self._options)
            stream = conversation._client._open(request, self._timeout)
            self._stream = stream
            await stream.__aenter__()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatChunk:
        stream = self._stream
        if stream is None:
            msg = "use ConversationStream as 'async with conv.ask_stream(...) as stream'"
            raise RuntimeError(msg)
        chunk = await stream.__anext__()
        if chunk.need_clear_history and self._flag is None:
            self._flag = chunk
        if chunk.is_end and self._held:
            flag = self._flag
            self._conversation._commit(
                self._generation,
                self._window,
                self._turn,
                stream.text,
                flag is not None,
                flag.ban_round if flag is not None else None,
            )
        return chunk

    async def aclose(self) -> None:
        """Close the stream and give the conversation's turn back; safe to call twice."""
        try:
            if self._stream is not None:
                await self._stream.aclose()
        finally:
            if self._held:
                self._held = False
                self._conversation._release()

    @property
    def text(self) -> str:
        """The answer's text received so far."""
        return self._stream.text if self._stream is not None else ""

    @property
    def finished(self) -> bool:
        """Whether the last chunk (``is_end``) has arrived (and the round was kept)."""
        return self._stream is not None and self._stream.finished

    @property
    def usage(self) -> Usage | None:
        """The token counts of the latest chunk (the totals once finished)."""
        return self._stream.usage if self._stream is not None else None

    async def get_final_response(self) -> ChatResponse:
        """Read the rest of the stream (keeping the round) and return the whole answer.

        Raises:
            StreamError: If the stream breaks, or was closed before its end.
        """
        async for _ in self:
            pass
        assert self._stream is not None
        return await self._stream.get_final_response()
