"""The transport: one request loop that owns every retry, refresh and auth decision.

It wraps one pooled ``httpx.AsyncClient``. For each attempt it asks the credentials'
strategy (``mpt_async._credentials``) for a token (as it is, or fetched and cached), waits for
the attempt's place under the quotas, has the interface's dialect (``mpt_async._dialect``: v1
or v2) build the request (a waiting call holds none), lets the strategy sign it
(bce-auth-v1, over the Host that goes on the wire), sends it, and hands the reply to the
dialect's decoding, whose :class:`~mpt_async._verdict.AttemptFailed` says what went wrong and
whether to retry, refresh or raise. Neither holds a policy: adding an interface touches the
dialect and the credentials, not this loop. A stream is handed over only once its first
chunk has arrived, so a timeout or a dropped connection before that is retried, and nothing
after it is.

Every call has a total deadline (``Timeouts.total``): retries, backoff and token fetches
count, waits for the client's own rate limits do not. Each attempt runs in one cancel scope
set to that deadline, which each phase (the reply's head, a whole body) narrows to its own
bound for as long as it lasts: one timer per attempt, however many bounds apply. The loop is
the place to observe a call: each attempt, retry, refresh and rate-limit wait passes through
:meth:`RequestLoop._run`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import attrs
import httpx

from mpt_async._auth import Auth
from mpt_async._backoff import Backoff
from mpt_async._body import Body, UnsupportedEncoding, aclose_response
from mpt_async._codes import Action
from mpt_async._credentials import credentials_for
from mpt_async._dialect import V1_CHAT_PATH, dialect_for
from mpt_async._exceptions import (
    APIError,
    APITimeoutError,
    MalformedResponseError,
    MPTError,
    RateLimitError,
)
from mpt_async._limiter import Limiter, Ticket
from mpt_async._logging import install_redaction, logger
from mpt_async._models import ChatResponse
from mpt_async._priority import Priority, queue_of
from mpt_async._ratelimit import RateLimitInfo, read_rate_limit
from mpt_async._redact import scrub
from mpt_async._reply import read_reply
from mpt_async._stream import ChunkDecoder
from mpt_async._timeouts import Timeouts
from mpt_async._token import TOKEN_PATH, TokenCache
from mpt_async._verdict import AttemptFailed, request_id, transport_failure

if TYPE_CHECKING:
    from mpt_async._dialect import API
    from mpt_async._telemetry import CallObserver
    from mpt_async._token_store import TokenStore

__all__ = ["CHAT_PATH", "TOKEN_PATH", "CallOptions", "OpenStream", "RequestLoop"]

CHAT_PATH = V1_CHAT_PATH

T = TypeVar("T")


@attrs.frozen
class CallOptions:
    """The per-call knobs of the request loop."""

    timeouts: Timeouts
    max_retries: int
    backoff: Backoff
    #: Which waiters it goes before under the quotas.
    priority: Priority = "interactive"


@attrs.frozen
class OpenStream:
    """A stream whose first chunk has arrived; the receiver owns (and must close) ``decoder``."""

    decoder: ChunkDecoder
    first: dict[str, Any]
    #: The rate limiter's charge for this call, settled when the stream ends.
    ticket: Ticket | None = None
    rate_limit: RateLimitInfo | None = None
    #: What must never show in the stream's errors (the key, the token or signature sent).
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False)


class _Deadline:
    """A call's total deadline, on both clocks, pushed back by rate-limit waits.

    It also holds the cancel scope of the attempt in progress, and the bound of the phase in
    progress (an attempt's phases run one after the other, and a call's attempts too).
    """

    __slots__ = (
        "at",
        "loop_at",
        "offset",
        "phase",
        "phase_at",
        "quota_left",
        "refusal",
        "scope",
        "total",
    )

    def __init__(self, total: float | None, quota: float | None = None) -> None:
        self.total = total
        #: What is left of the call's bound on waiting for quota capacity (``Timeouts.quota``).
        self.quota_left = math.inf if quota is None else quota
        #: The last quota refusal, raised if the bound passes before a place comes.
        self.refusal: AttemptFailed | None = None
        span = math.inf if total is None else total
        now = time.monotonic()
        #: The event loop's clock minus ``time.monotonic()``.
        self.offset = anyio.current_time() - now
        #: On ``time.monotonic()`` (read per chunk: the cheaper clock).
        self.at = now + span
        #: On the event loop's clock, for cancel scopes.
        self.loop_at = now + self.offset + span
        self.scope: anyio.CancelScope | None = None
        #: What timed out if the phase in progress outlives its bound (``None``: no phase).
        self.phase: str | None = None
        self.phase_at = math.inf

    def extend(self, seconds: float) -> None:
        self.at += seconds
        self.loop_at += seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def attempt(self) -> anyio.CancelScope:
        """A new attempt's cancel scope, set to the total deadline."""
        self.phase = None
        self.scope = anyio.CancelScope(deadline=self.loop_at)
        return self.scope

    def bound(self, seconds: float, phase: str) -> None:
        """Bound the phase that starts now to ``seconds`` (``phase`` says what timed out)."""
        # On the loop's clock, read off the cheaper one: both run at the same pace.
        self._narrow(phase, time.monotonic() + self.offset + seconds)

    def unbound(self) -> None:
        """End the bound of the phase before: only the total deadline is left."""
        self._narrow(None, math.inf)

    def _narrow(self, phase: str | None, phase_at: float) -> None:
        self.phase, self.phase_at = phase, phase_at
        if self.scope is not None:
            self.scope.deadline = min(phase_at, self.loop_at)

    def timed_out(self) -> AttemptFailed | None:
        """Why the attempt's scope caught its cancel: the phase's failure (retried).

        ``None`` when it is the call's total deadline that passed.
        """
        if self.phase is None or self.phase_at > self.loop_at:
            return None
        return AttemptFailed(APITimeoutError(self.phase), Action.RETRY)


@attrs.frozen
class _Call:
    """What every attempt of one call shares."""

    endpoint: str
    body: bytes
    options: CallOptions
    stream: bool
    #: Follows the call for telemetry, if it is on.
    observer: CallObserver | None = None
    #: Starts when the call does.
    deadline: _Deadline = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: _Deadline(self.options.timeouts.total, self.options.timeouts.quota), True
        ),
    )


#: One attempt: send the request, read the reply; raises AttemptFailed.
_Attempt = Callable[[_Call, httpx.Request, "Ticket | None"], Awaitable[T]]


class RequestLoop:
    """Sends chat calls for one client and its copies.

    Args:
        http: The pooled client every call goes through.
        owns_http: Close ``http`` in :meth:`aclose` (``False`` for a user's own client).
        base_url: The service's scheme, host and optional path prefix.
        auth: The credentials.
        token_store: Where access tokens are shared beyond this transport, if anywhere.
        limiter: Holds calls back to the quotas (learned, announced, the user's ceilings).
        api: The service's interface, ``"v1"`` or ``"v2"``.
        appid: The v2 application to bill, if not the key's default one.
        iam_base_url: Where IAM issues v2 bearer tokens for IAM AK/SK.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        owns_http: bool,
        base_url: str,
        auth: Auth,
        limiter: Limiter,
        token_store: TokenStore | None = None,
        api: API = "v1",
        appid: str | None = None,
        iam_base_url: str | None = None,
    ) -> None:
        install_redaction()
        self.http = http
        self.owns_http = owns_http
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.api: API = api
        self.iam_base_url = (iam_base_url or self.base_url).rstrip("/")
        #: What the credentials do on each attempt (a token as is, fetched, or a signature).
        self.credentials = credentials_for(
            auth,
            api,
            base_url=self.base_url,
            iam_base_url=self.iam_base_url,
            token_store=token_store,
        )
        #: The fetched token's cache, if the credentials fetch one.
        self.tokens: TokenCache | None = self.credentials.tokens
        #: What differs between the interfaces: the request, the answer, the chunks.
        self.dialect = dialect_for(api, self.base_url, appid, http if owns_http else None)
        self.closed = False
        #: The client's limiter; shared by its copies.
        self.limiter = limiter
        #: The credentials' secrets, masked in every error.
        self._secrets = self.credentials.secrets

    async def aclose(self) -> None:
        """Close the HTTP client if this transport created it."""
        self.closed = True
        if self.owns_http:
            await self.http.aclose()

    # -- the loop ---------------------------------------------------------------------

    async def _run(self, attempt: _Attempt[T], call: _Call) -> T:
        """Run attempts until one succeeds, the failure is final, or the deadline passes.

        With telemetry on, the call's span is current meanwhile (HTTP spans nest under it).
        """
        if call.observer is None:
            return await self._attempts(attempt, call)
        with call.observer.current():
            return await self._attempts(attempt, call)

    async def _attempts(self, attempt: _Attempt[T], call: _Call) -> T:
        retries = 0
        refreshed = False
        deadline = call.deadline
        failure: AttemptFailed | None = None
        while True:
            with deadline.attempt() as scope:
                try:
                    return await self._attempt(attempt, call)
                except AttemptFailed as caught:
                    failure = caught
            if scope.cancelled_caught:
                timed_out = deadline.timed_out()
                if timed_out is None:
                    break  # the total deadline: the last failure, if any, says what went on
                failure = timed_out
            assert failure is not None  # caught, or the phase's
            if failure.action is Action.WAIT:
                deadline.refusal = failure
                self._refused(failure, call)
                continue  # a quota refused it: back to wait for capacity, not a retry
            delay = self._decide(failure, retries, refreshed, call)
            if delay is None or delay > deadline.left():
                break  # the wait is within the deadline: it needs no scope of its own
            if failure.action is Action.REFRESH:
                refreshed = True  # a refused token is replaced once; not a retry
                continue
            retries += 1
            await anyio.sleep(delay)
        raise self._final(failure, call)

    async def _place(self, call: _Call) -> Ticket:
        """Wait for the attempt's place under the quotas, right before it is sent.

        That wait is not part of the timeouts, nor of the total deadline: it pushes it back.
        ``Timeouts.quota`` bounds it (all of a call's waits together).

        Raises:
            AttemptFailed: The bound passed first (a :class:`RateLimitError`, not retried).
        """
        priority = call.options.priority
        if call.observer is None:  # (an observer marks the call's priority on its span)
            # Most calls wait for nothing: no timer to set for them, nor a deadline to move.
            ticket = self.limiter.admit_now(len(call.body), queue_of(priority))
            if ticket is not None:
                return ticket
        deadline = call.deadline
        scope = deadline.scope
        if scope is not None:
            scope.deadline = math.inf  # the wait pushes the total deadline back
        started = time.monotonic()
        acquiring = self.limiter.acquire(len(call.body), queue_of(priority))
        try:
            with anyio.move_on_after(deadline.quota_left):
                if call.observer is None:
                    return await acquiring
                return await call.observer.rate_limit_wait(acquiring, priority)
        finally:
            waited = time.monotonic() - started
            deadline.extend(waited)
            deadline.quota_left -= waited
            deadline.unbound()
        refusal = deadline.refusal
        if refusal is not None:  # the service's own words, with its code
            refusal.action = Action.RAISE
            raise refusal
        bound = call.options.timeouts.quota
        error = RateLimitError(f"no quota capacity within Timeouts.quota ({bound:g} s)")
        raise AttemptFailed(error, Action.RAISE)

    def _refused(self, failure: AttemptFailed, call: _Call) -> None:
        """Tell the logs and the trace that a quota refused the call, which waits again."""
        error, rate = failure.error, self.limiter.model.rate
        quota = getattr(error, "quota", None)
        kind = "second" if quota is None else quota.value
        if call.observer is not None:
            call.observer.quota_refused(error, kind, rate)
        logger.debug("quota refused (%s, per %s); waiting at %.3g calls/s", error, kind, rate)

    def _decide(
        self, failure: AttemptFailed, retries: int, refreshed: bool, call: _Call
    ) -> float | None:
        """How long to wait before the next attempt, or ``None`` to give up."""
        error, action, options, observer = (
            failure.error,
            failure.action,
            call.options,
            call.observer,
        )
        if action is Action.REFRESH and self.tokens is not None and not refreshed:
            if failure.token is not None:
                self.tokens.invalidate(failure.token)
            if observer is not None:
                observer.token_refused(error)
            logger.debug("access token refused (%s); refreshing, replaying once", error)
            return 0.0
        if action is Action.RETRY and retries < options.max_retries:
            delay = options.backoff.delay(retries, failure.retry_after)
            if delay > call.deadline.left():
                return None  # the deadline would pass first: no retry to announce
            if observer is not None:
                observer.retry(retries + 1, delay, error)
            logger.debug(
                "retry %d of %d in %.2fs after: %s", retries + 1, options.max_retries, delay, error
            )
            return delay
        return None

    def _final(self, failure: AttemptFailed | None, call: _Call) -> MPTError:
        """The error the caller sees: the last failure's, or the deadline's; secret-free."""
        deadline = call.deadline
        if deadline.left() <= 0 or failure is None:
            message = f"the call did not end within its total deadline of {deadline.total:g} s"
            if failure is not None:
                message += f" (last: {failure.error})"
            return scrub(APITimeoutError(message), self._secrets)
        return scrub(failure.error, (*self._secrets, *failure.secrets))

    def carried(self, request: httpx.Request) -> tuple[str, ...]:
        """The secrets ``request`` carries: the credentials', its token or signature."""
        token = request.url.params.get("access_token")
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            bearer = authorization[7:]
            return (*self._secrets, bearer, bearer.rpartition("/")[2])
        signature = authorization.rpartition("/")[2]
        return (*self._secrets, *(s for s in (token, signature) if s))

    async def _attempt(self, attempt: _Attempt[T], call: _Call) -> T:
        """Run one attempt, and settle its rate-limit charge however it ends."""
        succeeded = False
        ticket: Ticket | None = None
        try:
            token = await self.credentials.token(self.http, call.options.timeouts, call.observer)
            ticket = await self._place(call)  # after the token: admitted right before sending
            request = self._request(call, token)  # not held while waiting; signed afresh
            if call.observer is not None:
                call.observer.sending(self.carried(request))
            try:
                result = await attempt(call, request, ticket)
            except AttemptFailed as failure:
                failure.token, failure.secrets = token, self.carried(request)
                raise
        except AttemptFailed as failure:
            error = failure.error
            if ticket is None and failure.action is Action.WAIT:
                failure.action = Action.RETRY  # the token endpoint's 429: a plain retry
            if ticket is not None:
                if isinstance(error, RateLimitError):
                    ticket.refused(error, failure.retry_after)  # not counted; learned from
                elif isinstance(error, APIError) and not isinstance(error, MalformedResponseError):
                    ticket.settle(0)  # the service refused the call: it used no tokens
            raise
        else:
            succeeded = True
            return result
        finally:
            if ticket is not None:
                if succeeded:
                    ticket.answered()  # a stream settles its tokens when it ends
                else:
                    ticket.finish()

    @staticmethod
    def _observe(response: httpx.Response, ticket: Ticket | None) -> RateLimitInfo | None:
        """Read the quota a reply announces, and tell the limiter the reply has come."""
        info = read_rate_limit(response.headers)
        if ticket is not None:
            ticket.reply(info)
        return info

    # -- the two kinds of call --------------------------------------------------------

    async def chat(
        self,
        endpoint: str,
        body: bytes,
        options: CallOptions,
        observer: CallObserver | None = None,
    ) -> ChatResponse:
        """Send a non-stream call; return its answer, with the quota its headers announced."""
        return await self._run(self._whole, _Call(endpoint, body, options, False, observer))

    async def _whole(
        self, call: _Call, request: httpx.Request, ticket: Ticket | None
    ) -> ChatResponse:
        read = call.options.timeouts.read
        response = await self._send(call, request, "waiting for the answer", read)
        info = self._observe(response, ticket)
        # The whole body, however it trickles.
        call.deadline.bound(read, f"no whole answer within {read:g} s (read)")
        data = await read_reply(response, "reading the answer")
        reply = self.dialect.answer(data, info)
        if ticket is not None:
            ticket.settle(reply.usage.total_tokens, reply.usage.prompt_tokens)
        return reply

    async def _send(
        self, call: _Call, request: httpx.Request, doing: str, wait: float
    ) -> httpx.Response:
        """Send ``request``; return once the reply's head has come.

        However the head trickles in, it must come within ``wait`` once the pool, the
        connection and the sending have had their own bounds.
        """
        call.deadline.bound(
            wait + _sending(call.options.timeouts), f"timed out {doing} (reply head)"
        )
        try:
            return await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            failure = transport_failure(exc, doing)
        raise failure

    async def open_stream(
        self,
        endpoint: str,
        body: bytes,
        options: CallOptions,
        observer: CallObserver | None = None,
    ) -> OpenStream:
        """Send a stream call; return it once its first chunk has arrived."""
        opened: OpenStream = await self._run(
            self._opening, _Call(endpoint, body, options, True, observer)
        )
        return opened

    async def _opening(
        self, call: _Call, request: httpx.Request, ticket: Ticket | None
    ) -> OpenStream:
        idle = call.options.timeouts.stream_read
        response = await self._send(call, request, "opening the stream", idle)
        opened = await self._first_chunk(call, response, ticket)
        return attrs.evolve(opened, secrets=self.carried(request))

    async def _first_chunk(
        self, call: _Call, response: httpx.Response, ticket: Ticket | None
    ) -> OpenStream:
        body: Body | None = None
        try:
            info = self._observe(response, ticket)
            if response.status_code != 200 or "event-stream" not in response.headers.get(
                "content-type", ""
            ):
                await _refuse_single_body(
                    response, call.options.timeouts.stream_read, call.deadline
                )
            # The decoder bounds the wait for each chunk itself.
            call.deadline.unbound()
            body = _stream_body(response)
            decoder = self.dialect.decoder(
                body, idle=call.options.timeouts.stream_read, deadline=call.deadline
            )
            first = await decoder.first()
            return OpenStream(decoder, first, ticket, info)
        except BaseException:
            await (aclose_response(response) if body is None else body.aclose())
            raise

    # -- authentication -----------------------------------------------------------------

    def _request(self, call: _Call, token: str | None) -> httpx.Request:
        """Build one attempt's request with ``token``, authenticated afresh."""
        credentials, timeouts = self.credentials, call.options.timeouts
        request = self.dialect.request(
            self.http,
            call.endpoint,
            call.body,
            token,
            timeouts.for_httpx(stream=call.stream),
            call.stream,
        )
        credentials.sign(request)  # over the Host that goes on the wire
        return request


def _sending(timeouts: Timeouts) -> float:
    """The most the pool, the connection and sending the request may take together."""
    return timeouts.pool + timeouts.connect + timeouts.write


async def _refuse_single_body(
    response: httpx.Response, wait: float, deadline: _Deadline
) -> NoReturn:
    """A stream call answered with one body: its error (plain JSON, even in stream mode)."""
    deadline.bound(wait, f"no whole answer within {wait:g} s (stream_read)")
    await read_reply(response, "reading the answer")
    error = MalformedResponseError(
        "asked for a stream, got a single JSON body",
        status_code=response.status_code,
        request_id=request_id(response),
    )
    raise AttemptFailed(error, Action.RAISE)


def _stream_body(response: httpx.Response) -> Body:
    try:
        return Body(response)
    except UnsupportedEncoding as exc:
        error = MalformedResponseError(str(exc), status_code=response.status_code)
    raise AttemptFailed(error, Action.RAISE)
