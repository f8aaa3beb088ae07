"""httpx's own transport, under the client's one TLS and proxy policy.

Used only when asked (``MPT_ASYNC_TRANSPORT=httpx``). httpx would read the proxy variables
itself, with rules of its own; here the client's :class:`~mpt_async._proxy.Proxies` picks
the proxy of each origin, as it does for the other transports, and its failures are told
the same way (:class:`~mpt_async._proxy.ProxyFailure`).
"""

from __future__ import annotations

import re
import ssl

import httpx

from mpt_async._proxy import Proxies, Proxy, ProxyFailure
from mpt_async._tls import TLS

__all__ = ["HttpxTransport"]

_STATUS = re.compile(r"(\d{3})\b")


def _tls_failed(exc: BaseException) -> bool:
    """Whether a TLS handshake failed somewhere in ``exc``'s chain (then the origin is at fault)."""
    node: BaseException | None = exc
    for _ in range(10):
        if node is None:
            return False
        if isinstance(node, ssl.SSLError):
            return True
        node = node.__cause__ or node.__context__
    return False


class HttpxTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the client's TLS context, and one more per proxy in use.

    Args:
        limits: The pool limits (for each of the transports).
        tls: The client's TLS settings.
        proxies: Which proxy each origin is reached through.
    """

    def __init__(self, limits: httpx.Limits, tls: TLS, proxies: Proxies) -> None:
        super().__init__(verify=tls.context(), limits=limits)
        self._limits = limits
        self._context = tls.context()
        self._proxies = proxies
        self._through: dict[str, httpx.AsyncHTTPTransport] = {}

    def _transport(self, proxy: Proxy) -> httpx.AsyncHTTPTransport:
        transport = self._through.get(proxy.url)
        if transport is None:
            headers = {name.decode(): value.decode() for name, value in proxy.headers}
            context = self._context if proxy.scheme == "https" else None  # TLS to the proxy
            transport = self._through[proxy.url] = httpx.AsyncHTTPTransport(
                verify=self._context,
                limits=self._limits,
                proxy=httpx.Proxy(proxy.url, ssl_context=context, headers=headers),
            )
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, directly or through its origin's proxy."""
        proxy = self._proxies.for_url(request.url)
        if proxy is None:
            return await super().handle_async_request(request)
        try:
            return await self._transport(proxy).handle_async_request(request)
        except httpx.ProxyError as exc:  # the proxy refused the tunnel: "407 <reason>"
            status = _STATUS.match(str(exc))
            code = int(status.group(1)) if status else None
            raise ProxyFailure(proxy, code, request=request) from exc
        except httpx.ConnectError as exc:
            if _tls_failed(exc):  # the origin's certificate, through the tunnel
                raise
            raise ProxyFailure(proxy, request=request) from exc

    async def aclose(self) -> None:
        """Close the direct connections and those through each proxy."""
        await super().aclose()
        for transport in self._through.values():
            await transport.aclose()
