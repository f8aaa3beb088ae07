"""What the pool's two kinds of HTTP/1.1 connection share (``_pool``'s h11 one, ``_wire``).

The pool (``_pool``) hands out connections and ``_wire`` parses with httptools; both build on
these: the connection's interface as the pool sees it, the bound on a response head, how a
leftover byte is found, and how httpcore's errors become httpx's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import httpcore
import httpx

__all__ = [
    "HTTPCORE_ERRORS",
    "INTERIM_BODY",
    "MAX_HEAD",
    "Connection",
    "GiveBack",
    "Key",
    "announces_body",
    "holds_unread",
    "mapped",
]

#: A pool's key for an origin: scheme, host, port.
Key = tuple[bytes, bytes, int]

#: The most bytes of a response head, interim ones included (h11's bound, and ``_wire``'s).
MAX_HEAD = httpcore.AsyncHTTP11Connection.MAX_INCOMPLETE_EVENT_SIZE
#: What httpcore raises for a failed exchange (it has no common base class).
HTTPCORE_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)


def mapped(exc: Exception) -> Exception:
    """The httpx exception of the same name as httpcore's (httpx mirrors them all)."""
    for cls in type(exc).__mro__:
        target = getattr(httpx, cls.__name__, None)
        if isinstance(target, type) and issubclass(target, httpx.TransportError):
            return target(str(exc))
    return httpx.RemoteProtocolError(str(exc))


def holds_unread(stream: httpcore.AsyncNetworkStream) -> bool:
    """Whether bytes wait to be read on ``stream``, in its socket or in a buffer above it.

    httpcore's ``is_readable`` looks at the socket alone, and misses what was already taken
    from it: anyio's asyncio streams receive more than was asked for and queue the rest,
    and TLS decrypts whole records. Neither says so in a public API, so this looks at their
    internals (anyio >= 4, trio); a layer it does not know counts as holding bytes, so that a
    connection is rather closed than misread.
    """
    if stream.get_extra_info("is_readable"):
        return True
    layer = getattr(stream, "_stream", None)  # httpcore's AnyIOStream and TrioStream
    for _ in range(4):
        ssl_object = getattr(layer, "_ssl_object", None)  # anyio's TLSStream, trio's SSLStream
        if ssl_object is not None:
            incoming = getattr(layer, "_read_bio", None) or getattr(layer, "_incoming", None)
            if incoming is None or incoming.pending or ssl_object.pending():
                return True
            layer = getattr(layer, "transport_stream", None)
            continue
        protocol = getattr(layer, "_protocol", None)  # anyio's asyncio SocketStream
        if protocol is not None:
            queue = getattr(protocol, "read_queue", None)
            return queue is None or bool(queue) or bool(getattr(protocol, "is_at_eof", True))
        # trio's SocketStream and anyio's on trio read straight from the socket.
        return type(layer).__name__ != "SocketStream"
    return True


class Connection(Protocol):
    """What the pool needs of a connection: httpcore's (h11) or ``_wire``'s (httptools)."""

    key: Key
    #: The headers for the HTTP proxy its requests go to in absolute form, or ``None``.
    forward: list[tuple[bytes, bytes]] | None

    async def send(self, request: httpx.Request, give_back: GiveBack) -> httpx.Response:
        """Send ``request``; closing the response's body hands the connection to ``give_back``."""

    def is_idle(self) -> bool:
        """Whether it is reusable now (its last response was read to the end and closed)."""

    def has_expired(self) -> bool:
        """Whether an idle connection is too old, or holds bytes (unasked, or the close)."""

    def is_closed(self) -> bool:
        """Whether it was closed."""

    async def aclose(self) -> None:
        """Close it."""


GiveBack = Callable[[Connection], Awaitable[None]]
#: The error for an interim (1xx) answer with ``Content-Length`` or ``Transfer-Encoding``.
INTERIM_BODY = "the server announced a body in an interim (1xx) response"


def announces_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an interim answer's headers announce a body (RFC 9110 forbids it)."""
    return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)
