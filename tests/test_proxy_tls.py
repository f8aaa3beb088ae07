"""One TLS trust and one proxy policy, whichever transport carries the calls.

Over real sockets: the emulator serves the calls; in front of it, a TLS-terminating pipe
written here (with a throwaway CA from ``trustme``, which no default trust knows) serves
``https``. Each case runs on every transport the client may carry its calls on: the pool
with httptools and with h11 and httpx's own (asyncio and trio), and aiohttp (asyncio).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
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
from mpt_async import _pool
from mpt_async._aiohttp_transport import AutoTransport
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
        (connection, *_) = wire._connections
        return "pool-h11" if isinstance(connection, _pool._H11Connection) else "pool-httptools"
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

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    front.url = f"https://127.0.0.1:{port}"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield front
        finally:
            tg.cancel_scope.cancel()


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
