"""An httpx transport whose pool hands out httpcore's HTTP/1.1 connections in constant time.

Why: httpcore's own pool re-examines every queued request and every connection on each
state change, so under httpx's default transport a call costs more the more calls are in
flight. Here idle connections wait in a stack per origin and callers wait in a FIFO queue:
taking and giving back a connection costs the same at concurrency 1 and 10,000. The I/O is
httpcore's network backend, so it runs on asyncio and trio alike; responses are parsed in C
by httptools (``_wire.py``) when it is installed, else by httpcore's own HTTP/1.1
connection (h11, pure Python).

The rules: at most ``max_connections`` connections exist (connecting, busy or idle), at
most ``max_keepalive_connections`` are kept idle, and an idle one older than
``keepalive_expiry`` or closed by the server is dropped, not used. A connection goes back
to the pool only when its response was read to the end and closed; one whose request or
body was abandoned, failed or cancelled is closed. Waiting for a connection is bounded by
the request's ``pool`` timeout and connecting by its ``connect`` timeout.

One call, one answer: a connection holding any byte that no request asked for (bytes after
its answer, or arriving while it waited idle) is closed, never reused, since those bytes
would be read as the next call's answer. It is checked when it comes back and again when it
is taken, from the idle stack or handed straight to a queued caller (:func:`holds_unread`).

Nothing is kept for ever: idle connections that expired or were closed by the server are
swept out when a request comes (at most once a second), not left until reused; a response
body dropped without being closed (a stream left by ``break`` without ``async with``) gives
its connection back when it is collected, as httpcore's pool does: the event loop closes
its iterator, an async generator, in a task of its own. Closing the pool closes every
connection, busy ones too: each call in flight ends in an httpx error.
"""

from __future__ import annotations

import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal

import anyio
import h11
import httpcore
import httpx

from mpt_async._body import finish_iterator
from mpt_async._connection import (
    HTTPCORE_ERRORS,
    INTERIM_BODY,
    MAX_HEAD,
    Connection,
    GiveBack,
    Key,
    announces_body,
    holds_unread,
    mapped,
)
from mpt_async._proxy import Proxies, Proxy, ProxyFailure
from mpt_async._tls import TLS

__all__ = ["PoolTransport"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: The most seconds between two sweeps of the idle connections (at a request).
SWEEP_EVERY = 1.0


async def _tunnel(
    stream: httpcore.AsyncNetworkStream, proxy: Proxy, host: str, port: int, bound: float | None
) -> None:
    """Ask the HTTP proxy at the other end of ``stream`` for a tunnel to ``host:port``.

    ``CONNECT``, with the proxy's credentials if it has some. Its answer's head is parsed
    by h11 (there with every install; httptools is not) within the bound of any head, the
    whole exchange within ``bound`` seconds. On return the stream is the tunnel.

    Raises:
        ProxyFailure: A refusal (any status but 2xx), a broken or oversized answer, the
            proxy's close, or bytes after its answer.
        httpx.ConnectTimeout: No answer within ``bound``.
    """
    authority = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("ascii")
    machine = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    request = h11.Request(
        method=b"CONNECT", target=authority, headers=[(b"Host", authority), *proxy.headers]
    )
    try:
        with anyio.fail_after(bound):
            await stream.write(machine.send(request) + machine.send(h11.EndOfMessage()))
            answer = await _proxy_answer(machine, stream, proxy)
    except TimeoutError:
        raise httpx.ConnectTimeout("timed out waiting for the proxy's answer") from None
    except h11.RemoteProtocolError:
        raise ProxyFailure(proxy, what="broke the HTTP protocol") from None
    if not 200 <= answer.status_code < 300:
        raise ProxyFailure(proxy, answer.status_code)
    if machine.trailing_data[0]:
        raise ProxyFailure(proxy, what="sent bytes after accepting the tunnel")


async def _proxy_answer(
    machine: h11.Connection, stream: httpcore.AsyncNetworkStream, proxy: Proxy
) -> Any:
    """The proxy's final answer's head (interim ones skipped, all within ``MAX_HEAD``)."""
    received = 0
    while True:
        event = machine.next_event()
        if event is h11.NEED_DATA:
            data = await stream.read(64 * 1024)
            if not data:
                raise ProxyFailure(proxy, what="closed the connection without answering")
            received += len(data)
            if received > MAX_HEAD:
                raise h11.RemoteProtocolError("the answer's head is too long")
            machine.receive_data(data)
        elif isinstance(event, h11.Response):
            return event
        # else an interim (1xx) answer: skipped


def _default_backend() -> httpcore.AsyncNetworkBackend:
    """Httpcore's trio backend on trio (fewer layers), its anyio one on asyncio."""
    trio = sys.modules.get("trio")  # if trio was never imported, it is not running
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return httpcore.TrioBackend()
    return httpcore.AnyIOBackend()


_Opener = Callable[[Key, httpcore.AsyncNetworkStream, float | None], Connection]


class _H11Connection(httpcore.AsyncHTTP11Connection):
    """httpcore's HTTP/1.1 connection, labelled with the pool's key for its origin.

    Two checks are added to httpcore's: bytes that h11 received after the answer (it keeps
    them for the next response) make the connection stale, and an interim (1xx) answer that
    announces a body is refused (httpcore skips it, and its body would be read as the answer).
    """

    def __init__(self, key: Key, stream: httpcore.AsyncNetworkStream, expiry: float | None):
        super().__init__(httpcore.Origin(*key), stream, keepalive_expiry=expiry)
        self.key = key
        self._stream = stream
        self.forward: list[tuple[bytes, bytes]] | None = None

    def has_expired(self) -> bool:
        """Whether an idle connection is too old, or holds bytes (unasked, or the close)."""
        if super().has_expired():
            return True
        if not self.is_idle():
            return False
        data, closed = self._h11_state.trailing_data
        return bool(data) or closed or holds_unread(self._stream)

    async def _receive_event(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - httpcore's signature
        event = await super()._receive_event(timeout)
        if isinstance(event, h11.InformationalResponse) and announces_body(event.headers):
            raise httpcore.RemoteProtocolError(INTERIM_BODY)
        return event

    async def send(self, request: httpx.Request, give_back: GiveBack) -> httpx.Response:
        """Send ``request`` through httpcore; closing the body hands the connection back."""
        scheme, host, port = self.key
        target, headers = request.url.raw_path, request.headers.raw
        if self.forward is not None:  # to an HTTP proxy: the absolute URL, its headers
            target, headers = str(request.url).encode("ascii"), [*headers, *self.forward]
        response = await self.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(scheme=scheme, host=host, port=port, target=target),
                headers=headers,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(give_back, self, response.stream),
            extensions=response.extensions,
        )


def _opener(parser: Literal["httptools", "h11"] | None) -> _Opener:
    """The connection class for ``parser``; with ``None``, httptools' when it is installed."""
    if parser != "h11":
        try:
            from mpt_async._wire import Connection  # imports httptools
        except ModuleNotFoundError as exc:
            if parser is not None or exc.name != "httptools":
                raise
        else:
            return Connection
    return _H11Connection


class _Waiter:
    """A caller queued for a connection; ``given`` is what it was handed."""

    __slots__ = ("event", "given", "gone", "key", "served")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.event = anyio.Event()
        self.given: Connection | None = None
        self.served = False  # handed a connection, or a slot to open one in
        self.gone = False  # stopped waiting (served, timed out or cancelled)


class _Body(httpx.AsyncByteStream):
    """The body of an h11 response; closing it gives the connection back (or discards it)."""

    __slots__ = ("_chunks", "_connection", "_give_back", "_stream")

    def __init__(self, give_back: GiveBack, connection: _H11Connection, stream: Any) -> None:
        self._give_back: GiveBack | None = give_back
        self._connection = connection
        self._stream = stream
        self._chunks: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = self._stream.__aiter__()
        try:
            chunk: bytes = await chunks.__anext__()
        except HTTPCORE_ERRORS as exc:
            raise mapped(exc) from exc
        return chunk

    async def aclose(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
                if self._chunks is not None:
                    await finish_iterator(self._chunks)
            finally:
                await give_back(self._connection)


class _ClosedWhenCollected(httpx.AsyncByteStream):
    """A response body that is closed, its connection given back, if dropped unclosed.

    A stream left by ``break`` without ``async with`` is never closed by its caller. Its
    iterator is an async generator, so when it is collected the event loop (asyncio or
    trio) closes it in a task of its own, where I/O is allowed: the body is closed there.
    """

    __slots__ = ("_body",)

    def __init__(self, body: httpx.AsyncByteStream) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                yield chunk
        except BaseException:  # GeneratorExit when collected; any error or cancellation
            await self._body.aclose()
            raise

    async def aclose(self) -> None:
        await self._body.aclose()


class PoolTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over a constant-time pool of HTTP/1.1 connections.

    Works on every event loop anyio supports. HTTP proxies are spoken (a ``CONNECT``
    tunnel for ``https`` origins, absolute-form requests for ``http`` ones); HTTP/2 and
    SOCKS are not (use httpx's own transport for them).

    Args:
        limits: The pool's size, idle connections kept, and how long they are kept.
        tls: The TLS settings for ``https`` origins; httpx's default trust when ``None``.
        network_backend: httpcore's network backend; when ``None``, its trio backend on
            trio, its anyio one elsewhere.
        parser: What parses the responses: ``"httptools"`` (C), ``"h11"`` (httpcore's
            connection, pure Python); when ``None``, httptools if it is installed.
        proxies: Which proxy each origin is reached through; none when ``None``.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        tls: TLS | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        parser: Literal["httptools", "h11"] | None = None,
        proxies: Proxies | None = None,
    ) -> None:
        self._max = limits.max_connections
        self._keep = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._tls_settings = TLS() if tls is None else tls
        self._backend = network_backend
        self._parser = parser
        self._proxies = Proxies(trust_env=False) if proxies is None else proxies
        self._open: _Opener | None = None  # chosen at the first connection (imports lazily)
        self._idle: dict[Key, list[Connection]] = {}
        self._idle_count = 0
        self._count = 0  # connections that exist or are being opened
        self._connections: set[Connection] = set()
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self._sweep_every = min(SWEEP_EVERY, self._expiry or SWEEP_EVERY)
        self._sweep_at = 0.0

    @property
    def connections(self) -> int:
        """The connections open now (busy or idle)."""
        return len(self._connections)

    @property
    def idle_connections(self) -> int:
        """The idle connections kept for reuse."""
        return self._idle_count

    # -- sending ------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled connection; the response's body is streamed."""
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            msg = f"the connection pool speaks http and https, not {url.scheme!r}"
            raise httpx.UnsupportedProtocol(msg)
        key = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout") or {}
        connection = await self._acquire(key, timeouts.get("pool"))
        try:
            if connection is None:
                connection = await self._connect(key, timeouts.get("connect"))
            response = await connection.send(request, self._give_back)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._give_back(connection)
            if isinstance(exc, (*HTTPCORE_ERRORS, httpcore.ConnectionNotAvailable)):
                raise mapped(exc) from exc
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)  # both connections' bodies
        response.stream = _ClosedWhenCollected(response.stream)
        return response

    async def _connect(self, key: Key, bound: float | None) -> Connection:
        """Open a new connection to ``key`` (the caller holds a slot for it).

        Through a proxy: a tunnel for an ``https`` origin, then TLS to the origin inside
        it; for an ``http`` origin, a connection whose requests go to the proxy.
        """
        self._check_open()
        scheme, host, port = key
        name = host.decode("ascii")
        proxy = self._proxies.for_origin(scheme.decode("ascii"), name, port)
        stream = await self._open_stream(name, port, proxy, bound)
        try:
            if proxy is not None and scheme == b"https":
                await _tunnel(stream, proxy, name, port, bound)
            if scheme == b"https":
                stream = await stream.start_tls(self._tls(), server_hostname=name, timeout=bound)
            self._check_open()  # it may have been closed while connecting
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        if self._open is None:
            self._open = _opener(self._parser)
        connection = self._open(key, stream, self._expiry)
        if proxy is not None and scheme == b"http":
            connection.forward = proxy.headers
        self._connections.add(connection)
        return connection

    async def _open_stream(
        self, host: str, port: int, proxy: Proxy | None, bound: float | None
    ) -> httpcore.AsyncNetworkStream:
        """A TCP connection to ``host:port``, or to the proxy (failing as the proxy's fault).

        To an ``https://`` proxy, TLS is spoken with the client's one TLS context.
        """
        if self._backend is None:
            self._backend = _default_backend()
        if proxy is None:
            return await self._backend.connect_tcp(host, port, timeout=bound)
        try:
            stream = await self._backend.connect_tcp(proxy.host, proxy.port, timeout=bound)
        except httpcore.ConnectError as exc:
            raise ProxyFailure(proxy) from exc
        if proxy.scheme == "https":
            try:
                return await stream.start_tls(self._tls(), proxy.host, timeout=bound)
            except httpcore.ConnectError as exc:  # httpcore closed the stream
                raise ProxyFailure(proxy, what="could not be reached over TLS") from exc
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                raise
        return stream

    def _check_open(self) -> None:
        if self._closed:
            msg = "the connection pool is closed"
            raise httpx.ConnectError(msg)

    def _tls(self) -> ssl.SSLContext:
        return self._tls_settings.context()

    # -- the pool -------------------------------------------------------------------------

    async def _acquire(self, key: Key, bound: float | None) -> Connection | None:
        """An idle connection to ``key``, or ``None``: a slot to open a new one in."""
        if time.monotonic() >= self._sweep_at:
            await self._sweep()
        idle = self._idle.get(key)
        if idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            self._idle_count -= 1
            if not connection.has_expired():
                return connection
            await self._close(connection)
            return None  # its slot is ours
        if self._closed:
            msg = "the connection pool is closed"
            raise httpx.ConnectError(msg)
        if self._max is None or self._count < self._max:
            self._count += 1
            return None
        if self._idle_count:
            await self._evict_idle()
            return None  # an idle connection to another origin made room
        return await self._wait(key, bound)

    async def _wait(self, key: Key, bound: float | None) -> Connection | None:
        """Queue until a connection (or a slot) is handed over, for at most ``bound`` seconds."""
        waiter = _Waiter(key)
        self._waiters.append(waiter)
        try:
            with anyio.move_on_after(bound):
                await waiter.event.wait()
        except BaseException:
            waiter.gone = True
            if waiter.served:  # handed over just as we were cancelled: pass it on
                with anyio.CancelScope(shield=True):
                    await self._give_back(waiter.given)
            raise
        waiter.gone = True
        if not waiter.served:
            msg = "timed out waiting for a connection from the pool"
            raise httpx.PoolTimeout(msg)
        given = waiter.given
        if given is not None and given.has_expired():  # bytes came while it was handed over
            await self._close(given)
            return None  # its slot is ours
        return given

    async def _sweep(self) -> None:
        """Close the idle connections that expired, or hold bytes (the server's close, say)."""
        self._sweep_at = time.monotonic() + self._sweep_every
        stale: list[Connection] = []
        for key, idle in list(self._idle.items()):
            fresh = [connection for connection in idle if not connection.has_expired()]
            if len(fresh) < len(idle):
                stale += [connection for connection in idle if connection not in fresh]
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]
        self._idle_count -= len(stale)
        for connection in stale:
            await self._close(connection)
            await self._give_back(None)

    async def _evict_idle(self) -> None:
        """Close the oldest idle connection of some origin; its slot passes to the caller."""
        for key, idle in self._idle.items():
            if idle:
                connection = idle.pop(0)
                self._idle_count -= 1
                if not idle:
                    del self._idle[key]
                await self._close(connection)
                return

    async def _close(self, connection: Connection) -> None:
        """Close a connection; its slot stays counted (the caller decides what becomes of it)."""
        self._connections.discard(connection)
        if not connection.is_closed():
            with anyio.CancelScope(shield=True):
                await connection.aclose()

    async def _give_back(self, connection: Connection | None) -> None:
        """A connection (or, with ``None``, the slot of one never opened) comes back."""
        if connection is not None and (
            self._closed or not connection.is_idle() or connection.has_expired()
        ):
            # Not read to the end, failed or cancelled, holding bytes after its answer (or
            # the pool closed): never reused.
            await self._close(connection)
            connection = None
        waiter = self._next_waiter()
        if waiter is not None:
            if connection is not None and connection.key != waiter.key:
                await self._close(connection)
                connection = None  # the waiter opens its own in this slot
            waiter.given = connection
            waiter.served = True
            waiter.event.set()
        elif connection is None:
            self._count -= 1
        elif self._keep is not None and self._idle_count >= self._keep:
            await self._close(connection)
            self._count -= 1
        else:
            self._idle.setdefault(connection.key, []).append(connection)
            self._idle_count += 1

    def _next_waiter(self) -> _Waiter | None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.gone:
                return waiter
        return None

    async def aclose(self) -> None:
        """Close every connection; queued callers fail, later requests are refused."""
        self._closed = True
        self._idle.clear()
        self._idle_count = 0
        connections, self._connections = self._connections, set()
        with anyio.CancelScope(shield=True):
            for connection in connections:
                await connection.aclose()
        while (waiter := self._next_waiter()) is not None:
            waiter.served = True  # with a slot: _connect refuses on a closed pool
            waiter.event.set()
