"""What a failed attempt means: the caller's error, in the package's words, and what to do.

The request loop (``_request_loop``) decides what to do about a :class:`AttemptFailed`; everything
that makes one reads the code table (``_codes``): an HTTP error status, an error body of
either interface, a broken connection. Every message is the package's own: no exception of
httpx, aiohttp or the JSON parser is chained to an error, and no URL or secret is named.
"""

from __future__ import annotations

import copy
import errno
import socket
import ssl
from typing import Any

import httpx

from mpt_async import _converter
from mpt_async._backoff import parse_retry_after
from mpt_async._codes import CODE_TABLE, Action, classify_status, make_error
from mpt_async._exceptions import (
    APIConnectionError,
    APITimeoutError,
    MalformedResponseError,
    MPTError,
)
from mpt_async._models import ErrorEnvelope
from mpt_async._proxy import ProxyFailure

__all__ = [
    "AttemptFailed",
    "connection_error",
    "error_body_failure",
    "is_error_body",
    "request_id",
    "status_failure",
    "transport_failure",
]


class AttemptFailed(Exception):
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

    def __copy__(self) -> AttemptFailed:
        # Waiters on one token fetch each raise their own copy, not one shared object.
        copied = AttemptFailed(copy.copy(self.error), self.action, self.retry_after)
        copied.token, copied.secrets = self.token, self.secrets
        return copied


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


def status_failure(response: httpx.Response) -> AttemptFailed:
    """The failure for an HTTP error status without an API error body."""
    status = response.status_code
    action, cls = classify_status(status)
    error = cls(
        f"HTTP {status} {response.reason_phrase[:200]}".rstrip(),
        status_code=status,
        request_id=request_id(response),
    )
    return AttemptFailed(error, action, parse_retry_after(response.headers.get("retry-after")))


def error_body_failure(data: dict[str, Any], response: httpx.Response) -> AttemptFailed:
    if "error_code" not in data:
        return _v2_failure(data, response)
    try:
        envelope = _converter.structure(data, ErrorEnvelope, status_code=response.status_code)
    except MalformedResponseError as exc:
        return AttemptFailed(exc, Action.RAISE)
    action, error = make_error(
        envelope.error_code,
        envelope.error_msg,
        status_code=response.status_code,
        request_id=envelope.id or request_id(response),
    )
    return AttemptFailed(error, action, parse_retry_after(response.headers.get("retry-after")))


def _v2_failure(data: dict[str, Any], response: httpx.Response) -> AttemptFailed:
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
    return AttemptFailed(failure, action, parse_retry_after(response.headers.get("retry-after")))


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


def transport_failure(exc: httpx.TransportError, doing: str) -> AttemptFailed:
    """An attempt that got no answer: retried, unless a proxy refused it (4xx) for good.

    A proxy's 407 (its credentials refused) or 403 (the service forbidden) would be the same
    on every retry.
    """
    refused = isinstance(exc, ProxyFailure) and exc.status is not None and exc.status < 500
    return AttemptFailed(connection_error(exc, doing), Action.RAISE if refused else Action.RETRY)


def connection_error(exc: httpx.TransportError, doing: str) -> APIConnectionError:
    """The package's error for a transport failure: what happened, with no URL or secret."""
    if isinstance(exc, httpx.TimeoutException):
        what = _TIMED_OUT.get(type(exc), "timed out")
        return APITimeoutError(f"{what} {doing} ({type(exc).__name__})")
    if isinstance(exc, ProxyFailure):  # its message is the package's: the proxy's address
        unreached = exc.status is None and exc.__cause__ is not None  # say why
        detail = f"{exc} ({_reason(exc)})" if unreached else str(exc)
    elif isinstance(exc, httpx.ConnectError):
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
