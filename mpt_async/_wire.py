"""One HTTP/1.1 connection whose responses are parsed in C, by httptools (llhttp).

The pool (``_pool.py``) uses it when httptools is installed, in place of httpcore's h11
connection, whose pure-Python parsing was the largest share of a call's cost on trio. The
I/O stays httpcore's: its network backend's stream connects, speaks TLS, and bounds each
read and write by the request's timeouts. This module only writes the request's bytes (head,
then body) and feeds the bytes it reads to ``httptools.HttpResponseParser``, which calls back
with the status, each header and each piece of the body.

A connection serves one exchange at a time. It is idle again (reusable) only when the
request went out whole, its HTTP/1.1 response was read to the end, and neither side asked
to close (``Connection: close``, or a body ended by the close); h11 never reuses HTTP/1.0
connections, nor does this module. Anything else leaves it to be closed: a body abandoned
half way, a failure, a cancellation, the answer to a HEAD request (whose length is the
server's word). Interim (1xx) answers are skipped; a 101 is refused (no upgrade is ever
asked), as h11 refuses it, and so is an interim answer announcing a body (llhttp would read
one, and the pool's h11 connection refuses it too). Any byte after the answer spoils the
connection, and so does one that is waiting when it is taken again (``has_expired``).

The head, interim ones included, is refused beyond :data:`MAX_HEAD` bytes (the limit
httpcore sets for h11, so both parsers refuse the same heads), and so are as many bytes
after it without a byte of body (endless chunk framing or trailers). A broken or truncated
response raises httpcore's ``RemoteProtocolError``, which the pool maps to httpx's like
any other httpcore error.
"""

from __future__ import annotations

import re
import time
from typing import Final

import httpcore
import httptools
import httpx

from mpt_async._connection import (
    HTTPCORE_ERRORS,
    INTERIM_BODY,
    MAX_HEAD,
    GiveBack,
    Key,
    announces_body,
    holds_unread,
    mapped,
)

__all__ = ["MAX_HEAD", "Connection"]

_READ: Final = 64 * 1024
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_FIELD = re.compile(rb"[^\x00\r\n]*").fullmatch
_TARGET = re.compile(rb"[^\x00-\x20\x7f]+").fullmatch
_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}


def _refuse(what: str) -> httpcore.LocalProtocolError:
    return httpcore.LocalProtocolError(f"the request's {what} would break HTTP/1.1 framing")


def _head(
    request: httpx.Request, forward: list[tuple[bytes, bytes]] | None = None
) -> tuple[bytes, bool, bool]:
    """The request's head; whether its body is chunked; whether it asks to close.

    With ``forward`` (the headers for an HTTP proxy), the head is for that proxy: its target
    is the absolute URL, and those headers are added.

    Raises:
        httpcore.LocalProtocolError: A method, target, header name or value that would
            break the framing (a CR or LF in a value, a space in a name, ...), or a
            transfer coding other than chunked.
    """
    method = request.method.encode("ascii", "replace")
    target = request.url.raw_path if forward is None else str(request.url).encode("ascii")
    if not _TOKEN(method) or not _TARGET(target):
        raise _refuse("method or target")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    chunked = close = False
    for name, value in [*request.headers.raw, *(forward or ())]:
        if not _TOKEN(name) or not _FIELD(value):
            raise _refuse("headers")
        lower = name.lower()
        if lower == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise _refuse("transfer coding")
            chunked = True
        elif lower == b"connection":
            close = b"close" in value.lower()
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked, close


def _known_body(request: httpx.Request) -> bytes | None:
    """The request's body when httpx already holds it whole (then it goes in one write)."""
    if isinstance(request.stream, httpx.ByteStream):
        try:
            return request.content
        except httpx.RequestNotRead:
            return None
    return None


class Connection:
    """An HTTP/1.1 connection to the pool's origin ``key``, over httpcore's ``stream``.

    Its parser's callbacks (``on_...``) are its own methods. Between exchanges it keeps
    the one parser, which llhttp resets at each message.

    Args:
        key: The pool's key for the origin (scheme, host, port).
        stream: The connected (and, for https, TLS) stream of httpcore's network backend.
        expiry: Seconds an idle connection is kept (``None``: no limit).
    """

    __slots__ = (
        "_bare",
        "_closed",
        "_expire_at",
        "_expiry",
        "_head_done",
        "_head_size",
        "_headers",
        "_idle",
        "_interim_body",
        "_method",
        "_parser",
        "_reason",
        "_reusable",
        "_status",
        "_stream",
        "chunks",
        "complete",
        "forward",
        "key",
    )

    def __init__(self, key: Key, stream: httpcore.AsyncNetworkStream, expiry: float | None) -> None:
        self.key = key
        self._stream = stream
        self._expiry = expiry
        self._expire_at: float | None = None
        self._idle = False  # a new connection goes to whoever opened it
        self._closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._method = ""
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = self._bare = 0
        self._head_done = False
        self._interim_body = False
        self._reusable = False
        #: Body bytes parsed and not yet handed out.
        self.chunks: list[bytes] = []
        #: The response was read to its end.
        self.complete = False
        #: The headers for the HTTP proxy the requests go to (absolute-form), or ``None``.
        self.forward: list[tuple[bytes, bytes]] | None = None

    # -- the pool's view -----------------------------------------------------------------

    def is_idle(self) -> bool:
        """Whether it waits, reusable, for the next exchange."""
        return self._idle

    def is_closed(self) -> bool:
        """Whether it was closed."""
        return self._closed

    def has_expired(self) -> bool:
        """Whether an idle connection is too old, or holds bytes (unasked, or the close)."""
        if self._expire_at is not None and time.monotonic() > self._expire_at:
            return True
        return self._idle and holds_unread(self._stream)

    async def aclose(self) -> None:
        """Close the network stream (once); it is never used again."""
        self._idle = False
        if not self._closed:
            self._closed = True
            await self._stream.aclose()

    # -- one exchange ----------------------------------------------------------------------

    async def send(self, request: httpx.Request, give_back: GiveBack) -> httpx.Response:
        """Send ``request`` and read its answer's head; the body streams from the response.

        Closing the response's body hands this connection to ``give_back`` (the pool's),
        idle again if it can be reused. On any error or cancellation here it is left busy:
        the caller gives it back, and the pool closes it.

        Raises:
            httpcore.LocalProtocolError: A request that cannot be written as HTTP/1.1.
            httpcore.RemoteProtocolError: A broken, truncated or oversized response head, or
                a 101.
            httpcore.TimeoutException: A write or read outlasted its timeout.
            httpcore.NetworkError: The connection failed.
        """
        head, chunked, close = _head(request, self.forward)
        self._begin(request.method)
        timeouts = request.extensions.get("timeout") or {}
        try:
            await self._write(request, head, chunked, timeouts.get("write"))
        except httpcore.WriteError:
            close = True  # the server may have answered early (an error): read it
        self._reusable = not close
        read = timeouts.get("read")
        while not self._head_done:
            await self.receive(read)
        if self._status == 101:
            msg = "the server switched protocols (101) though no upgrade was asked"
            raise httpcore.RemoteProtocolError(msg)
        version = _VERSIONS.get(self._parser.get_http_version(), b"HTTP/1.0")
        if version != b"HTTP/1.1":
            self._reusable = False  # like h11: HTTP/1.0 connections are not kept
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=_Body(self, give_back, read),
            extensions={"http_version": version, "reason_phrase": self._reason},
        )

    def _begin(self, method: str) -> None:
        self._idle = False
        self._expire_at = None
        self._method = method
        self._reason = b""
        self._headers = []
        self._head_size = self._bare = 0
        self._head_done = self.complete = self._reusable = self._interim_body = False
        self.chunks.clear()

    async def _write(
        self, request: httpx.Request, head: bytes, chunked: bool, timeout: float | None
    ) -> None:
        """Write the head and the body (in chunked coding if so announced)."""
        write = self._stream.write
        body = None if chunked else _known_body(request)
        if body is not None:
            await write(head + body, timeout)
            return
        stream = request.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            msg = "the pool sends only asynchronous request bodies"
            raise TypeError(msg)
        pending = head
        async for chunk in stream:
            if chunk:
                pending += b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
                await write(pending, timeout)
                pending = b""
        if chunked:
            pending += b"0\r\n\r\n"
        if pending:
            await write(pending, timeout)

    async def receive(self, timeout: float | None) -> None:
        """Read once and parse what came; at the end of the stream, end or fail the response.

        Raises:
            httpcore.RemoteProtocolError: A broken or oversized head, or a response cut short.
        """
        data = await self._stream.read(_READ, timeout=timeout)
        if data:
            self._feed(data)
        else:
            self._end_of_stream()

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reusable = False  # a 101, refused by send(): what follows is not HTTP
        except httptools.HttpParserError as exc:
            self._reusable = False
            if not self.complete:  # else: garbage after the answer spoils only the connection
                msg = f"the server broke the HTTP protocol ({exc})"
                raise httpcore.RemoteProtocolError(msg) from None
        if self._interim_body:
            self._reusable = False
            raise httpcore.RemoteProtocolError(INTERIM_BODY)
        if not self._head_done:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                msg = f"the response's head is longer than {MAX_HEAD} bytes"
                raise httpcore.RemoteProtocolError(msg)
        elif not self.complete:  # bytes since the last piece of body: chunk framing, trailers
            self._bare += len(data)
            if self._bare > MAX_HEAD:
                msg = f"the response's chunk framing or trailers run over {MAX_HEAD} bytes"
                raise httpcore.RemoteProtocolError(msg)

    def _end_of_stream(self) -> None:
        self._reusable = False
        if not self._head_done:
            what = "the whole head of a response" if self._head_size else "a response"
            msg = f"the server disconnected without sending {what}"
            raise httpcore.RemoteProtocolError(msg)
        if not self.complete:
            if not self._ends_at_close():
                msg = "the server closed the connection before the end of the body (incomplete)"
                raise httpcore.RemoteProtocolError(msg)
            self.complete = True

    def _ends_at_close(self) -> bool:
        """Whether the body is delimited by the close (no length given, and not chunked)."""
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                return False
            if lower == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
                return False
        return True

    def release(self) -> None:
        """The exchange is over: idle again if reusable (else the pool closes it)."""
        if self.complete and self._reusable and not self._closed:
            self._idle = True
            if self._expiry is not None:
                self._expire_at = time.monotonic() + self._expiry

    # -- the parser's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A response begins: one after the answer spoils reuse; else a fresh head."""
        if self._head_done:
            self._reusable = False
        else:
            self._reason = b""
            self._headers = []

    def on_status(self, status: bytes) -> None:
        """A piece of the reason phrase."""
        if not self._head_done:
            self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        """A whole header line."""
        if not self._head_done:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """A head ends: the answer's, unless interim (1xx but 101) or after the answer."""
        if self._head_done:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim_body = self._interim_body or announces_body(self._headers)
            return
        self._status = status
        self._head_done = True
        if self._method == "HEAD":  # no body, whatever the head says of one
            self.complete = True
            self._reusable = False

    def on_body(self, body: bytes) -> None:
        """A piece of the answer's body (never an interim answer's, nor one after the answer)."""
        self._bare = 0
        if self._head_done and not self.complete:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        """A response ends: the answer is complete (interim ones are not the answer)."""
        if self._head_done and not self.complete:
            self.complete = True
            self._reusable = self._reusable and self._parser.should_keep_alive()


class _Body(httpx.AsyncByteStream):
    """The answer's body as it arrives; closing it hands the connection to the pool."""

    __slots__ = ("_connection", "_give_back", "_timeout")

    def __init__(self, connection: Connection, give_back: GiveBack, timeout: float | None):
        self._connection: Connection | None = connection
        self._give_back = give_back
        self._timeout = timeout

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        chunks = connection.chunks
        try:
            while not chunks:
                if connection.complete:
                    raise StopAsyncIteration
                await connection.receive(self._timeout)
        except HTTPCORE_ERRORS as exc:
            raise mapped(exc) from exc
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    async def aclose(self) -> None:
        """Hand the connection back: idle if read to the end and reusable, else closed.

        Nothing here waits before the pool shields its close, so a cancellation cannot
        leave the connection half given back.
        """
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()
            await self._give_back(connection)
