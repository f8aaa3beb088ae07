"""The transport: one request loop that owns every retry, refresh and auth decision.

It wraps one pooled ``httpx.AsyncClient``. For each attempt it authenticates the request
afresh (a cached access token, or a new bce-auth-v1 signature over the Host that goes on
the wire), sends it, and reads the reply's verdict from the code table in
``mpt_async._codes``. A stream is handed over only once its first chunk has arrived, so a
timeout or a dropped connection before that is retried, and nothing after it is.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import parse_qsl

import anyio
import attrs
import httpx

from mpt_async import _converter
from mpt_async._auth import AccessTokenAuth, AKSKAuth, Auth, FixedTokenAuth
from mpt_async._backoff import Backoff, parse_retry_after
from mpt_async._codes import Action, classify_status, make_error
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    MalformedResponseError,
    MPTError,
    RateLimitError,
    StreamError,
)
from mpt_async._limiter import Limiter, Ticket
from mpt_async._logging import install_redaction, logger, redact
from mpt_async._models import ErrorEnvelope, TokenGrant
from mpt_async._ratelimit import RateLimitInfo, read_rate_limit, usage_counts
from mpt_async._signer import authorization, format_timestamp
from mpt_async._sse import BadLine, EventReader
from mpt_async._timeouts import Timeouts
from mpt_async._token import TokenCache

if TYPE_CHECKING:
    from mpt_async._telemetry import CallObserver
    from mpt_async._token_store import TokenStore

__all__ = [
    "CHAT_PATH",
    "TOKEN_PATH",
    "CallOptions",
    "OpenStream",
    "Transport",
    "aclose_response",
    "envelope_error",
    "transport_error",
]

CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
TOKEN_PATH = "/oauth/2.0/token"
_JSON_HEADERS = {"Content-Type": "application/json"}
#: A token fetch is quick; do not let it wait as long as a model's answer.
_TOKEN_READ_TIMEOUT = 30.0

T = TypeVar("T")


@attrs.frozen
class CallOptions:
    """The per-call knobs of the request loop."""

    timeouts: Timeouts
    max_retries: int
    backoff: Backoff


@attrs.frozen
class OpenStream:
    """A stream whose first chunk has arrived; the receiver owns (and must close) ``response``."""

    response: httpx.Response
    reader: EventReader
    first: dict[str, Any]
    #: The rate limiter's charge for this call, settled when the stream ends.
    ticket: Ticket | None = None
    rate_limit: RateLimitInfo | None = None


class _Failed(Exception):
    """One attempt's failure and what the loop should do about it (never escapes the loop)."""

    def __init__(
        self,
        error: MPTError,
        action: Action,
        token: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error, action, token, retry_after)
        self.error = error
        self.action = action
        self.token = token
        self.retry_after = retry_after

    def __copy__(self) -> _Failed:
        # Waiters on one token fetch each raise their own copy, not one shared object.
        copied = _Failed(copy.copy(self.error), self.action, self.token, self.retry_after)
        copied.__cause__ = self.__cause__
        return copied


def transport_error(exc: httpx.TransportError, doing: str) -> APIConnectionError:
    """Translate an httpx transport failure into the package's error (no URL, no secret)."""
    detail = redact(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"timed out {doing} ({type(exc).__name__})")
    return APIConnectionError(f"connection failed {doing}: {detail}")


def envelope_error(
    data: dict[str, Any], *, status_code: int | None, request_id: str | None
) -> tuple[Action, APIError]:
    """The action and error for an ``{"error_code", "error_msg"}`` body."""
    envelope = _converter.structure(data, ErrorEnvelope, status_code=status_code)
    return make_error(
        envelope.error_code,
        envelope.error_msg,
        status_code=status_code,
        request_id=envelope.id or request_id,
    )


async def aclose_response(response: httpx.Response) -> None:
    """Close a response even while the caller is being cancelled, so its connection is freed."""
    with anyio.CancelScope(shield=True):
        try:
            await response.aclose()
        except Exception:  # noqa: BLE001 - closing must not mask the error being handled
            logger.debug("closing a response failed", exc_info=True)


def _request_id(response: httpx.Response) -> str | None:
    headers = response.headers
    value: str | None = headers.get("x-bce-request-id") or headers.get("x-request-id")
    return value


class Transport:
    """Sends chat calls for one client and its copies.

    Args:
        http: The pooled client every call goes through.
        owns_http: Close ``http`` in :meth:`aclose` (``False`` for a user's own client).
        base_url: The service's scheme, host and optional path prefix.
        auth: The credentials.
        token_store: Where access tokens are shared beyond this transport, if anywhere.
        limiter: Holds calls back to the client's rate limits, if it has any.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        owns_http: bool,
        base_url: str,
        auth: Auth,
        token_store: TokenStore | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        install_redaction()
        self.http = http
        self.owns_http = owns_http
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.tokens: TokenCache | None = None
        if isinstance(auth, AccessTokenAuth):
            key = ""
            if token_store is not None:
                from mpt_async._token_store import token_key  # only with a store

                key = token_key(self.base_url, auth.api_key, auth.secret_key)
            self.tokens = TokenCache(store=token_store, key=key)
        self.closed = False
        #: The client's rate limits, if any; shared by its copies.
        self.limiter = limiter

    async def aclose(self) -> None:
        """Close the HTTP client if this transport created it."""
        self.closed = True
        if self.owns_http:
            await self.http.aclose()

    # -- the loop ---------------------------------------------------------------------

    async def _run(
        self,
        attempt: Callable[[Ticket | None], Awaitable[T]],
        options: CallOptions,
        size: int,
        observer: CallObserver | None,
    ) -> T:
        retries = 0
        refreshed = False
        while True:
            # Every attempt (a retry, a replay) waits for its place under the rate limits,
            # before it is sent: the wait is not part of the request's timeouts.
            ticket = await self._place(size, observer)
            try:
                return await self._attempt(attempt, ticket)
            except _Failed as failure:
                error, action = failure.error, failure.action
                if action is Action.REFRESH and self.tokens is not None and not refreshed:
                    # A refused token is replaced once; the replay is not a retry.
                    refreshed = True
                    if failure.token is not None:
                        self.tokens.invalidate(failure.token)
                    if observer is not None:
                        observer.token_refused(error)
                    logger.debug("access token refused (%s); refreshing, replaying once", error)
                    continue
                if action is Action.RETRY and retries < options.max_retries:
                    delay = options.backoff.delay(retries, failure.retry_after)
                    retries += 1
                    if self.limiter is not None and isinstance(error, RateLimitError):
                        # Over the service's quota: every call of this client holds back.
                        self.limiter.pause(delay)
                    if observer is not None:
                        observer.retry(retries, delay, error)
                    logger.debug(
                        "retry %d of %d in %.2fs after: %s",
                        retries,
                        options.max_retries,
                        delay,
                        error,
                    )
                    await anyio.sleep(delay)
                    continue
                raise error from failure.__cause__

    async def _place(self, size: int, observer: CallObserver | None) -> Ticket | None:
        """Wait for the attempt's place under the rate limits, if there are any."""
        limiter = self.limiter
        if limiter is None:
            return None
        if observer is None:
            return await limiter.acquire(size)
        return await observer.rate_limit_wait(limiter.acquire(size))

    @staticmethod
    async def _attempt(
        attempt: Callable[[Ticket | None], Awaitable[T]], ticket: Ticket | None
    ) -> T:
        """Run one attempt, and settle its rate-limit charge however it ends."""
        if ticket is None:
            return await attempt(None)
        succeeded = False
        try:
            result = await attempt(ticket)
        except _Failed as failure:
            error = failure.error
            if isinstance(error, APIError) and not isinstance(error, MalformedResponseError):
                ticket.settle(0)  # the service refused the call: it used no tokens
            raise
        else:
            succeeded = True
            return result
        finally:
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

    async def chat(
        self,
        endpoint: str,
        body: bytes,
        options: CallOptions,
        observer: CallObserver | None = None,
    ) -> tuple[Any, RateLimitInfo | None]:
        """Send a non-stream call; return the parsed success body and the quota announced."""

        async def attempt(ticket: Ticket | None) -> tuple[Any, RateLimitInfo | None]:
            request, token = await self._request(endpoint, body, options, observer, stream=False)
            try:
                response = await self.http.send(request)
            except httpx.TransportError as exc:
                raise _Failed(transport_error(exc, "waiting for the answer"), Action.RETRY) from exc
            info = self._observe(response, ticket)
            data = self._verdict(response, response.content, token)
            if ticket is not None and (counts := usage_counts(data)) is not None:
                ticket.settle(*counts)
            return data, info

        return await self._run(attempt, options, len(body), observer)

    async def open_stream(
        self,
        endpoint: str,
        body: bytes,
        options: CallOptions,
        observer: CallObserver | None = None,
    ) -> OpenStream:
        """Send a stream call; return it once its first chunk has arrived."""

        async def attempt(ticket: Ticket | None) -> OpenStream:
            request, token = await self._request(endpoint, body, options, observer, stream=True)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise _Failed(transport_error(exc, "opening the stream"), Action.RETRY) from exc
            handed_over = False
            try:
                info = self._observe(response, ticket)
                opened = await self._first_chunk(response, token)
                if ticket is not None or info is not None:
                    opened = attrs.evolve(opened, ticket=ticket, rate_limit=info)
                handed_over = True
                return opened
            finally:
                if not handed_over:
                    await aclose_response(response)

        return await self._run(attempt, options, len(body), observer)

    async def _first_chunk(self, response: httpx.Response, token: str | None) -> OpenStream:
        try:
            if response.status_code != 200 or "event-stream" not in response.headers.get(
                "content-type", ""
            ):
                # Errors come as plain JSON even in stream mode.
                content = await response.aread()
                self._verdict(response, content, token)
                raise _Failed(
                    MalformedResponseError(
                        "asked for a stream, got a single JSON body",
                        status_code=response.status_code,
                        request_id=_request_id(response),
                    ),
                    Action.RAISE,
                )
            reader = EventReader(response.aiter_bytes())
            payload = await reader.next_payload()
        except httpx.TransportError as exc:
            raise _Failed(
                transport_error(exc, "waiting for the first chunk"), Action.RETRY
            ) from exc
        except BadLine as exc:
            raise _Failed(
                StreamError(f"malformed line before any chunk: {exc}"), Action.RAISE
            ) from None
        if payload is None:
            raise _Failed(StreamError("the stream ended before its first chunk"), Action.RAISE)
        try:
            first = _converter.loads(payload)
        except ValueError:
            raise _Failed(
                StreamError(f"chunk 0 is not JSON: {payload[:80]!r}"), Action.RAISE
            ) from None
        if isinstance(first, dict) and "error_code" in first:
            self._raise_envelope(first, response, token)
        if not isinstance(first, dict):
            raise _Failed(StreamError("chunk 0 is not a JSON object"), Action.RAISE)
        return OpenStream(response, reader, first)

    # -- replies ----------------------------------------------------------------------

    def _verdict(self, response: httpx.Response, content: bytes, token: str | None) -> Any:
        """Return the success body, or raise ``_Failed`` saying what went wrong."""
        status = response.status_code
        try:
            data = _converter.decode_json(content, status_code=status)
        except MalformedResponseError as exc:
            if status == 200:
                raise _Failed(exc, Action.RAISE) from None
            self._raise_status(response)
        if isinstance(data, dict) and "error_code" in data:
            self._raise_envelope(data, response, token)
        if status != 200:
            self._raise_status(response)
        return data

    def _raise_envelope(
        self, data: dict[str, Any], response: httpx.Response, token: str | None
    ) -> NoReturn:
        try:
            action, error = envelope_error(
                data, status_code=response.status_code, request_id=_request_id(response)
            )
        except MalformedResponseError as exc:
            raise _Failed(exc, Action.RAISE) from None
        if action is Action.REFRESH and self.tokens is None:
            action = Action.RAISE  # a fixed token or a signature cannot be refreshed
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise _Failed(error, action, token, retry_after)

    def _raise_status(self, response: httpx.Response) -> NoReturn:
        status = response.status_code
        action, cls = classify_status(status)
        error = cls(
            f"HTTP {status} {response.reason_phrase}".rstrip(),
            status_code=status,
            request_id=_request_id(response),
        )
        raise _Failed(error, action, None, parse_retry_after(response.headers.get("retry-after")))

    # -- authentication -----------------------------------------------------------------

    async def _request(
        self,
        endpoint: str,
        body: bytes,
        options: CallOptions,
        observer: CallObserver | None,
        *,
        stream: bool,
    ) -> tuple[httpx.Request, str | None]:
        """Build one attempt's request, authenticated afresh."""
        auth = self.auth
        token: str | None = None
        params: dict[str, str] | None = None
        if isinstance(auth, FixedTokenAuth):
            token = auth.access_token
        elif self.tokens is not None:
            if observer is None:
                token = await self.tokens.get(lambda: self._fetch_token(options))
            else:
                token = await self.tokens.get(
                    lambda: observer.token_fetch(self._fetch_token(options))
                )
        if token is not None:
            params = {"access_token": token}
        request = self.http.build_request(
            "POST",
            self.base_url + CHAT_PATH + endpoint,
            content=body,
            params=params,
            headers=_JSON_HEADERS,
            timeout=options.timeouts.for_httpx(stream=stream),
        )
        if isinstance(auth, AKSKAuth):
            _sign(request, auth)
        logger.debug("POST %s%s (stream=%s)", CHAT_PATH, endpoint, stream)
        return request, token

    async def _fetch_token(self, options: CallOptions) -> TokenGrant:
        auth = self.auth
        assert isinstance(auth, AccessTokenAuth)  # only called for the token flow
        logger.debug("fetching an access token")
        timeouts = options.timeouts
        timeout = httpx.Timeout(
            connect=timeouts.connect,
            write=timeouts.write,
            pool=timeouts.pool,
            read=min(timeouts.read, _TOKEN_READ_TIMEOUT),
        )
        try:
            response = await self.http.post(
                self.base_url + TOKEN_PATH,
                params={
                    "grant_type": "client_credentials",
                    "client_id": auth.api_key,
                    "client_secret": auth.secret_key,
                },
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise _Failed(transport_error(exc, "fetching a token"), Action.RETRY) from exc
        status = response.status_code
        try:
            data = _converter.decode_json(response.content, status_code=status)
        except MalformedResponseError:
            if status != 200:
                self._raise_status(response)
            raise _Failed(
                MalformedResponseError("token endpoint sent no JSON", status_code=status),
                Action.RAISE,
            ) from None
        if isinstance(data, dict) and "error" in data:
            reason = data.get("error_description") or data["error"]
            error = AuthenticationError(
                f"token endpoint refused the credentials: {reason}", status_code=status
            )
            error.error = str(data["error"])
            raise _Failed(error, Action.RAISE)
        if isinstance(data, dict) and "error_code" in data:
            self._raise_envelope(data, response, None)
        if status != 200:
            self._raise_status(response)
        try:
            grant = _converter.structure(data, TokenGrant, status_code=status)
        except MalformedResponseError as exc:
            raise _Failed(exc, Action.RAISE) from None
        logger.debug("fetched an access token valid for %ds", grant.expires_in)
        return grant


def _sign(request: httpx.Request, auth: AKSKAuth) -> None:
    """Sign with a fresh timestamp, over the headers exactly as they will be sent."""
    timestamp = format_timestamp(time.time())
    request.headers["x-bce-date"] = timestamp
    request.headers["Authorization"] = authorization(
        access_key=auth.access_key,
        secret_key=auth.secret_key,
        method=request.method,
        path=request.url.path,
        query=parse_qsl(request.url.query.decode(), keep_blank_values=True),
        headers=request.headers,
        timestamp=timestamp,
        expiration=auth.expiration,
    )
