"""Which HTTP transport the client picks by itself, and that ``Client.http_transport`` says so.

The expected pick follows from what is installed, so the same tests check each install that
nox's ``installs`` sessions make: the plain one (mpt_async's pool, parsing with h11, on both
event loops), ``speed`` (aiohttp on asyncio, the pool with httptools on trio).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import httpx
import pytest

import mpt_async
from mpt_async._aiohttp_transport import AutoTransport
from mpt_async.testing import Emulator

from .clientkit import HI, token_client

AIOHTTP = importlib.util.find_spec("aiohttp") is not None
HTTPTOOLS = importlib.util.find_spec("httptools") is not None


def expected(backend: str) -> str:
    """The transport a client picks by itself on ``backend`` with what is installed."""
    if os.environ.get("MPT_ASYNC_TRANSPORT") == "httpx":
        return "httpx"
    if backend == "asyncio" and AIOHTTP:
        return "aiohttp"
    return "pool+httptools" if HTTPTOOLS else "pool+h11"


def carrier(client: mpt_async.Client) -> str:
    """What carried the client's calls, found in its objects (not in what it says)."""
    wire: Any = client._request_loop.http._transport
    if isinstance(wire, AutoTransport):
        if wire._aiohttp is not None:
            return "aiohttp"
        wire = wire._httpx
    if isinstance(wire, httpx.AsyncHTTPTransport):
        return "httpx"
    (connection,) = wire._connections
    return "pool+h11" if "H11" in type(connection).__name__ else "pool+httptools"


@pytest.mark.anyio
@pytest.mark.transport
async def test_the_client_says_which_transport_carries_its_calls(
    emulator: Emulator, anyio_backend: str
) -> None:
    """``http_transport`` names the transport the install gives, and it carried the call."""
    async with token_client(emulator, max_connections=1) as client:
        assert client.http_transport == expected(anyio_backend)
        reply = await client.chat(HI)
        assert reply.result
        assert client.http_transport == carrier(client) == expected(anyio_backend)


def test_outside_an_event_loop_it_names_what_asyncio_would_use(emulator: Emulator) -> None:
    """Read outside any event loop: the transport that asyncio would use."""
    assert token_client(emulator).http_transport == expected("asyncio")


def test_a_client_over_your_own_http_client_says_custom(emulator: Emulator) -> None:
    """With ``http_client=`` the transport is yours: ``"custom"``."""
    client = token_client(emulator, http_client=httpx.AsyncClient())
    assert client.http_transport == "custom"


def test_asking_for_httpx_or_the_pool_gets_it(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``MPT_ASYNC_TRANSPORT=httpx`` gets httpx's own transport; nothing else picks it."""
    monkeypatch.setenv("MPT_ASYNC_TRANSPORT", "httpx")
    assert token_client(emulator).http_transport == "httpx"
    monkeypatch.setenv("MPT_ASYNC_TRANSPORT", "auto")
    assert token_client(emulator).http_transport != "httpx"


def test_an_unknown_transport_is_a_configuration_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport name the client does not know is refused, typed, when the client is made."""
    monkeypatch.setenv("MPT_ASYNC_TRANSPORT", "carrier-pigeon")
    with pytest.raises(mpt_async.ConfigurationError, match="MPT_ASYNC_TRANSPORT"):
        token_client(emulator)


@pytest.mark.skipif(AIOHTTP, reason="aiohttp is installed")
def test_asking_for_aiohttp_without_it_is_a_configuration_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``MPT_ASYNC_TRANSPORT=aiohttp`` on an install without aiohttp says which extra to add."""
    monkeypatch.setenv("MPT_ASYNC_TRANSPORT", "aiohttp")
    with pytest.raises(mpt_async.ConfigurationError, match=r"mpt-async\[speed\]"):
        token_client(emulator)
