"""OpenTelemetry traces and metrics of every call, after the GenAI semantic conventions.

Nothing here imports OpenTelemetry until the first call is observed, and nothing at all
happens when ``opentelemetry-api`` is not installed (:func:`observe` returns ``None``,
and the call path skips every hook). With the API installed, calls go through the global
tracer and meter providers, which do nothing until the application configures the SDK.

One :class:`CallObserver` follows one call: the send path creates it, the request loop
tells it about retries, token fetches and rate-limit waits, a stream tells it about its
chunks, and whoever sees the end tells it how the call ended. It ends its span once;
later calls of its methods do nothing.

What is recorded:

- one ``CLIENT`` span per call, named ``chat {endpoint}``, with ``gen_ai.operation.name``,
  ``gen_ai.provider.name`` (``baidu.qianfan``: Baidu is not among the conventions'
  well-known values), ``gen_ai.request.*``, ``gen_ai.response.id``, ``gen_ai.usage.*``,
  ``server.address``/``server.port`` and, on failure, ``error.type`` (the class name of
  the mpt_async error, ``cancelled``, or the qualified name of any other exception);
- events ``mpt_async.retry``, ``mpt_async.quota_refused`` (with the quota's kind and the
  rate learned since) and ``mpt_async.token_refused``, and child spans
  ``mpt_async.token_fetch`` and ``mpt_async.rate_limit_wait`` (only when the call really
  waited);
- the histograms ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and,
  for streams, ``gen_ai.client.operation.time_to_first_chunk`` and
  ``gen_ai.client.operation.time_per_output_chunk``;
- the gauge ``mpt_async.quota.learned_rate``: the calls per second each client with
  telemetry on holds itself to (learned, or the ceiling it was given), read when the
  application's metric reader collects, so it costs nothing per call.

Message content is recorded (as JSON strings in ``gen_ai.input.messages`` and
``gen_ai.output.messages``) only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
asks for it, each at most :data:`CONTENT_LIMIT` bytes. Access tokens, signatures and URLs
with their query never are (``gen_ai.response.id`` is redacted: a server may echo the URL).

The call's span is the current span while the call runs (:meth:`CallObserver.current`),
and the token fetch's while it runs, so HTTP spans of an application's own instrumentation
(httpx's, say) nest under them.

Telemetry never fails a call: whatever the OpenTelemetry SDK raises (a span processor, a
provider, an instrument) is logged once, as a warning, and otherwise ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from mpt_async._logging import logger
from mpt_async._redact import MASK, redact

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "CAPTURE_CONTENT_VAR",
    "CONTENT_LIMIT",
    "PROVIDER",
    "CallObserver",
    "Server",
    "observe",
    "server_of",
    "use_providers",
]

T = TypeVar("T")

#: The value of ``gen_ai.provider.name`` (a custom one: Baidu is not a well-known value).
PROVIDER = "baidu.qianfan"
#: The conventions' opt-in for recording message content.
CAPTURE_CONTENT_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = frozenset({"true", "1", "yes", "span_only", "span_and_event"})
#: The most recorded of the content of one side of a call (its input messages, or its
#: answer), as UTF-8 JSON: past it, message contents are cut.
CONTENT_LIMIT = 1 << 20
#: The longest ``gen_ai.response.id`` recorded (the service's ids are a few dozen).
_ID_LIMIT = 256
#: Shorter secrets are not masked in content (they would mask ordinary words).
_MIN_SECRET = 8
_SCOPE = "mpt_async"
#: The conventions' advice for the seconds histograms, and for the token one.
_SECONDS_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
#: The histograms of the conventions: name, unit, description, advised buckets.
_HISTOGRAMS: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", _SECONDS_BUCKETS),
    ("gen_ai.client.token.usage", "{token}", "Number of tokens used.", _TOKEN_BUCKETS),
    (
        "gen_ai.client.operation.time_to_first_chunk",
        "s",
        "Time to receive the first chunk of a stream.",
        _SECONDS_BUCKETS,
    ),
    (
        "gen_ai.client.operation.time_per_output_chunk",
        "s",
        "Time between two chunks of a stream.",
        _SECONDS_BUCKETS,
    ),
)
#: A rate-limit wait shorter than this is not worth a span.
_MIN_WAIT = 0.001
#: Request options recorded on the span, and the attribute each goes to.
_REQUEST_ATTRIBUTES = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("stop", "gen_ai.request.stop_sequences"),
)

Server = tuple[str, int]


class _Contained:
    """Swallows an ``Exception`` of the OpenTelemetry SDK (logging the first one).

    Cancellation and other ``BaseException`` s pass. One instance serves every use (it
    holds no state): ``with _CONTAINED: ...``.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc_value is None or not isinstance(exc_value, Exception):
            return False
        _report(exc_value)
        return True


_CONTAINED = _Contained()
_reported = False


def _report(error: Exception) -> None:
    """Log the first telemetry error of the process, by its kind only.

    Its text could hold anything an attribute held.
    """
    global _reported  # one warning per process
    if not _reported:
        _reported = True
        logger.warning(
            "OpenTelemetry raised %s; calls go on, and its errors are ignored from now on",
            type(error).__qualname__,
        )


def server_of(base_url: str) -> Server:
    """``server.address`` and ``server.port`` of a base URL (never its path or query)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


class _Request(Protocol):
    """What is recorded of a request (a :class:`ChatRequest`)."""

    @property
    def stream(self) -> bool: ...
    @property
    def messages(self) -> Iterable[Any]: ...
    @property
    def temperature(self) -> float | None: ...
    @property
    def top_p(self) -> float | None: ...
    @property
    def top_k(self) -> int | None: ...
    @property
    def stop(self) -> Iterable[str] | None: ...


class _Reply(Protocol):
    """What a finished call tells: a :class:`ChatResponse` or a stream's last chunk."""

    @property
    def id(self) -> str: ...
    @property
    def is_truncated(self) -> bool: ...
    @property
    def need_clear_history(self) -> bool: ...
    @property
    def usage(self) -> Any: ...


class _Instruments:
    """The tracer and histograms every observer records to (one set per process)."""

    __slots__ = ("chunk_time", "client", "duration", "first_chunk", "idle", "tokens", "tracer")

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        from opentelemetry.trace import SpanKind

        from mpt_async._version import __version__

        #: Tells when neither global provider has been configured (nothing would be kept).
        self.idle = idle
        self.client = SpanKind.CLIENT
        self.tracer: Tracer = tracer_provider.get_tracer(_SCOPE, __version__)
        meter = meter_provider.get_meter(_SCOPE, __version__)
        self.duration, self.tokens, self.first_chunk, self.chunk_time = (
            meter.create_histogram(name, unit, words, explicit_bucket_boundaries_advisory=buckets)
            for name, unit, words, buckets in _HISTOGRAMS
        )
        with _CONTAINED:  # a meter without this gauge still records the histograms
            meter.create_observable_gauge(
                "mpt_async.quota.learned_rate",
                callbacks=[_learned_rates],
                unit="{request}/s",
                description="The calls per second the client holds itself to, learned or given.",
            )


_UNSET: Any = object()
_instruments: _Instruments | None = _UNSET


class _Learns(Protocol):
    """What the learned-rate gauge reads: a limiter."""

    def learned(self) -> Any: ...


#: The limiters of the clients with telemetry on, and what their gauge points carry.
_WATCHED: weakref.WeakKeyDictionary[_Learns, dict[str, str | int]] = weakref.WeakKeyDictionary()
#: The gauge is read in the metric reader's thread while clients are made in others: an
#: insertion during the read's copy would fail it ("dictionary changed size").
_WATCHING = threading.Lock()


def watch_quota(limiter: _Learns, endpoint: str, server: Server) -> None:
    """Have the ``mpt_async.quota.learned_rate`` gauge report ``limiter`` while it lives."""
    address, port = server
    attributes: dict[str, str | int] = {
        "gen_ai.request.model": endpoint,
        "server.address": address,
        "server.port": port,
    }
    with _WATCHING:
        _WATCHED[limiter] = attributes


def _learned_rates(_options: Any) -> Iterable[Any]:
    """The gauge's points, one per watched limiter that holds calls to a rate."""
    from opentelemetry.metrics import Observation

    points = []
    with _WATCHING:  # (collected limiters leave only after the copy: the dict guards that)
        watched = list(_WATCHED.items())
    for limiter, attributes in watched:
        with _CONTAINED:
            qps = limiter.learned().qps
            if qps is not None:
                points.append(Observation(qps, attributes))
    return points


def _global_instruments() -> _Instruments | None:
    """The instruments over the global providers, or ``None`` without the API."""
    global _instruments  # resolved once per process
    if _instruments is _UNSET:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            _instruments = None
        else:
            _instruments = _Instruments(
                trace.get_tracer_provider(), metrics.get_meter_provider(), _idle_check()
            )
    return _instruments


def _idle_check() -> Callable[[], bool] | None:
    """A cheap test of "no global provider set yet", when this API version allows one.

    Until the application sets a provider, the global ones are proxies that drop
    everything: calls then skip telemetry entirely, which makes it free. The public
    ``get_*_provider()`` functions look the environment up on each call (microseconds), so
    this reads the API's own globals instead; an API without them is always observed.
    """
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics

    if not hasattr(trace, "_TRACER_PROVIDER") or not hasattr(metrics, "_METER_PROVIDER"):
        return None  # pragma: no cover - another API version: always observe

    def idle() -> bool:
        return trace._TRACER_PROVIDER is None and metrics._METER_PROVIDER is None

    return idle


@contextlib.contextmanager
def use_providers(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    """Record to these providers instead of the global ones, within the block (for tests).

    The global providers can be set only once per process; this private hook lets the
    test suite give each test its own.
    """
    global _instruments  # the one switch for tests
    previous, _instruments = _instruments, _Instruments(tracer_provider, meter_provider)
    try:
        yield
    finally:
        _instruments = previous


def observe(endpoint: str, server: Server, request: _Request) -> CallObserver | None:
    """Start following one call; ``None`` without OpenTelemetry's API or any provider set.

    Args:
        endpoint: The API name called (``gen_ai.request.model``).
        server: ``(address, port)`` from :func:`server_of`.
        request: The request sent: its ``stream`` flag, its sampling options (those set),
            and its messages (recorded only with content capture on).
    """
    with _CONTAINED:
        instruments = _instruments if _instruments is not _UNSET else _global_instruments()
        if instruments is None or (instruments.idle is not None and instruments.idle()):
            return None
        return CallObserver(instruments, endpoint, server, request)
    return None  # the SDK raised: this call goes unobserved


def _capture_content() -> bool:
    return os.environ.get(CAPTURE_CONTENT_VAR, "").strip().lower() in _CAPTURE_ON


def _error_type(error: BaseException) -> str:
    """``error.type``: the mpt_async class, ``cancelled``, or the exception's full name."""
    import anyio

    from mpt_async._exceptions import MPTError

    cls = type(error)
    if isinstance(error, MPTError):
        return cls.__name__
    try:
        if isinstance(error, anyio.get_cancelled_exc_class()):
            return "cancelled"
    except Exception:  # noqa: BLE001, S110 - outside an event loop: not a cancellation
        pass
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(error: BaseException, kind: str) -> str:
    """The span status's description: an mpt_async error's words, else only its kind.

    mpt_async's errors never hold a secret; another exception's text could hold anything.
    """
    from mpt_async._exceptions import MPTError

    return str(error) if isinstance(error, MPTError) else kind


def _input_messages(messages: Iterable[Any]) -> str:
    return _bounded(
        [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in messages]
    )


def _bounded(messages: list[dict[str, Any]]) -> str:
    """``messages`` as JSON of at most :data:`CONTENT_LIMIT` bytes (UTF-8).

    Past the limit, contents are cut: the latest message keeps the most (it holds the
    question, or the answer), each is cut at its end, and earlier ones may end up empty.
    """
    text = json.dumps(messages, ensure_ascii=False)
    if len(text) <= CONTENT_LIMIT // 4 or len(text.encode()) <= CONTENT_LIMIT:
        return text
    parts = [message["parts"][0] for message in messages]
    contents = [part["content"] for part in parts]
    for part in parts:
        part["content"] = ""
    budget = CONTENT_LIMIT - len(json.dumps(messages, ensure_ascii=False).encode())
    for part, content in zip(reversed(parts), reversed(contents), strict=True):
        part["content"] = kept = _cut(content, max(budget, 0))
        budget -= _json_size(kept)
    return json.dumps(messages, ensure_ascii=False)


def _cut(content: str, budget: int) -> str:
    """The longest start of ``content`` whose JSON string body is at most ``budget`` bytes."""
    kept = content.encode()[:budget].decode(errors="ignore")
    while (size := _json_size(kept)) > budget:  # quotes and control characters are escaped
        kept = kept[: len(kept) * budget // size]
    return kept


def _json_size(content: str) -> int:
    return len(json.dumps(content, ensure_ascii=False).encode()) - 2


def _response_id(reply_id: str, secrets: tuple[str, ...]) -> str:
    """The reply's id as recorded: never a secret, whatever the server echoed into it."""
    return redact(redact(reply_id, secrets)[:_ID_LIMIT])


def _finish_reason(reply: _Reply) -> str:
    if reply.need_clear_history:
        return "content_filter"
    return "length" if reply.is_truncated else "stop"


class CallObserver:
    """Records one call: its span, its events, and its measurements.

    Created by :func:`observe`; every method is cheap and never raises.
    """

    __slots__ = (
        "_attributes",
        "_chunks",
        "_instruments",
        "_last",
        "_secrets",
        "_span",
        "_start",
    )

    def __init__(
        self,
        instruments: _Instruments,
        endpoint: str,
        server: Server,
        request: _Request,
    ) -> None:
        self._instruments = instruments
        #: The metrics' attributes (the span starts with these too).
        self._attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": endpoint,
            "server.address": server[0],
            "server.port": server[1],
        }
        attributes = self._request_attributes(request)
        self._span: Span | None = instruments.tracer.start_span(
            f"chat {endpoint}", kind=instruments.client, attributes=attributes
        )
        if self._span.is_recording() and _capture_content():
            with _CONTAINED:
                messages = _input_messages(request.messages)
                self._span.set_attribute("gen_ai.input.messages", messages)
        self._chunks = 0
        self._start = self._last = time.perf_counter()
        #: What the latest attempt carried (its token...): masked wherever it shows.
        self._secrets: tuple[str, ...] = ()

    def _request_attributes(self, request: _Request) -> Any:
        attributes = dict(self._attributes)
        if request.stream:
            attributes["gen_ai.request.stream"] = True
        for name, key in _REQUEST_ATTRIBUTES:
            value = getattr(request, name)
            if value is not None:
                attributes[key] = list(value) if name == "stop" else value
        return attributes

    def __repr__(self) -> str:
        state = "open" if self._span is not None else "ended"
        return f"<CallObserver {state}, {self._chunks} chunks>"

    # -- what happens during the call -------------------------------------------------

    def current(self) -> contextlib.AbstractContextManager[None]:
        """Make the call's span the current one within the block (one task's context).

        The request loop runs each call inside it, so the spans of an application's HTTP
        instrumentation nest under the call's. A stream's span is current while the stream
        opens, not while its reader iterates (that is the reader's own code).
        """
        return _Current(self._span)

    def sending(self, secrets: tuple[str, ...]) -> None:
        """An attempt goes out carrying ``secrets`` (its access token, its signature).

        A server may echo them back (into the reply's id, say): they are masked in what
        is recorded of the reply.
        """
        self._secrets = secrets

    def retry(self, attempt: int, delay: float, error: BaseException) -> None:
        """The request loop will try again (``attempt``: 1 for the first retry)."""
        with _CONTAINED:
            self._retry(attempt, delay, error)

    def _retry(self, attempt: int, delay: float, error: BaseException) -> None:
        span = self._span
        if span is not None and span.is_recording():
            span.add_event(
                "mpt_async.retry",
                {
                    "mpt_async.retry.attempt": attempt,
                    "mpt_async.retry.delay": delay,
                    "error.type": _error_type(error),
                },
            )

    def quota_refused(self, error: BaseException, quota: str, rate: float) -> None:
        """A quota refused the call: it waits for capacity (``rate``: learned calls/s)."""
        span = self._span
        if span is not None and span.is_recording():
            span.add_event(
                "mpt_async.quota_refused",
                {
                    "error.type": _error_type(error),
                    "mpt_async.quota.kind": quota,
                    "mpt_async.quota.learned_rate": rate,
                },
            )

    def token_refused(self, error: BaseException) -> None:
        """The service refused the access token: it is replaced and the call replayed."""
        span = self._span
        with _CONTAINED:
            if span is not None and span.is_recording():
                span.add_event("mpt_async.token_refused", {"error.type": _error_type(error)})

    async def token_fetch(self, fetching: Awaitable[T]) -> T:
        """Await a token fetch, as a child span, current while it runs."""
        child = None
        with _CONTAINED:
            child = self._start_child("mpt_async.token_fetch", time.time_ns())
        error: BaseException | None = None
        try:
            with _Current(child):
                return await fetching
        except BaseException as exc:
            error = exc
            raise
        finally:
            if child is not None:
                with _CONTAINED:
                    self._end_child(child, error)

    async def rate_limit_wait(self, waiting: Awaitable[T], priority: str = "interactive") -> T:
        """Await a place under the rate limits; a real wait becomes a child span.

        The call's span and the wait's carry its ``mpt_async.priority``.
        """
        span = self._span
        if span is not None and span.is_recording():
            with _CONTAINED:
                span.set_attribute("mpt_async.priority", priority)
        started, begun = time.time_ns(), time.perf_counter()
        error: BaseException | None = None
        try:
            return await waiting
        except BaseException as exc:
            error = exc
            raise
        finally:
            if time.perf_counter() - begun >= _MIN_WAIT or error is not None:
                with _CONTAINED:
                    child = self._start_child("mpt_async.rate_limit_wait", started)
                    if child is not None:
                        child.set_attribute("mpt_async.priority", priority)
                        self._end_child(child, error)

    def _start_child(self, name: str, started: int) -> Span | None:
        span = self._span
        if span is None or not span.is_recording():
            return None
        from opentelemetry import trace

        return self._instruments.tracer.start_span(
            name, context=trace.set_span_in_context(span), start_time=started
        )

    @staticmethod
    def _end_child(child: Span, error: BaseException | None) -> None:
        try:
            if error is not None:
                from opentelemetry import trace

                child.set_attribute("error.type", _error_type(error))
                child.set_status(trace.StatusCode.ERROR)
        finally:
            child.end()

    def first_chunk(self) -> None:
        """A stream's first chunk has arrived."""
        span = self._span
        if span is None:
            return
        now = time.perf_counter()
        elapsed = now - self._start
        self._last = now
        self._chunks = 1
        with _CONTAINED:
            self._instruments.first_chunk.record(elapsed, self._attributes)
            span.set_attribute("gen_ai.response.time_to_first_chunk", elapsed)

    def chunk(self) -> None:
        """A later chunk of a stream has arrived."""
        now = time.perf_counter()
        last, self._last = self._last, now
        self._chunks += 1
        with _CONTAINED:
            self._instruments.chunk_time.record(now - last, self._attributes)

    # -- how the call ends ------------------------------------------------------------

    def succeeded(self, reply: _Reply, text: str) -> None:
        """The call ended with this answer (for a stream: its last chunk, and all the text)."""
        span = self._end()
        if span is None:
            return
        with _CONTAINED:
            try:
                self._succeeded(span, reply, text)
            finally:
                span.end()

    def _succeeded(self, span: Span, reply: _Reply, text: str) -> None:
        usage = reply.usage
        instruments, attributes = self._instruments, self._attributes
        instruments.tokens.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
        instruments.tokens.record(
            usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"}
        )
        if span.is_recording():
            reason = _finish_reason(reply)
            span.set_attributes(
                {
                    "gen_ai.response.id": _response_id(reply.id, self._secrets),
                    "gen_ai.response.finish_reasons": [reason],
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                }
            )
            self._output(span, text, reason)

    def _output(self, span: Span, text: str, reason: str) -> None:
        if self._chunks:
            span.set_attribute("mpt_async.stream.chunks", self._chunks)
        if _capture_content():
            for secret in self._secrets:  # the content as it is, but for an echoed secret
                if len(secret) >= _MIN_SECRET and secret in text:
                    text = text.replace(secret, MASK)
            message = {
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
                "finish_reason": reason,
            }
            span.set_attribute("gen_ai.output.messages", _bounded([message]))

    def failed(self, error: BaseException) -> None:
        """The call ended with ``error`` (a cancellation included)."""
        kind = _error_type(error)
        span = self._end(kind)
        if span is None:
            return
        with _CONTAINED:
            try:
                if span.is_recording():
                    from opentelemetry.trace import StatusCode

                    span.set_attribute("error.type", kind)
                    if self._chunks:
                        span.set_attribute("mpt_async.stream.chunks", self._chunks)
                    span.set_status(StatusCode.ERROR, _describe(error, kind))
            finally:
                span.end()

    def closed_early(self) -> None:
        """A stream was closed by its reader before its last chunk (not an error)."""
        span = self._end()
        if span is None:
            return
        with _CONTAINED:
            try:
                if span.is_recording():
                    span.set_attributes(
                        {
                            "mpt_async.stream.chunks": self._chunks,
                            "mpt_async.stream.closed_early": True,
                        }
                    )
            finally:
                span.end()

    def left(self, error: BaseException | None) -> None:
        """The reader left a stream's block, because of ``error`` if not ``None``.

        A cancellation ends the call as failed; anything else (``break``, an error of the
        reader's own) as closed early. Nothing happens if the stream has ended already.
        """
        if self._span is None:
            return
        if error is not None and _error_type(error) == "cancelled":
            self.failed(error)
        else:
            self.closed_early()

    def _end(self, error_type: str | None = None) -> Span | None:
        """Take the span (once) and record the call's duration."""
        span, self._span = self._span, None
        if span is not None:
            attributes = self._attributes
            if error_type is not None:
                attributes = {**attributes, "error.type": error_type}
            with _CONTAINED:
                self._instruments.duration.record(time.perf_counter() - self._start, attributes)
        return span


class _Current:
    """Within the block, ``span`` (if any) is the current span of this task's context."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> None:
        if self._span is None:
            return
        with _CONTAINED:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(self._span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            with _CONTAINED:
                from opentelemetry import context

                context.detach(token)
