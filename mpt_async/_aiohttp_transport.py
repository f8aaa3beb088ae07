"""An httpx transport that sends through aiohttp, used on asyncio when aiohttp is installed.

Why: httpcore's connection pool re-examines every queued request on every state change, so
its cost per request grows with the number of requests in flight (at concurrency 100 a call
costs several times what it costs alone). aiohttp's connector hands connections out in O(1)
and parses HTTP in C. httpx stays the client's interface (timeouts, requests, responses);
only the wire work moves. On trio (or without aiohttp) ``mpt_async._pool`` is used.

One call, one answer: aiohttp keeps reading an idle connection, and parses what comes as
the next request's answer. Its connector checks a connection's age and liveness when it
hands it out; this one also refuses a connection holding bytes no request asked for (a
response parsed, or a piece of one, or bytes still in the socket): it is closed instead.
"""

from __future__ import annotations

import functools
import importlib.util
import select
import sys
import weakref
from typing import Any

import httpx

from mpt_async._logging import logger
from mpt_async._proxy import Proxies, Proxy, ProxyFailure
from mpt_async._tls import TLS

#: aiohttp (and asyncio) are imported on first use: they cost more than all the rest.
aiohttp: Any = None
asyncio: Any = None
_Connector: Any = None

__all__ = ["AIOHTTP_AVAILABLE", "AiohttpTransport", "AutoTransport"]

#: Whether aiohttp is installed (found without importing it).
AIOHTTP_AVAILABLE = importlib.util.find_spec("aiohttp") is not None


def _load_aiohttp() -> None:
    global aiohttp, asyncio, _Connector  # lazy imports, done once
    if aiohttp is None:
        import asyncio as asyncio_module

        import aiohttp as module

        asyncio, aiohttp = asyncio_module, module
        _Connector = _connector_class()


def _connector_class() -> Any:
    class Connector(aiohttp.TCPConnector):  # type: ignore[misc]
        """aiohttp's connector, which never hands out a connection holding unasked bytes."""

        async def _get(self, *args: Any) -> Any:
            while (connection := await super()._get(*args)) is not None:
                if not _holds_unread(connection.protocol):
                    return connection
                connection.close()  # not reusable: aiohttp closes it
            return None

    return Connector


def _holds_unread(protocol: Any) -> bool:
    """Whether an idle aiohttp connection received bytes: parsed, pending, or in the socket."""
    if protocol is None or protocol.should_close:  # a response parsed, or its tail
        return True
    transport = protocol.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    fd = sock.fileno() if sock is not None else -1
    return fd < 0 or _readable(fd)


def _readable(fd: int) -> bool:
    """Whether the socket ``fd`` has bytes (or its end) to read now.

    ``poll`` where there is one: ``select`` refuses a descriptor numbered 1024 or more (a
    client with a thousand connections open has them), and costs more.
    """
    if _poll is None:  # pragma: no cover - Windows
        return bool(select.select([fd], [], [], 0)[0])
    poller = _poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


_poll = getattr(select, "poll", None)


def _on_asyncio() -> bool:
    # If asyncio was never imported, no asyncio loop can be running.
    running = sys.modules.get("asyncio")
    if running is None:
        return False
    try:
        running.get_running_loop()
    except RuntimeError:
        return False
    return True


_CLOSED = "the connection pool is closed"
#: Whether asyncio can start TLS over a TLS connection (an https service via an https proxy).
_TLS_IN_TLS = sys.version_info >= (3, 11)


def _cancelling() -> bool:
    """Whether the running task is being cancelled (on Python 3.10, assume it is)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _timeout(request: httpx.Request) -> Any:
    bounds = request.extensions.get("timeout") or {}
    return _client_timeout(bounds.get("pool"), bounds.get("connect"), bounds.get("read"))


@functools.lru_cache(maxsize=32)  # a few distinct bounds per client: made once each
def _client_timeout(pool: float | None, connect: float | None, read: float | None) -> Any:
    return aiohttp.ClientTimeout(
        total=None,
        connect=pool,  # aiohttp's "connect" includes waiting for the pool
        sock_connect=connect,
        sock_read=read,
    )


def _translate(
    exc: BaseException, request: httpx.Request, proxy: Proxy | None = None
) -> httpx.TransportError:
    """Turn aiohttp's failure into the httpx exception a caller of httpx expects."""
    if proxy is not None and isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ProxyFailure(proxy, request=request)
    if proxy is not None and isinstance(exc, aiohttp.ClientHttpProxyError):
        return ProxyFailure(proxy, exc.status, request=request)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return httpx.ConnectTimeout(str(exc) or "connect timed out", request=request)
        return httpx.ReadTimeout(str(exc) or "read timed out", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return httpx.ReadError(str(exc) or type(exc).__name__, request=request)


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as an httpx byte stream (a plain iterator, no generator)."""

    __slots__ = ("_request", "_response")

    def __init__(self, response: Any, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk: bytes = await self._response.content.readany()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc, self._request) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def abandon(self) -> None:
        """Fail a read in progress: the transport is closing under it.

        aiohttp's connection close drops the body's reader without waking it, so a read in
        flight would wait for its read bound (and forever without one).
        """
        response = self._response
        if not response.content.is_eof():
            response.content.set_exception(aiohttp.ClientConnectionError(_CLOSED))
        response.close()

    async def aclose(self) -> None:
        response = self._response
        if response.content.is_eof():
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # unread body: the connection cannot be reused


def _routed(request: httpx.Request, proxy: Proxy | None) -> dict[str, Any]:
    """The request's headers and proxy, as aiohttp's keyword arguments.

    The proxy's credentials go on the ``CONNECT`` for an ``https`` origin, and on the
    request itself (which goes to the proxy) for an ``http`` one.
    """
    headers = request.headers.multi_items()
    if proxy is None:
        return {"headers": headers}
    credentials = [(name.decode(), value.decode()) for name, value in proxy.headers]
    if request.url.scheme == "https":
        return {"headers": headers, "proxy": proxy.url, "proxy_headers": dict(credentials)}
    return {"headers": headers + credentials, "proxy": proxy.url}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with an aiohttp session (asyncio only).

    Args:
        max_connections: The pool's size.
        tls: The TLS settings for ``https`` origins; httpx's default trust when ``None``.
        proxies: Which proxy each origin is reached through; none when ``None``.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        tls: TLS | None = None,
        proxies: Proxies | None = None,
    ) -> None:
        if not AIOHTTP_AVAILABLE:  # pragma: no cover
            msg = "the aiohttp transport needs aiohttp: pip install 'mpt-async[speed]'"
            raise RuntimeError(msg)
        self._max_connections = max_connections
        self._tls = TLS() if tls is None else tls
        self._proxies = Proxies(trust_env=False) if proxies is None else proxies
        self._session: Any = None
        self._closed = False
        self._bodies: weakref.WeakSet[_Body] = weakref.WeakSet()  # to fail on close

    def _open(self) -> Any:
        _load_aiohttp()
        connector = _Connector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=self._tls.context(),  # the client's one trust, not aiohttp's own default
        )
        # No cookie jar, no decompression, no automatic headers: httpx has set them all.
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    @property
    def is_closed(self) -> bool:
        """Whether it was closed."""
        return self._closed

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return its response with a streamed body."""
        if self._closed:
            raise httpx.ConnectError(_CLOSED, request=request)
        session = self._session
        if session is None:
            session = self._session = self._open()
        proxy = self._proxies.for_url(request.url)
        try:
            response = await session.request(
                request.method,
                str(request.url),
                data=request.content,
                timeout=_timeout(request),
                allow_redirects=False,
                compress=None,
                **_routed(request, proxy),
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc, request, proxy) from exc
        except asyncio.CancelledError:
            if self.is_closed and not _cancelling():  # aiohttp cancels its waiters on close
                raise httpx.ConnectError(_CLOSED, request=request) from None
            raise
        body = _Body(response, request)
        self._bodies.add(body)
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=body,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        """Close the session and its connections; calls in flight fail, later ones too."""
        self._closed = True
        for body in list(self._bodies):
            body.abandon()
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class AutoTransport(httpx.AsyncBaseTransport):
    """aiohttp on asyncio, the constant-time httpcore pool elsewhere (trio), chosen per request.

    Args:
        limits: The pool limits for both transports.
        tls: The TLS settings for both; httpx's default trust when ``None``.
        proxies: Which proxy each origin is reached through, for both; none when ``None``.
    """

    def __init__(
        self, limits: httpx.Limits, tls: TLS | None = None, proxies: Proxies | None = None
    ) -> None:
        self._limits = limits
        self._tls = TLS() if tls is None else tls
        self._proxies = proxies
        self._httpx: httpx.AsyncBaseTransport | None = None
        self._aiohttp: AiohttpTransport | None = None
        self._closed = False
        self._said_tls_in_tls = False

    def _aiohttp_can(self, request: httpx.Request) -> bool:
        """Whether aiohttp can carry ``request``: not TLS in TLS before Python 3.11.

        An ``https`` service through an ``https://`` proxy needs asyncio's ``start_tls`` over
        a TLS connection, which Python 3.10 lacks: such calls go through the pool (said once
        at DEBUG).
        """
        if _TLS_IN_TLS or self._proxies is None or request.url.scheme != "https":
            return True
        proxy = self._proxies.for_url(request.url)
        if proxy is None or proxy.scheme != "https":
            return True
        if not self._said_tls_in_tls:
            self._said_tls_in_tls = True
            logger.debug(
                "calls to %s through %r go through mpt_async's pool: aiohttp cannot speak TLS "
                "inside TLS before Python 3.11",
                request.url.host,
                proxy,
            )
        return False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the transport that suits the running event loop."""
        if self._closed:
            raise httpx.ConnectError(_CLOSED, request=request)
        if _on_asyncio() and self._aiohttp_can(request):
            transport: httpx.AsyncBaseTransport | None = self._aiohttp
            if transport is None:
                transport = self._aiohttp = AiohttpTransport(
                    max_connections=self._limits.max_connections or 100,
                    tls=self._tls,
                    proxies=self._proxies,
                )
        else:
            transport = self._httpx
            if transport is None:
                from mpt_async._pool import PoolTransport  # not needed on asyncio

                transport = self._httpx = PoolTransport(
                    limits=self._limits, tls=self._tls, proxies=self._proxies
                )
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Close whichever transports were opened; later requests are refused."""
        self._closed = True
        for transport in (self._aiohttp, self._httpx):
            if transport is not None:
                await transport.aclose()
