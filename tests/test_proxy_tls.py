"""One TLS trust and one proxy policy, whichever transport carries the calls.

Over real sockets: the emulator serves the calls; in front of it, a TLS-terminating pipe
written here (with a throwaway CA from ``trustme``, which no default trust knows) serves
``https``, and a byte-level forward proxy written here (``CONNECT`` tunnels, absolute-form
requests) records what it was sent. Each case runs on every transport the client may carry
its calls on: the pool with httptools and with h11 and httpx's own (asyncio and trio), and
aiohttp (asyncio).
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import ssl
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.streams.tls
import httpx
import pytest
import trustme

import mpt_async
from mpt_async import _aiohttp_transport, _pool
from mpt_async._aiohttp_transport import AIOHTTP_AVAILABLE, AutoTransport
from mpt_async._proxy import Proxies
from mpt_async._tls import TLS
from mpt_async.testing import Emulator

from .clientkit import FAST, HI, chat_requests


def token_client(emulator: Emulator, base_url: str = "", **kwargs: Any) -> mpt_async.Client:
    """A client with the emulator's keys, calling ``base_url`` (the emulator's by default)."""
    kwargs.setdefault("backoff", FAST)
    auth = mpt_async.AccessTokenAuth(emulator.api_key, emulator.secret_key)
    return mpt_async.Client(auth=auth, base_url=base_url or emulator.base_url, **kwargs)


pytestmark = pytest.mark.anyio

#: (event loop, transport): each transport a client may carry its calls on.
ROUTES = [
    ("asyncio", "pool-httptools"),
    ("asyncio", "pool-h11"),
    ("asyncio", "aiohttp"),
    ("asyncio", "httpx"),
    ("trio", "pool-httptools"),
    ("trio", "pool-h11"),
    ("trio", "httpx"),
]
_ENV = {"pool-httptools": "pool", "pool-h11": "pool", "aiohttp": "aiohttp", "httpx": "httpx"}
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(params=ROUTES, ids=["-".join(route) for route in ROUTES])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """An event loop and the transport a client made now picks (through the environment)."""
    loop, name = request.param
    if name == "aiohttp" and not AIOHTTP_AVAILABLE:
        pytest.skip("aiohttp is not installed")
    if name == "pool-httptools" and importlib.util.find_spec("httptools") is None:
        pytest.skip("httptools is not installed")
    monkeypatch.setenv("MPT_ASYNC_TRANSPORT", _ENV[name])
    if name == "pool-h11":  # what a plain install (no httptools) gets
        monkeypatch.setattr(_pool, "_opener", lambda parser: _pool._H11Connection)
    for variable in _PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return loop, name


@pytest.fixture
def anyio_backend(route: tuple[str, str]) -> str:
    """The route's event loop."""
    return route[0]


def carrier(client: mpt_async.Client) -> str:
    """What carried the client's calls, found in its objects (not in what it says)."""
    wire: Any = client._request_loop.http._transport
    if isinstance(wire, AutoTransport):
        return "aiohttp"
    if isinstance(wire, _pool.PoolTransport):
        opened = wire._open  # the connection class chosen at the first connection
        return "pool-h11" if opened is _pool._H11Connection else "pool-httptools"
    return "httpx" if isinstance(wire, httpx.AsyncHTTPTransport) else type(wire).__name__


# -- a TLS front for the emulator ------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority, unknown to any default trust."""
    return trustme.CA()


@pytest.fixture
def ca_path(ca: trustme.CA, tmp_path: Path) -> Path:
    """The CA's certificate as a PEM file."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@asynccontextmanager
async def listening(
    serve: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """Serve each connection to a free loopback port (yielded) in a task, until the block ends."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield listener.extra(anyio.abc.SocketAttribute.local_port)
        finally:
            tg.cancel_scope.cancel()


class Front:
    """Counts the TLS handshakes it completed and those the client broke off."""

    def __init__(self) -> None:
        self.url = ""
        self.handshakes = 0
        self.refused = 0


async def _pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, OSError):
        async for data in source:
            await sink.send(data)


async def pipe_both(a: anyio.abc.ByteStream, b: anyio.abc.ByteStream) -> None:
    """Copy bytes both ways until either side ends, then close both."""
    async with a, b, anyio.create_task_group() as tg:

        async def one_way(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
            await _pipe(source, sink)
            tg.cancel_scope.cancel()

        tg.start_soon(one_way, a, b)
        tg.start_soon(one_way, b, a)


@asynccontextmanager
async def tls_front(emulator: Emulator, ca: trustme.CA) -> AsyncIterator[Front]:
    """An ``https`` address for the emulator: TLS ends here, and the bytes go on to it."""
    front = Front()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    target = httpx.URL(emulator.base_url)

    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client:  # closed however this ends (cancelled by the test's end too)
            try:
                with anyio.fail_after(30):
                    tls = await anyio.streams.tls.TLSStream.wrap(
                        client, server_side=True, ssl_context=context, standard_compatible=False
                    )
            except Exception:  # the client refused our certificate
                front.refused += 1
                return
            front.handshakes += 1
            with suppress(OSError):
                upstream = await anyio.connect_tcp(target.host, target.port or 80)
                await pipe_both(tls, upstream)

    async with listening(serve) as port:
        front.url = f"https://127.0.0.1:{port}"
        yield front


# -- TLS: one trust on every transport -------------------------------------------------------


async def test_verify_with_a_ca_bundle_reaches_the_service_over_tls(
    emulator: Emulator, ca: trustme.CA, ca_path: Path, route: tuple[str, str]
) -> None:
    """``verify=<CA bundle>`` trusts that CA: calls and streams go over TLS, on each transport."""
    async with tls_front(emulator, ca) as front:
        async with token_client(emulator, front.url, verify=str(ca_path), max_retries=0) as client:
            assert (await client.chat(HI)).result
            async with client.chat_stream(HI) as stream:
                assert [chunk async for chunk in stream][-1].is_end
            assert carrier(client) == route[1]
        assert front.handshakes >= 1
        assert front.refused == 0
    assert len(chat_requests(emulator)) == 2


async def test_the_default_trust_refuses_an_unknown_ca_typed(
    emulator: Emulator, ca: trustme.CA, route: tuple[str, str]
) -> None:
    """With the default trust (certifi), a certificate from an unknown CA is refused, typed."""
    async with tls_front(emulator, ca) as front:
        async with token_client(emulator, front.url, max_retries=0) as client:
            with pytest.raises(mpt_async.APIConnectionError) as caught:
                await client.chat(HI)
        assert "TLS" in str(caught.value)
        assert front.handshakes == 0
    assert emulator.requests == []


async def test_an_ssl_context_is_used_as_it_is(
    emulator: Emulator, ca: trustme.CA, route: tuple[str, str]
) -> None:
    """``verify=<ssl.SSLContext>``: that very context checks the server, on each transport."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with tls_front(emulator, ca) as front:
        async with token_client(emulator, front.url, verify=context) as client:
            assert (await client.chat(HI)).result
        assert front.handshakes >= 1


async def test_ssl_cert_file_replaces_the_default_trust_unless_trust_env_is_false(
    emulator: Emulator,
    ca: trustme.CA,
    ca_path: Path,
    route: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``SSL_CERT_FILE`` is the default trust when set, as in httpx; not with ``trust_env=False``."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
    async with tls_front(emulator, ca) as front:
        async with token_client(emulator, front.url) as client:
            assert (await client.chat(HI)).result
        async with token_client(emulator, front.url, trust_env=False, max_retries=0) as client:
            with pytest.raises(mpt_async.APIConnectionError, match="TLS"):
                await client.chat(HI)


async def test_verify_false_skips_the_check(
    emulator: Emulator, ca: trustme.CA, route: tuple[str, str]
) -> None:
    """``verify=False`` (tests only) accepts any certificate."""
    async with tls_front(emulator, ca) as front:
        async with token_client(emulator, front.url, verify=False) as client:
            assert (await client.chat(HI)).result


def test_the_default_trust_is_made_once_and_shared(
    ca_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients share the default context (reading certifi costs), one per trust in force."""
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    certifi = TLS().context()
    assert TLS().context() is certifi
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
    assert TLS().context() is not certifi
    assert TLS(trust_env=False).context() is TLS(trust_env=False).context()
    assert TLS(False).context().verify_mode == ssl.CERT_NONE


# -- the door: a bad verify= is refused before any I/O ---------------------------------------


@pytest.mark.parametrize(
    ("verify", "match"),
    [
        (1, "must be True, False, a path"),
        (b"/etc/ssl/cert.pem", "must be True, False, a path"),
        ("/no/such/ca-bundle.pem", "names no CA bundle"),
        ("", "names no CA bundle"),
    ],
)
def test_a_bad_verify_is_a_configuration_error(emulator: Emulator, verify: Any, match: str) -> None:
    """A ``verify=`` of another type, or a path to nothing, is refused when the client is made."""
    with pytest.raises(mpt_async.ConfigurationError, match=match):
        token_client(emulator, verify=verify)


def test_a_file_that_holds_no_certificate_is_a_configuration_error(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A CA bundle that holds no certificate is refused when the client is made."""
    path = tmp_path / "not-a-bundle.pem"
    path.write_text("hello\n")
    with pytest.raises(mpt_async.ConfigurationError, match="holds no CA certificate"):
        token_client(emulator, verify=path)


def test_verify_with_your_own_http_client_is_a_configuration_error(
    offline_http: httpx.AsyncClient, sent: list[httpx.Request]
) -> None:
    """With ``http_client=``, ``verify=`` is refused: the caller's client owns its TLS."""
    for options in ({"verify": False}, {"verify": True}, {"trust_env": False}):
        with pytest.raises(mpt_async.ConfigurationError, match="owns its TLS"):
            mpt_async.Client(
                auth="token", base_url="http://test", http_client=offline_http, **options
            )
    assert sent == []


# -- a forward proxy, byte by byte -----------------------------------------------------------

#: The proxy's credentials in the tests; the password must never show.
PASSWORD = "s3cret-proxy-pw"
CREDENTIALS = f"alice:{PASSWORD}"
BASIC = b"Basic " + base64.b64encode(CREDENTIALS.encode())


class ForwardProxy:
    """What the proxy saw: each request's method, target and ``Proxy-Authorization``."""

    def __init__(self, require: bytes | None) -> None:
        self.require = require
        self.url = ""
        self.seen: list[tuple[bytes, bytes, bytes | None]] = []

    def with_credentials(self, credentials: str = CREDENTIALS) -> str:
        """The proxy's URL with credentials in it."""
        return self.url.replace("://", f"://{credentials}@")

    async def serve(self, client: anyio.abc.ByteStream) -> None:
        """One client connection: one tunnel, or one forwarded exchange."""
        async with client:
            head = b""
            with anyio.fail_after(30):
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    head += await client.receive()
            head, _, rest = head.partition(b"\r\n\r\n")
            line, *fields = head.split(b"\r\n")
            method, target, _ = line.split(b" ")
            pairs = [field.split(b":", 1) for field in fields]
            headers = [(name.strip(), value.strip()) for name, value in pairs]
            auth = next((v for n, v in headers if n.lower() == b"proxy-authorization"), None)
            self.seen.append((method, target, auth))
            if self.require is not None and auth != self.require:
                await client.send(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b"Proxy-Authenticate: Basic\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
                return
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                upstream = await anyio.connect_tcp(host, int(port))
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # absolute-form: on to the origin in origin-form, one exchange only
                url = httpx.URL(target.decode())
                upstream = await anyio.connect_tcp(url.host, url.port or 80)
                kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
                lines = [b"%s %s HTTP/1.1" % (method, url.raw_path)]
                lines += [b"%s: %s" % pair for pair in [*kept, (b"Connection", b"close")]]
                rest = b"\r\n".join(lines) + b"\r\n\r\n" + rest
            if rest:
                await upstream.send(rest)
            await pipe_both(client, upstream)


_HOP_BY_HOP = (b"proxy-authorization", b"connection", b"keep-alive", b"proxy-connection")


@asynccontextmanager
async def forward_proxy(
    require: bytes | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[ForwardProxy]:
    """A forward proxy on loopback; with ``require``, anything else is answered 407.

    With ``tls``, an ``https://`` proxy: clients speak TLS to it (with that server context).
    """
    proxy = ForwardProxy(require)

    async def serve(client: anyio.abc.ByteStream) -> None:
        async with client:
            with suppress(Exception):  # a client that hung up, or refused our certificate
                if tls is not None:
                    with anyio.fail_after(30):
                        client = await anyio.streams.tls.TLSStream.wrap(
                            client, server_side=True, ssl_context=tls, standard_compatible=False
                        )
                await proxy.serve(client)

    async with listening(serve) as port:
        proxy.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        yield proxy


async def closed_port() -> int:
    """A loopback port where nothing listens (it did a moment ago)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        return int(listener.extra(anyio.abc.SocketAttribute.local_port))


def shows(error: BaseException) -> str:
    """Everything an error shows: its str, its repr and its formatted traceback (chained)."""
    return f"{error}\n{error!r}\n" + "".join(traceback.format_exception(error))


def leaked(text: str) -> bool:
    """Whether ``text`` shows the proxy's password or its credentials, even encoded."""
    return PASSWORD in text or BASIC.decode() in text or BASIC[6:].decode() in text


# -- proxies: the environment's, on every transport ------------------------------------------


async def test_http_proxy_from_the_environment_carries_the_calls(
    emulator: Emulator, route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTP_PROXY`` is honoured on each transport: absolute-form requests, credentials sent."""
    async with forward_proxy(require=BASIC) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.with_credentials())
        async with token_client(emulator, max_retries=0) as client:
            assert (await client.chat(HI)).result
            async with client.chat_stream(HI) as stream:
                assert [chunk async for chunk in stream][-1].is_end
            assert carrier(client) == route[1]
    origin = emulator.base_url.encode()
    assert len(proxy.seen) >= 3  # the token, the chat and the stream
    assert all(method == b"POST" and target.startswith(origin) for method, target, _ in proxy.seen)
    assert {auth for _, _, auth in proxy.seen} == {BASIC}
    assert len(chat_requests(emulator)) == 2


async def test_https_goes_through_a_connect_tunnel_with_one_trust(
    emulator: Emulator,
    ca: trustme.CA,
    ca_path: Path,
    route: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HTTPS_PROXY``: a ``CONNECT`` tunnel, then TLS to the origin: ``verify=`` holds there."""
    async with tls_front(emulator, ca) as front, forward_proxy(require=BASIC) as proxy:
        monkeypatch.setenv("https_proxy", proxy.with_credentials())
        async with token_client(emulator, front.url, verify=ca_path, max_retries=0) as client:
            assert (await client.chat(HI)).result
            assert carrier(client) == route[1]
        authority = front.url.removeprefix("https://").encode()
        assert proxy.seen[0] == (b"CONNECT", authority, BASIC)
        assert front.handshakes >= 1
        async with token_client(emulator, front.url, max_retries=0) as client:
            with pytest.raises(mpt_async.APIConnectionError, match="TLS") as caught:
                await client.chat(HI)
        assert not leaked(shows(caught.value))
    assert len(chat_requests(emulator)) == 1
    # The credentials went on the CONNECT only, never inside the tunnel to the service.
    assert all("proxy-authorization" not in r.headers for r in emulator.requests)


async def test_an_https_proxy_is_spoken_to_over_tls_with_the_one_trust(
    emulator: Emulator, ca: trustme.CA, ca_path: Path, route: tuple[str, str]
) -> None:
    """An ``https://`` proxy: TLS to it (then TLS in TLS to an https service), same trust."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with tls_front(emulator, ca) as front, forward_proxy(BASIC, tls=context) as proxy:
        for base_url in (front.url, emulator.base_url):
            async with token_client(
                emulator, base_url, verify=ca_path, proxy=proxy.with_credentials(), max_retries=0
            ) as client:
                assert (await client.chat(HI)).result
        methods = [method for method, _, _ in proxy.seen]
        assert methods[0] == b"CONNECT"
        assert methods[-1] == b"POST"
        assert {auth for _, _, auth in proxy.seen} == {BASIC}
        async with token_client(
            emulator, proxy=proxy.with_credentials(), max_retries=0
        ) as client:  # the default trust refuses the proxy's certificate
            with pytest.raises(mpt_async.APIConnectionError, match="TLS") as caught:
                await client.chat(HI)
        assert not leaked(shows(caught.value))
    assert len(chat_requests(emulator)) == 2


async def test_without_tls_in_tls_aiohttp_hands_such_calls_to_the_pool(
    emulator: Emulator,
    ca: trustme.CA,
    ca_path: Path,
    route: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before Python 3.11 (no TLS in TLS on asyncio), https via an https proxy takes the pool."""
    if route[1] != "aiohttp":
        pytest.skip("aiohttp's case")
    monkeypatch.setattr(_aiohttp_transport, "_TLS_IN_TLS", False)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with tls_front(emulator, ca) as front, forward_proxy(tls=context) as proxy:
        with caplog.at_level(logging.DEBUG, logger="mpt_async"):
            async with token_client(emulator, front.url, verify=ca_path, proxy=proxy.url) as client:
                assert (await client.chat(HI)).result
                wire: Any = client._request_loop.http._transport
                assert wire._aiohttp is None
                assert isinstance(wire._httpx, _pool.PoolTransport)
        assert proxy.seen[0][0] == b"CONNECT"
    assert "cannot speak TLS inside TLS" in caplog.text


async def test_no_proxy_reaches_the_host_directly(
    emulator: Emulator, route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host in ``NO_PROXY`` (here with its port) is reached directly, on each transport."""
    async with forward_proxy() as proxy:
        port = httpx.URL(emulator.base_url).port
        monkeypatch.setenv("ALL_PROXY", proxy.url)
        monkeypatch.setenv("no_proxy", f"example.com, 127.0.0.1:{port}")
        async with token_client(emulator) as client:
            assert (await client.chat(HI)).result
        monkeypatch.setenv("no_proxy", "127.0.0.1:1")  # another port: proxied
        async with token_client(emulator) as client:
            assert (await client.chat(HI)).result
    assert len(proxy.seen) == 2  # the second client's token and chat
    assert len(chat_requests(emulator)) == 2


async def test_proxy_overrides_the_environment_and_trust_env_false_ignores_it(
    emulator: Emulator, route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``proxy=`` wins over the environment (``NO_PROXY`` too); ``trust_env=False`` ignores it."""
    down = f"http://127.0.0.1:{await closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", down)
    async with forward_proxy() as proxy:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with token_client(emulator, proxy=proxy.url) as client:
            assert (await client.chat(HI)).result
        monkeypatch.delenv("NO_PROXY")
        async with token_client(emulator, trust_env=False) as client:
            assert (await client.chat(HI)).result
    assert len(proxy.seen) == 2  # the first client's token and chat only
    assert len(chat_requests(emulator)) == 2


@pytest.fixture
async def dead_proxy_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every proxy variable names a proxy that is down."""
    down = f"http://127.0.0.1:{await closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, down)


async def test_the_plugins_client_reaches_the_emulator_directly(
    dead_proxy_everywhere: None, mpt_client: mpt_async.Client, route: tuple[str, str]
) -> None:
    """The pytest plugin's client ignores the machine's proxies: its emulator is local."""
    assert (await mpt_client.chat(HI)).result


# -- proxies: failures are typed, and never show the credentials -----------------------------


async def test_a_tunnel_refused_407_is_typed_and_hides_the_credentials(
    emulator: Emulator,
    ca: trustme.CA,
    ca_path: Path,
    route: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ``CONNECT`` answered 407: a typed error with the status, not retried; nothing leaks."""
    caplog.set_level(logging.DEBUG)
    async with tls_front(emulator, ca) as front, forward_proxy(require=b"Basic other") as proxy:
        client = mpt_async.Client(
            auth=emulator.issue_token(),
            base_url=front.url,
            verify=ca_path,
            proxy=proxy.with_credentials(),
            max_retries=2,
            backoff=FAST,
        )
        async with client:
            with pytest.raises(mpt_async.APIConnectionError, match="407") as caught:
                await client.chat(HI)
            assert not leaked(repr(client))
        assert proxy.seen == [(b"CONNECT", front.url[8:].encode(), BASIC)]
        assert front.handshakes == 0
    assert not leaked(shows(caught.value))
    assert not leaked(caplog.text)
    assert "127.0.0.1" in caplog.text  # the DEBUG line names the proxy, without its password


async def test_a_forwarded_request_refused_407_is_an_api_error_without_credentials(
    emulator: Emulator, route: tuple[str, str]
) -> None:
    """An ``http`` origin's request answered 407 by the proxy: an APIError with that status."""
    async with forward_proxy(require=b"Basic other") as proxy:
        client = mpt_async.Client(
            auth=emulator.issue_token(),
            base_url=emulator.base_url,
            proxy=proxy.with_credentials(),
            max_retries=0,
        )
        async with client:
            with pytest.raises(mpt_async.APIError) as caught:
                await client.chat(HI)
    assert caught.value.status_code == 407
    assert proxy.seen[0][2] == BASIC
    assert not leaked(shows(caught.value))
    assert emulator.requests == []


async def test_a_proxy_that_is_down_is_typed_and_hides_the_credentials(
    emulator: Emulator, route: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No proxy listening: an APIConnectionError naming the proxy; no credential shows."""
    port = await closed_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://{CREDENTIALS}@127.0.0.1:{port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://{CREDENTIALS}@127.0.0.1:{port}")
    for base_url in (emulator.base_url, "https://127.0.0.1:9"):
        client = mpt_async.Client(auth=emulator.issue_token(), base_url=base_url, max_retries=0)
        async with client:
            with pytest.raises(
                mpt_async.APIConnectionError, match=f"proxy 127.0.0.1:{port}"
            ) as caught:
                await client.chat(HI)
        assert not leaked(shows(caught.value))
    assert emulator.requests == []


async def _endless_head(client: anyio.abc.SocketStream) -> None:
    await client.send(b"HTTP/1.1 200 OK\r\n")
    while True:  # until the client hangs up
        await client.send(b"X-Filler: " + b"y" * 1000 + b"\r\n")


async def _silent(client: anyio.abc.SocketStream) -> None:
    await anyio.sleep_forever()


#: What a hostile proxy does after reading the head of a ``CONNECT``.
HOSTILE = {
    "bytes after its 200": lambda client: client.send(b"HTTP/1.1 200 OK\r\n\r\nnot TLS"),
    "a broken answer": lambda client: client.send(b"HTTP/1.1 two hundred\r\n\r\n"),
    "an endless head": _endless_head,
    "a close": lambda client: client.aclose(),
    "silence": _silent,
}
#: What the pool says of each (the other transports tell some of them apart less well).
POOL_SAYS = {
    "bytes after its 200": "sent bytes after accepting the tunnel",
    "a broken answer": "broke the HTTP protocol",
    "an endless head": "broke the HTTP protocol",
    "a close": "closed the connection without answering",
    "silence": "timed out",
}


@pytest.mark.parametrize("behaviour", list(HOSTILE))
async def test_a_hostile_proxy_gives_a_typed_error_in_bounded_time(
    emulator: Emulator, route: tuple[str, str], behaviour: str
) -> None:
    """Whatever a proxy answers to ``CONNECT``, the call ends in an APIConnectionError.

    The pool bounds the exchange by the ``connect`` timeout, httpcore (httpx) by the
    ``read`` one, aiohttp by the ``pool`` one (its connect bound covers waiting for the pool
    and connecting): each is small here.
    """

    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client:
            with suppress(Exception):
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await client.receive()
                await HOSTILE[behaviour](client)

    timeout = mpt_async.Timeouts(connect=0.5, pool=1, read=5, stream_read=5, total=None)
    async with listening(serve) as port:
        client = mpt_async.Client(
            auth=emulator.issue_token(),
            base_url="https://127.0.0.1:9",  # never reached
            proxy=f"http://{CREDENTIALS}@127.0.0.1:{port}",
            max_retries=0,
            timeout=timeout,
        )
        async with client:
            with anyio.fail_after(60), pytest.raises(mpt_async.APIConnectionError) as caught:
                await client.chat(HI)
    assert not leaked(shows(caught.value))
    if route[1].startswith("pool"):
        assert POOL_SAYS[behaviour] in str(caught.value)


# -- proxies: the door -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["proxy=", "ALL_PROXY", "HTTPS_PROXY"])
@pytest.mark.parametrize("url", ["socks5://alice:pw@127.0.0.1:1080", "socks5h://127.0.0.1:1"])
def test_a_socks_proxy_is_a_configuration_error_before_any_io(
    emulator: Emulator, where: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SOCKS proxy is refused when the client is made, pointing to ``http_client=``."""
    options: dict[str, Any] = {}
    if where == "proxy=":
        options["proxy"] = url
    else:
        monkeypatch.setenv(where, url)
    with pytest.raises(mpt_async.ConfigurationError, match="http_client=") as caught:
        token_client(emulator, "https://127.0.0.1:9", **options)
    assert "pw@" not in shows(caught.value)
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("proxy", "match"),
    [
        (3128, "must be a proxy URL string or None"),
        ("ftp://proxy.example", "must be an http:// or https:// proxy URL"),
        ("http://alice:pw@proxy.example:port", "is not a valid proxy URL"),
        ("http://alice:pw@proxy.example:99999", "outside 1..65535"),
    ],
)
def test_a_bad_proxy_is_a_configuration_error(emulator: Emulator, proxy: Any, match: str) -> None:
    """A ``proxy=`` of another type, scheme or form is refused, without echoing it."""
    with pytest.raises(mpt_async.ConfigurationError, match=match) as caught:
        token_client(emulator, proxy=proxy)
    assert "pw@" not in str(caught.value)


def test_proxy_with_your_own_http_client_is_a_configuration_error(
    offline_http: httpx.AsyncClient, sent: list[httpx.Request]
) -> None:
    """With ``http_client=``, ``proxy=`` is refused: the caller's client owns its proxies."""
    with pytest.raises(mpt_async.ConfigurationError, match="owns its TLS and proxies"):
        mpt_async.Client(
            auth="token", base_url="http://test", http_client=offline_http, proxy="http://p:1"
        )
    assert sent == []


@pytest.mark.parametrize(
    ("environ", "url", "expected"),
    [
        ({"HTTPS_PROXY": "p:1"}, "https://a.com", "http://p:1"),
        ({"HTTPS_PROXY": "p:1"}, "http://a.com", None),
        ({"HTTP_PROXY": "p:1", "ALL_PROXY": "q:2"}, "https://a.com", "http://q:2"),
        ({"https_proxy": "p:1", "HTTPS_PROXY": "q:2"}, "https://a.com", "http://p:1"),
        ({"https_proxy": "", "HTTPS_PROXY": "q:2"}, "https://a.com", None),
        ({"HTTP_PROXY": "p:1", "REQUEST_METHOD": "GET"}, "http://a.com", None),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "*"}, "https://a.com", None),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "a.com"}, "https://www.a.com", None),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "a.com"}, "https://wwwa.com", "http://p:1"),
        ({"ALL_PROXY": "p:1", "NO_PROXY": ".a.com"}, "https://a.com", "http://p:1"),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "*.a.com"}, "https://b.a.com", None),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "a.com:8443"}, "https://a.com", "http://p:1"),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "a.com:443"}, "https://a.com", None),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "10.0.0.0/8"}, "http://10.1.2.3", None),
        ({"ALL_PROXY": "p:1", "NO_PROXY": "::1"}, "http://[::1]:80", None),
        ({"ALL_PROXY": "p:1", "no_proxy": "LOCALHOST"}, "http://localhost", None),
    ],
)
def test_the_environment_is_read_as_httpx_reads_it(
    environ: dict[str, str], url: str, expected: str | None
) -> None:
    """The proxy variables' precedence and the ``NO_PROXY`` forms (a table, no sockets)."""
    proxy = Proxies(environ=environ).for_url(httpx.URL(url))
    assert (None if proxy is None else proxy.url) == expected


@pytest.mark.parametrize("value", [f"http://{CREDENTIALS}@p:1", f"{CREDENTIALS}@p:1"])
def test_the_proxies_repr_masks_the_password(value: str) -> None:
    """A proxy variable is shown with its password masked, with or without a scheme."""
    shown = repr(Proxies(environ={"HTTPS_PROXY": value, "NO_PROXY": "a.com"}))
    assert "alice:***@p:1" in shown
    assert "NO_PROXY=a.com" in shown
    assert not leaked(shown)


def test_the_debug_line_names_transport_and_proxy_without_the_password(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new client says at DEBUG which transport and proxy it uses, password masked."""
    monkeypatch.setenv("HTTP_PROXY", f"http://{CREDENTIALS}@proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with caplog.at_level(logging.DEBUG, logger="mpt_async"):
        client = token_client(emulator)
    assert client.http_transport.split("+")[0] in caplog.text
    assert "proxy.example:3128" in caplog.text
    assert not leaked(caplog.text)
