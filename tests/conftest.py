"""Fixtures shared by the whole suite: the anyio backends, and the emulator.

The session emulator comes from mpt_async's own pytest plugin (``mpt_emulator``), loaded
with ``-p mpt_async.testing.pytest_plugin`` in pyproject.toml.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

import mpt_async
from mpt_async import _converter
from mpt_async.testing import Emulator

from .clientkit import clear_credentials


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_from_the_machine() -> Iterator[None]:
    """The suite talks to loopback only: the machine's proxy variables are set aside.

    A test about proxies sets its own (``tests/test_proxy_tls.py``).
    """
    names = [n for n in os.environ if n.lower() in ("http_proxy", "https_proxy", "all_proxy")]
    saved = {name: os.environ.pop(name) for name in names}
    yield
    os.environ.update(saved)


@pytest.fixture(autouse=True, scope="session")
def _strict_wire() -> Iterator[None]:
    """Refuse unknown reply fields everywhere in the suite, so emulator/model drift fails."""
    tolerant = _converter.CONVERTER
    _converter.CONVERTER = _converter.make_converter(strict=True)
    yield
    _converter.CONVERTER = tolerant


#: The backends of every ``@pytest.mark.anyio`` test; a test marked ``transport`` also runs
#: on ``asyncio+httpx``: asyncio over httpx's own transport, which the client never picks
#: unless asked (``MPT_ASYNC_TRANSPORT=httpx``).
BACKENDS = ("asyncio", "trio")
TRANSPORT_BACKENDS = ("asyncio", "asyncio+httpx", "trio")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "transport: the outcome depends on the HTTP transport under the client (it runs on "
        "asyncio+httpx too, and in nox's per-install sessions)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``anyio_backend``: two backends, or three for a test marked ``transport``.

    Left alone where a test parametrizes it itself, or its module defines its own fixture.
    """
    if "anyio_backend" not in metafunc.fixturenames or "anyio_backend" in vars(metafunc.module):
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "anyio_backend" in (names.split(",") if isinstance(names, str) else names):
            return
    marked = metafunc.definition.get_closest_marker("transport") is not None
    metafunc.parametrize("anyio_backend", TRANSPORT_BACKENDS if marked else BACKENDS, indirect=True)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The backend of an ``@pytest.mark.anyio`` test (see :func:`pytest_generate_tests`).

    The client sends through the transport it picks by itself (aiohttp on asyncio when
    installed, mpt_async's pool otherwise); ``asyncio+httpx`` sets ``MPT_ASYNC_TRANSPORT=httpx``.
    """
    backend = str(getattr(request, "param", "asyncio"))
    if backend == "asyncio+httpx":
        monkeypatch.setenv("MPT_ASYNC_TRANSPORT", "httpx")
        return "asyncio"
    monkeypatch.delenv("MPT_ASYNC_TRANSPORT", raising=False)
    return backend


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    """A plain (sync) httpx client aimed at the emulator, for talking to it by hand."""
    with httpx.Client(base_url=emulator.base_url, timeout=5) as client:
        yield client


@pytest.fixture
def sent() -> list[httpx.Request]:
    """The requests that reached ``offline_http``'s mock network."""
    return []


@pytest.fixture
def offline_http(sent: list[httpx.Request]) -> httpx.AsyncClient:
    """An httpx client whose mock network records every request in ``sent`` and answers 500."""

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.fixture
def offline_client(offline_http: httpx.AsyncClient) -> mpt_async.Client:
    """A client over ``offline_http``, for checks that must refuse a call before any I/O."""
    return mpt_async.Client(auth="token", base_url="http://test", http_client=offline_http)


@pytest.fixture
def token(emulator: Emulator) -> str:
    """A valid access token minted by the emulator."""
    return emulator.issue_token()


@pytest.fixture
def env_emulator(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The session emulator, with the environment's credentials pointing at it."""
    clear_credentials(monkeypatch)
    monkeypatch.setenv("QIANFAN_AK", emulator.api_key)
    monkeypatch.setenv("QIANFAN_SK", emulator.secret_key)
    monkeypatch.setenv("QIANFAN_BASE_URL", emulator.base_url)
    return emulator


@pytest.fixture
def emulator(mpt_emulator: Emulator) -> Iterator[Emulator]:
    """The plugin's session emulator, reset for this test (and after it)."""
    yield mpt_emulator
    mpt_emulator.reset()
