"""The reply decoder: one reading of what the service sent back, for every kind of reply.

A whole (non-stream) body, a token reply, a stream's first chunk and its later chunks all
go through here. It owns the four ways a reply fails (a bad line, the end of the body, text
that is not JSON, an error body), the error-body check, the HTTP status verdict, the chunk
hook, and the bounds on a reply's size and silence. The request loop (``_transport``) only
decides what to do about a :class:`Failure`.

Every message it writes is the package's own: server text is shown only through the
redactor, and no exception of httpx, aiohttp or the JSON parser is chained to an error.
"""

from __future__ import annotations

import copy
import errno
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, Protocol

import anyio
import attrs
import httpx

from mpt_async import _converter
from mpt_async._backoff import parse_retry_after
from mpt_async._body import Body, BodyTooLarge, UnsupportedEncoding, aclose_response
from mpt_async._codes import CODE_TABLE, Action, classify_status, make_error
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    MalformedResponseError,
    MPTError,
    StreamError,
)
from mpt_async._models import ChatChunk, ChatResponse, ErrorEnvelope
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._redact import redact
from mpt_async._sse import BadLine, EventReader

__all__ = [
    "ChunkDecoder",
    "Deadline",
    "connection_error",
    "Failure",
    "decode_body",
    "is_error_body",
    "read_reply",
    "request_id",
    "scrub",
    "status_failure",
    "whole_answer",
    "whole_stream",
]


class Failure(Exception):
    """One attempt's failure and what the request loop should do about it (never escapes it).

    Its message names only the error's class: it may travel as an exception's context.
    """

    def __init__(self, error: MPTError, action: Action, retry_after: float | None = None) -> None:
        super().__init__(type(error).__name__)
        self.error = error
        self.action = action
        self.retry_after = retry_after
        #: The access token the attempt sent (the transport sets it, to refresh it).
        self.token: str | None = None
        #: The secrets the attempt sent (a token or a signature), masked in the error.
        self.secrets: tuple[str, ...] = ()

    def __copy__(self) -> Failure:
        # Waiters on one token fetch each raise their own copy, not one shared object.
        copied = Failure(copy.copy(self.error), self.action, self.retry_after)
        copied.token, copied.secrets = self.token, self.secrets
        return copied


def scrub(error: MPTError, secrets: Iterable[str]) -> MPTError:
    """Mask ``secrets`` (and anything the redactor knows) in ``error``, and cut its chain.

    The one exit check before an error reaches the caller: a server may echo a URL, a key
    or a signature in ``error_msg``, ``error_description`` or its reason phrase.
    """
    secrets = tuple(secrets)
    error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    if isinstance(error, APIError):
        error.error_msg = redact(error.error_msg, secrets)
        if isinstance(error, AuthenticationError) and error.error is not None:
            error.error = redact(error.error, secrets)
    error.__cause__ = error.__context__ = None
    error.__suppress_context__ = False
    return error


def request_id(response: httpx.Response) -> str | None:
    """The id the service gave the request, if it sent one."""
    headers = response.headers
    value: str | None = headers.get("x-bce-request-id") or headers.get("x-request-id")
    return value


def is_error_body(data: Any) -> bool:
    """Whether parsed JSON is an error body, of either interface.

    v1's is ``{"error_code", "error_msg"}``; v2's ``{"error": {"code", "message", "type"}}``,
    which some gateways send with HTTP 200.
    """
    return isinstance(data, dict) and ("error_code" in data or isinstance(data.get("error"), dict))


def status_failure(response: httpx.Response) -> Failure:
    """The failure for an HTTP error status without an API error body."""
    status = response.status_code
    action, cls = classify_status(status)
    error = cls(
        f"HTTP {status} {response.reason_phrase[:200]}".rstrip(),
        status_code=status,
        request_id=request_id(response),
    )
    return Failure(error, action, parse_retry_after(response.headers.get("retry-after")))


def _envelope_failure(data: dict[str, Any], response: httpx.Response) -> Failure:
    if "error_code" not in data:
        return _v2_failure(data, response)
    try:
        envelope = _converter.structure(data, ErrorEnvelope, status_code=response.status_code)
    except MalformedResponseError as exc:
        return Failure(exc, Action.RAISE)
    action, error = make_error(
        envelope.error_code,
        envelope.error_msg,
        status_code=response.status_code,
        request_id=envelope.id or request_id(response),
    )
    return Failure(error, action, parse_retry_after(response.headers.get("retry-after")))


def _v2_failure(data: dict[str, Any], response: httpx.Response) -> Failure:
    """The failure for v2's ``{"error": {"code", "message", "type"}, "id"}``."""
    error = data["error"]
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not code or len(code) > 100:
        code = f"http_{response.status_code}" if response.status_code != 200 else "unknown"
    said = message[:300] if isinstance(message, str) else ""
    known = CODE_TABLE.get(code)
    text = (
        said if known is None else known[2] if not said or said == code else f"{known[2]}: {said}"
    )
    rid = data.get("id")
    action, failure = make_error(
        code,
        text or code,
        status_code=response.status_code,
        request_id=rid if isinstance(rid, str) and len(rid) <= 200 else request_id(response),
    )
    return Failure(failure, action, parse_retry_after(response.headers.get("retry-after")))


#: A check of a parsed body before the generic ones (the token endpoint's OAuth errors).
Refusal = Callable[[Any, httpx.Response], "Failure | None"]


def decode_body(response: httpx.Response, content: bytes, refusal: Refusal | None = None) -> Any:
    """The success body of a whole reply, or raise the :class:`Failure` it deserves.

    Raises:
        Failure: For a body that is not JSON, an error body, or an HTTP error status.
    """
    status = response.status_code
    try:
        data = _converter.decode_json(content, status_code=status)
    except MalformedResponseError as exc:
        if status == 200:
            raise Failure(exc, Action.RAISE) from None
        raise status_failure(response) from None
    if refusal is not None and (failure := refusal(data, response)) is not None:
        raise failure
    if is_error_body(data):
        raise _envelope_failure(data, response)
    if status != 200:
        raise status_failure(response)
    return data


async def read_reply(response: httpx.Response, doing: str, refusal: Refusal | None = None) -> Any:
    """Read, close and decode a whole reply (the caller bounds the time it takes).

    Raises:
        Failure: For a broken connection (retried), an oversized or undecodable body, and
            whatever :func:`decode_body` refuses.
    """
    failure: Failure | None = None
    body: Body | None = None
    content = b""
    try:
        body = Body(response)
        content = await body.read()
    except httpx.TransportError as exc:
        failure = Failure(connection_error(exc, doing), Action.RETRY)
    except (BodyTooLarge, UnsupportedEncoding) as exc:
        error = MalformedResponseError(str(exc), status_code=response.status_code)
        failure = Failure(error, Action.RAISE)
    finally:
        await (aclose_response(response) if body is None else body.aclose())
    if failure is not None:
        raise failure
    return decode_body(response, content, refusal)


#: The fields a whole answer takes from a stream's last chunk as they are.
_FROM_LAST_CHUNK = tuple(
    field.name
    for field in attrs.fields(ChatResponse)
    if field.name in attrs.fields_dict(ChatChunk)
    and field.name not in ("result", "need_clear_history", "ban_round")
)


def whole_stream(
    last: ChatChunk, text: str, flagged: ChatChunk | None, rate_limit: RateLimitInfo | None
) -> ChatResponse:
    """A whole answer from a finished stream: its last chunk, all its text, its first flag."""
    return ChatResponse(
        **{name: getattr(last, name) for name in _FROM_LAST_CHUNK},
        result=text,
        need_clear_history=flagged is not None,
        ban_round=flagged.ban_round if flagged is not None else None,
        rate_limit=rate_limit,
    )


def whole_answer(data: Any, rate_limit: RateLimitInfo | None) -> ChatResponse:
    """A whole answer from its parsed body and the quota its headers announced.

    Raises:
        Failure: If the body is not a well-formed answer.
    """
    try:
        reply = _converter.structure(data, ChatResponse, status_code=200)
    except MalformedResponseError as exc:
        raise Failure(exc, Action.RAISE) from None
    return reply if rate_limit is None else attrs.evolve(reply, rate_limit=rate_limit)


# -- transport failures, in the package's words ---------------------------------------------

_TIMED_OUT = {
    httpx.ConnectTimeout: "timed out connecting",
    httpx.PoolTimeout: "timed out waiting for a free connection",
    httpx.WriteTimeout: "timed out sending the request",
}
_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
}


def connection_error(exc: httpx.TransportError, doing: str) -> APIConnectionError:
    """The package's error for a transport failure: what happened, with no URL or secret."""
    if isinstance(exc, httpx.TimeoutException):
        what = _TIMED_OUT.get(type(exc), "timed out")
        return APITimeoutError(f"{what} {doing} ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        detail = f"could not connect to {_address(exc)} ({_reason(exc)})"
    elif isinstance(exc, httpx.RemoteProtocolError):
        detail = "the server closed the connection or broke the HTTP protocol"
    else:
        detail = "the connection broke"
    return APIConnectionError(f"connection failed {doing}: {detail}")


def _address(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # pragma: no cover - httpx always sets the request
        return "the service"
    return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def _reason(exc: BaseException) -> str:
    """Why a connection failed, from the first cause in the chain that says so plainly."""
    todo: list[BaseException] = [exc]
    for _ in range(20):
        if not todo:
            break
        node = todo.pop(0)
        if isinstance(node, ssl.SSLError):
            return "the TLS handshake failed"
        if isinstance(node, socket.gaierror):
            return "the host name could not be resolved"
        if isinstance(node, OSError) and node.errno in _ERRNO:
            return _ERRNO[node.errno]
        grouped = getattr(node, "exceptions", None)  # an exception group
        if isinstance(grouped, (list, tuple)):
            todo += [e for e in grouped if isinstance(e, BaseException)]
        todo += [e for e in (node.__cause__, node.__context__) if e is not None]
    return "no connection could be made"


# -- streams ----------------------------------------------------------------------------------


_monotonic = time.monotonic


def _where(received: int) -> str:
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
            Failure: Retried for a broken connection or a silence; otherwise as the error
                body says, or raised.
        """
        try:
            data = await self.next_data()
        except APIConnectionError as exc:
            failure = Failure(exc, Action.RETRY)
        except MPTError as exc:
            failure = Failure(exc, Action.RAISE)
        else:
            if is_error_body(data):
                raise _envelope_failure(data, self.body.response)
            if isinstance(data, dict):
                return data
            failure = Failure(StreamError("chunk 0 is not a JSON object"), Action.RAISE)
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
                f"the stream ended {_where(self.received)}, without is_end", received=self.received
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
            error = connection_error(exc, _where(self.received))
        except (BadLine, BodyTooLarge, UnsupportedEncoding) as exc:
            error = StreamError(
                f"malformed stream {_where(self.received)}: {exc}", received=self.received
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
            return f"the call's total deadline passed {_where(self.received)}"
        return f"no chunk for {self._idle:g} s {_where(self.received)} (stream_read)"

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
            raise _envelope_failure(data, self.body.response).error
        try:
            _converter.structure(data, ChatChunk)
        except MalformedResponseError as exc:
            message = f"chunk {received} is malformed: {exc.error_msg}"
        else:  # pragma: no cover - the fast path and the converter disagree
            message = f"chunk {received} is malformed"
        raise StreamError(message, received=received)
