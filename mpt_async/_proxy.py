"""Which HTTP proxy a request goes through: the client's ``proxy=``, else the environment's.

One policy for every transport (mpt_async's pool, the aiohttp adapter, httpx's own): each
asks :meth:`Proxies.for_origin` and carries the request the same way, an ``https`` origin
through a ``CONNECT`` tunnel, an ``http`` one as an absolute-form request to the proxy.

The environment is read as httpx (and curl) read it, once, when the client is made:

- ``https_proxy`` for ``https`` origins, ``http_proxy`` for ``http`` ones, else
  ``all_proxy``; each in lower case first, then upper case (a lower-case variable set
  empty turns the upper-case one off). ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD``
  is set: in a CGI program, the client's ``Proxy:`` header becomes ``HTTP_PROXY``.
- ``no_proxy`` / ``NO_PROXY``: a comma-separated list of hosts that are reached directly.
  ``*`` is every host; ``example.com`` is that domain and its subdomains; ``.example.com``
  and ``*.example.com`` the subdomains only; an IP address, or a network
  (``10.0.0.0/8``); any of them with ``:port`` to apply to that port only.
- A value without a scheme is an ``http://`` proxy. An ``https://`` proxy is spoken to
  over TLS, trusting what the client trusts for the service (its ``verify=``); SOCKS
  proxies are refused.

An explicit ``proxy=`` is used for every request, whatever the environment says; with
``trust_env=False`` the environment is not read at all.

The proxy's credentials (``http://user:pass@proxy:3128``) are sent as
``Proxy-Authorization: Basic``, to the proxy only. They are kept out of every repr and
message: a proxy is shown as its scheme, host and port.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Callable, Mapping
from urllib.parse import unquote

import httpx

from mpt_async._redact import redact
from mpt_async._validate import refuse

__all__ = ["Proxies", "Proxy", "ProxyFailure", "check_proxy"]

_SOCKS = "pass an httpx.AsyncClient with a SOCKS transport as http_client= (httpx[socks])"
_Bypass = Callable[[str, int], bool]


class Proxy:
    """An HTTP proxy: its address, and the ``Proxy-Authorization`` it is sent (if any).

    Args:
        text: The proxy's URL, ``http[s]://[user:password@]host[:port]`` (``https``: the
            client speaks TLS to the proxy too, trusting what it trusts for the service).
        name: What the user knows it by (``proxy`` or a variable's name), for errors.

    Raises:
        ConfigurationError: Not a URL, a SOCKS proxy, or another scheme than ``http`` or
            ``https``.
    """

    __slots__ = ("authorization", "host", "port", "scheme", "url")

    def __init__(self, text: str, name: str = "proxy") -> None:
        if "://" not in text:
            text = f"http://{text}"
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL:
            refuse(name, "is not a valid proxy URL")  # never echoed: it may hold a password
        if url.scheme.startswith("socks"):
            refuse(
                name, f"names a SOCKS proxy, which the client's transports do not speak: {_SOCKS}"
            )
        if url.scheme not in ("http", "https") or not url.host:
            refuse(
                name,
                "must be an http:// or https:// proxy URL, such as http://proxy.example:3128 "
                "(for another kind, pass your own httpx.AsyncClient as http_client=)",
            )
        if url.port is not None and not 0 < url.port < 65536:
            refuse(name, f"has port {url.port}, outside 1..65535")
        self.scheme = url.scheme
        self.host = url.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        #: The proxy's address, shown wherever it is named: never its credentials.
        self.url = f"{self.scheme}://{self.address}"
        #: The ``Proxy-Authorization`` header's value, or ``None`` without credentials.
        self.authorization: bytes | None = None
        if url.userinfo:
            user, _, password = url.userinfo.decode("ascii").partition(":")
            pair = f"{unquote(user)}:{unquote(password)}".encode()
            self.authorization = b"Basic " + base64.b64encode(pair)

    def __repr__(self) -> str:
        credentials = ", with credentials" if self.authorization else ""
        return f"<Proxy {self.url}{credentials}>"

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The headers the proxy is sent with each request or ``CONNECT``."""
        if self.authorization is None:
            return []
        return [(b"Proxy-Authorization", self.authorization)]


def check_proxy(value: object) -> Proxy | None:
    """The ``proxy=`` option: ``None``, or a proxy URL string.

    Raises:
        ConfigurationError: Another type, or a URL no transport can use.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        refuse("proxy", f"must be a proxy URL string or None, not {type(value).__name__}")
    return Proxy(value)


class ProxyFailure(httpx.ProxyError):
    """The proxy could not be reached, refused the tunnel (``status``), or broke HTTP.

    Its message names the proxy's address only, and a refusal's status, never the reason
    phrase (which may echo what the proxy was sent). The request loop turns it into an
    :class:`~mpt_async.APIConnectionError` like any connection failure.
    """

    def __init__(
        self,
        proxy: Proxy,
        status: int | None = None,
        what: str = "",
        request: httpx.Request | None = None,
    ) -> None:
        said = what or (f"refused the tunnel (HTTP {status})" if status else "could not be reached")
        super().__init__(f"the proxy {proxy.address} {said}", request=request)
        self.proxy_address = proxy.address
        self.status = status


def _environment(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The proxy variables that are set: {"http"/"https"/"all"/"no": (name, value)}."""
    found: dict[str, tuple[str, str]] = {}
    for kind in ("http", "https", "all", "no"):
        names = [f"{kind}_proxy", f"{kind.upper()}_PROXY"]
        if kind == "http" and "REQUEST_METHOD" in environ:
            names.pop()  # CGI: HTTP_PROXY may come from the request (httpoxy)
        name = next((n for n in names if n in environ), None)
        if name is not None and environ[name].strip():
            found[kind] = (name, environ[name].strip())
    return found


def _shown(value: str) -> str:
    """A variable's value as it may be shown: a URL's password masked, even without a scheme."""
    shown = redact(value if "://" in value else f"http://{value}")
    return (shown if "://" in value else shown.removeprefix("http://"))[:200]


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` or a bare IPv6 address, as (host, port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    return host, int(port) if port.isdigit() else None


def _bypass(entry: str) -> _Bypass | None:
    """A ``no_proxy`` entry as a test of (host, port); ``None`` for an empty one."""
    entry = entry.strip().lower().partition("://")[2] or entry.strip().lower()
    host, port = _split_port(entry.rstrip("/"))
    if not host:
        return None
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:

        def on_host(name: str) -> bool:
            try:
                return ipaddress.ip_address(name) in network
            except ValueError:
                return False

    elif host.startswith(("*.", ".")):
        suffix = "." + host.lstrip("*.")

        def on_host(name: str) -> bool:
            return name.endswith(suffix)

    else:
        domain = host.lstrip("*")

        def on_host(name: str) -> bool:
            return name == domain or name.endswith("." + domain)

    return lambda name, number: on_host(name) and port in (None, number)


class Proxies:
    """The proxy for each origin a client calls (see the module's docstring).

    Args:
        proxy: The client's ``proxy=`` (used for every origin), or ``None``.
        trust_env: Whether the environment's proxy variables apply (without ``proxy=``).
        environ: The environment to read (``os.environ`` when ``None``), now; a variable's
            proxy URL is checked when an origin first needs it (see :meth:`for_origin`).
    """

    def __init__(
        self,
        proxy: Proxy | None = None,
        *,
        trust_env: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.explicit = proxy
        environ = os.environ if environ is None else environ
        found = _environment(environ) if proxy is None and trust_env else {}
        self._variables = found  # parsed when first needed: an unused one is no error
        self._parsed: dict[str, Proxy] = {}
        self._any = proxy is not None or any(kind in found for kind in ("http", "https", "all"))
        entries = found["no"][1].split(",") if "no" in found else []
        self._everything_direct = any(entry.strip() == "*" for entry in entries)
        self._bypass = [test for entry in entries if (test := _bypass(entry)) is not None]

    def __repr__(self) -> str:
        if self.explicit is not None:
            return f"<Proxies {self.explicit!r} (proxy=)>"
        said = [f"{name}={_shown(value)}" for name, value in self._variables.values()]
        return f"<Proxies {', '.join(said) or 'none'}>"

    def _proxy(self, kind: str) -> Proxy | None:
        proxy = self._parsed.get(kind)
        if proxy is None and kind in self._variables:
            name, value = self._variables[kind]
            proxy = self._parsed[kind] = Proxy(value, name)
        return proxy

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy to reach ``scheme://host:port`` through, or ``None``: go direct.

        Raises:
            ConfigurationError: The variable that applies names no usable proxy.
        """
        if self.explicit is not None:
            return self.explicit
        if not self._any or self._everything_direct:
            return None
        name = host.lower().strip("[]").rstrip(".")
        if any(test(name, port) for test in self._bypass):
            return None
        return self._proxy(scheme) or self._proxy("all")

    def for_url(self, url: httpx.URL) -> Proxy | None:
        """The proxy for ``url``'s origin, or ``None``."""
        port = url.port or (443 if url.scheme == "https" else 80)
        return self.for_origin(url.scheme, url.host, port)
