"""Many independent chats at once: ``async with client.batch(requests) as results``.

A :class:`Batch` runs a fixed number of worker tasks (``concurrency``) in an anyio task
group. Each worker pulls the next input, checks it, asks for a whole answer, and hands a
:class:`BatchResult` to the caller, so at most ``concurrency`` calls are in flight and the
inputs are read only as fast as they are answered. Leaving the ``async with`` block (a
``break``, an error, a cancellation) cancels the calls still in flight before it returns.
"""

from __future__ import annotations

import inspect
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mpt_async._exceptions import ConfigurationError, MPTError, RequestValidationError
from mpt_async._models import ChatRequest, ChatResponse, MessageLike
from mpt_async._options import ChatOptions, check_options
from mpt_async._priority import Priority, check_priority
from mpt_async._validate import check_int, refuse

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from mpt_async._client import Client
    from mpt_async._timeouts import Timeouts


__all__ = [
    "DEFAULT_CONCURRENCY",
    "REQUEST_FIELDS",
    "Batch",
    "BatchFailure",
    "BatchInput",
    "BatchResult",
    "BatchSuccess",
    "ProgressHook",
    "as_chat_request",
    "run_batch",
]

#: How many calls a batch keeps in flight unless told otherwise.
DEFAULT_CONCURRENCY = 8
#: The keys a mapping given as one batch input may hold.
REQUEST_FIELDS = tuple(f.name for f in attrs.fields(ChatRequest) if f.name != "stream")

#: One input of a batch: a prompt string (one user message), a list of messages, a
#: :class:`ChatRequest`, or a mapping with ``messages`` and optional sampling fields.
BatchInput = str | ChatRequest | Mapping[str, Any] | Iterable[MessageLike]
#: Called as ``hook(done, failed, total)``; ``total`` is ``None`` when unknown.
ProgressHook = Callable[[int, int, int | None], object]


def as_chat_request(item: object, defaults: ChatOptions | None = None) -> ChatRequest:
    """Turn one batch input into a checked :class:`ChatRequest`.

    Args:
        item: A prompt string, a list of messages, a :class:`ChatRequest`, or a mapping
            with ``messages`` and any of the sampling options (:class:`ChatOptions`).
        defaults: Options for an input that is not a :class:`ChatRequest`; a mapping's
            own fields replace them.

    Raises:
        RequestValidationError: The input has another shape or breaks a rule of the API.
    """
    if isinstance(item, ChatRequest):
        return item
    defaults = defaults or {}
    if isinstance(item, str):
        return ChatRequest(messages=[{"role": "user", "content": item}], **defaults)
    if isinstance(item, Mapping):
        unknown = sorted(str(key) for key in item if key not in REQUEST_FIELDS)
        if unknown:
            raise RequestValidationError(
                unknown[0], f"unknown field; a request may hold {', '.join(REQUEST_FIELDS)}"
            )
        if "messages" not in item:
            raise RequestValidationError("messages", "is required")
        return ChatRequest(**{**defaults, **item})
    if isinstance(item, Iterable) and not isinstance(item, (bytes, bytearray)):
        return ChatRequest(messages=item, **defaults)
    raise RequestValidationError(
        "request",
        "must be a prompt string, a list of messages, a ChatRequest or a mapping with "
        f"'messages', not {type(item).__name__}",
    )


@runtime_checkable
class _BatchClient(Protocol):
    """What a batch uses of its :class:`~mpt_async.Client`, checked by shape.

    The client's module imports this one (for ``client.batch()``), so this one does not
    import it.
    """

    @property
    def timeout(self) -> Timeouts: ...

    def with_options(self, **options: Any) -> Client: ...


@attrs.frozen
class BatchSuccess:
    """An input of a batch that was answered; ``ok`` is ``True``.

    Attributes:
        index: The input's position, from 0.
        request: The input, as given.
        response: The answer.
        error: Always ``None``.
        ok: Always ``True``.
    """

    index: int
    request: BatchInput = attrs.field(hash=False)
    response: ChatResponse
    error: None = attrs.field(default=None, init=False)
    ok: Literal[True] = attrs.field(default=True, init=False, repr=False)


@attrs.frozen
class BatchFailure:
    """An input of a batch that failed; ``ok`` is ``False``.

    Attributes:
        index: The input's position, from 0.
        request: The input, as given.
        error: Why it failed (any :class:`MPTError`, a ``RequestValidationError`` for an
            input that breaks a rule).
        response: Always ``None``.
        ok: Always ``False``.
    """

    index: int
    request: BatchInput = attrs.field(hash=False)
    error: MPTError
    response: None = attrs.field(default=None, init=False)
    ok: Literal[False] = attrs.field(default=False, init=False, repr=False)


#: The outcome of one input of a batch: a :class:`BatchSuccess` with its ``response``, or a
#: :class:`BatchFailure` with its ``error``. ``if item.ok:`` narrows it for mypy;
#: ``if item.error is None:`` (or ``item.ok is True``) for mypy and pyright alike.
BatchResult = BatchSuccess | BatchFailure


@attrs.frozen
class _Failure:
    """Something other than an API failure stopped a worker; the caller gets it raised."""

    error: Exception


class _Source:
    """The inputs, pulled one at a time by whichever worker is free, numbered in order."""

    def __init__(self, requests: Iterable[BatchInput] | AsyncIterable[BatchInput]) -> None:
        self._sync: Iterator[BatchInput] | None = None
        self._async: AsyncIterator[BatchInput] | None = None
        if isinstance(requests, AsyncIterable):
            self._async = aiter(requests)
        else:
            self._sync = iter(requests)
        # An async iterator must not be advanced by two tasks at once.
        self._lock = anyio.Lock()
        self._count = 0
        self._exhausted = False

    async def pull(self) -> tuple[int, BatchInput] | None:
        """The next input and its index, or ``None`` once there are no more."""
        async with self._lock:
            if self._exhausted:
                return None
            try:
                if self._async is not None:
                    item = await self._async.__anext__()
                else:
                    assert self._sync is not None
                    item = next(self._sync)
            except (StopIteration, StopAsyncIteration):
                self._exhausted = True
                return None
            except BaseException:
                self._exhausted = True
                raise
            index, self._count = self._count, self._count + 1
            return index, item

    async def aclose(self) -> None:
        """Close an async generator given as input, instead of leaving it to the GC."""
        aclose = getattr(self._async, "aclose", None)
        if aclose is not None:
            await aclose()


def _check_arguments(
    requests: object, concurrency: object, on_progress: object, total: object
) -> None:
    if isinstance(requests, (str, bytes, bytearray, Mapping)) or not isinstance(
        requests, (Iterable, AsyncIterable)
    ):
        raise RequestValidationError(
            "requests", f"must be an iterable of requests, not {type(requests).__name__}"
        )
    check_int(concurrency, "concurrency", low=1)
    if on_progress is not None and not callable(on_progress):
        msg = f"on_progress must be callable, not {type(on_progress).__name__}"
        raise ConfigurationError(msg)
    if inspect.iscoroutinefunction(on_progress):
        msg = "on_progress must be a plain function: it is called, never awaited"
        raise ConfigurationError(msg)
    if total is not None:
        check_int(total, "total", low=0)


class Batch:
    """Independent chats run side by side; an async context manager, then an iterator.

    Use it as ``async with client.batch(requests) as results: async for item in results``.
    Results come as they complete (``item.index`` is the input's position), each with its
    answer or its error: a failed or invalid input does not stop the others. A call a rate
    quota refuses waits for capacity, with no bound (``Timeouts.quota`` is ``None`` here):
    it is never an error. Inputs are
    read lazily, and at most ``concurrency`` calls are in flight. Leaving the block early
    cancels the calls in flight (and closes an async generator given as input).

    Args:
        client: The client that makes the calls (whole answers, never streams; the
            ``stream`` field of a :class:`ChatRequest` is ignored).
        requests: An iterable or async iterable of inputs, see :data:`BatchInput`. A plain
            iterable is advanced on the event loop, so it should not block.
        concurrency: The most calls in flight at once. Keep it within the client's
            ``max_connections``, or calls wait for a connection (``Timeouts.pool``).
        on_progress: Called as ``on_progress(done, failed, total)`` before each result is
            handed to you; an exception it raises ends the batch.
        total: The number of inputs, for ``on_progress``; by default ``len(requests)``
            when it has one, else ``None``.
        priority: Its calls' place under the quotas: ``"batch"`` (the default) waits while
            any ``"interactive"`` call waits, and uses all the capacity they leave.
        **options: Sampling options (:class:`ChatOptions`) for every input but a
            :class:`ChatRequest`; the fields of an input given as a mapping replace them.

    Raises:
        RequestValidationError: ``requests`` is not an iterable of inputs, or an option
            breaks a rule of the API.
        ConfigurationError: A bad ``client``, ``concurrency``, ``on_progress``, ``total``
            or ``priority``.
    """

    def __init__(
        self,
        client: Client,
        requests: Iterable[BatchInput] | AsyncIterable[BatchInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_progress: ProgressHook | None = None,
        total: int | None = None,
        priority: Priority = "batch",
        **options: Unpack[ChatOptions],
    ) -> None:
        if not isinstance(client, _BatchClient):
            refuse("client", f"must be a mpt_async.Client, not {type(client).__name__}")
        _check_arguments(requests, concurrency, on_progress, total)
        # A batch waits for quota capacity as long as it takes: a refusal is never a result.
        self._client = client.with_options(
            timeout=attrs.evolve(client.timeout, quota=None), priority=check_priority(priority)
        )
        self._options = check_options(options)
        if total is None and isinstance(requests, Sized):
            total = len(requests)
        self._requests = requests
        self._concurrency = concurrency
        self._on_progress = on_progress
        self._total = total
        self._done = 0
        self._failed = 0
        self._state = "new"
        self._source: _Source | None = None
        self._task_group: TaskGroup | None = None
        self._senders: list[MemoryObjectSendStream[BatchResult | _Failure]] = []
        self._receiver: MemoryObjectReceiveStream[BatchResult | _Failure] | None = None

    def __repr__(self) -> str:
        total = "?" if self._total is None else self._total
        return (
            f"<Batch {self._state}, {self._done}/{total} done, {self._failed} failed, "
            f"concurrency={self._concurrency}>"
        )

    @property
    def concurrency(self) -> int:
        """The most calls in flight at once."""
        return self._concurrency

    @property
    def done(self) -> int:
        """How many results have been handed over (answers and errors)."""
        return self._done

    @property
    def failed(self) -> int:
        """How many of those were errors."""
        return self._failed

    @property
    def total(self) -> int | None:
        """The number of inputs, when known."""
        return self._total

    async def __aenter__(self) -> Self:
        if self._state != "new":
            msg = "a batch runs once; make a new one"
            raise RuntimeError(msg)
        self._state = "running"
        self._source = _Source(self._requests)
        send, self._receiver = anyio.create_memory_object_stream[BatchResult | _Failure](
            self._concurrency
        )
        self._senders = [send.clone() for _ in range(self._concurrency)]
        send.close()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        for sender in self._senders:
            task_group.start_soon(self._work, self._source, sender)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        self._state = "finished"
        if task_group is None:
            return
        try:
            # Whatever ended the block, the calls still in flight are not wanted any more.
            task_group.cancel_scope.cancel()
            # The workers hand every failure to the caller, so the group ends clean; the
            # block's own exception (if any) goes on when this method returns.
            await task_group.__aexit__(None, None, None)
        finally:
            for sender in self._senders:
                sender.close()
            if self._receiver is not None:
                self._receiver.close()
        if self._source is not None:
            await self._source.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BatchResult:
        if self._state == "new" or self._receiver is None:
            msg = "run a batch inside its block: async with client.batch(...) as results"
            raise RuntimeError(msg)
        try:
            item = await self._receiver.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        except anyio.ClosedResourceError:
            msg = "the batch is over: iterate inside its async with block"
            raise RuntimeError(msg) from None
        if isinstance(item, _Failure):
            raise item.error
        self._done += 1
        if not item.ok:
            self._failed += 1
        if self._on_progress is not None:
            self._on_progress(self._done, self._failed, self._total)
        return item

    async def _work(
        self, source: _Source, send: MemoryObjectSendStream[BatchResult | _Failure]
    ) -> None:
        with send:
            while True:
                try:
                    pulled = await source.pull()
                    if pulled is None:
                        return
                    result = await self._run_one(*pulled)
                except Exception as exc:  # noqa: BLE001 - raised to the caller, not lost
                    await send.send(_Failure(exc))
                    return
                await send.send(result)

    async def _run_one(self, index: int, item: BatchInput) -> BatchResult:
        try:
            response = await self._client._send(as_chat_request(item, self._options), None)
        except MPTError as exc:
            return BatchFailure(index, item, error=exc)
        return BatchSuccess(index, item, response=response)


def run_batch(
    client: Client,
    requests: Iterable[BatchInput] | AsyncIterable[BatchInput],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_progress: ProgressHook | None = None,
    total: int | None = None,
    priority: Priority = "batch",
    **options: Unpack[ChatOptions],
) -> Batch:
    """Run independent chats side by side; the same as ``client.batch(...)``.

    Use it as ``async with run_batch(client, requests) as results: async for item in
    results``; see :class:`Batch` for the arguments.

    Raises:
        RequestValidationError: ``requests`` is not an iterable of inputs, or an option
            breaks a rule of the API.
        ConfigurationError: A bad ``client``, ``concurrency``, ``on_progress`` or ``total``.
    """
    return Batch(
        client,
        requests,
        concurrency=concurrency,
        on_progress=on_progress,
        total=total,
        priority=priority,
        **options,
    )
