"""Each (event loop, transport) the client may pick by itself, as a pytest parameter.

A test module takes them with ``from .routes import anyio_backend, route, transport``.
"""

from __future__ import annotations

import httpx
import pytest

from mpt_async._aiohttp_transport import AiohttpTransport
from mpt_async._pool import PoolTransport

#: (event loop, transport) for each transport the client may pick by itself.
ROUTES = [
    ("asyncio", "pool-httptools"),
    ("asyncio", "pool-h11"),
    ("asyncio", "aiohttp"),
    ("trio", "pool-httptools"),
    ("trio", "pool-h11"),
]


@pytest.fixture(params=ROUTES, ids=["-".join(route) for route in ROUTES])
def route(request: pytest.FixtureRequest) -> tuple[str, str]:
    """An event loop and a transport."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(route: tuple[str, str]) -> str:
    """The route's event loop."""
    return route[0]


def transport(name: str, **limits: int | float | None) -> httpx.AsyncBaseTransport:
    """The transport named ``name`` (``aiohttp`` or ``pool-<parser>``) with these limits."""
    if name == "aiohttp":
        return AiohttpTransport(max_connections=int(limits.get("max_connections") or 100))
    parser = name.removeprefix("pool-")
    return PoolTransport(limits=httpx.Limits(**limits), parser=parser)  # type: ignore[arg-type]
