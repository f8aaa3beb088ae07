"""pytest fixtures for code that calls the Qianfan API: a local emulator and a client.

Installed with mpt-async, this plugin registers itself with pytest (entry point
``pytest11``), so a test file needs no ``conftest.py``::

    import pytest

    @pytest.mark.anyio
    async def test_answer(mpt_emulator, mpt_client):
        mpt_emulator.add_reply("yes")
        reply = await mpt_client.chat([{"role": "user", "content": "Is it on?"}])
        assert reply.result == "yes"

``mpt_emulator`` is one :class:`~mpt_async.testing.Emulator` for the whole session, reset
before each test. ``mpt_client`` is a :class:`~mpt_async.Client` wired to it that retries
without waiting, on the v1 interface (token auth); ``mpt_v2_client`` is the same on the v2
interface (the emulator's API key, ``/v2/chat/completions``). Both are async, so they run
under anyio's pytest plugin (``@pytest.mark.anyio``, on the ``anyio_backend`` you choose:
asyncio, trio). Loading the plugin imports nothing
but pytest: the emulator (and uvicorn) load when a test first asks for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mpt_async import Client
    from mpt_async.testing import Emulator

__all__ = ["mpt_client", "mpt_emulator", "mpt_v2_client"]


@pytest.fixture(scope="session")
def _mpt_emulator_session() -> Iterator[Emulator]:
    """The session's emulator, on a free loopback port, with the default credentials."""
    try:
        from mpt_async.testing import _emulator
    except ImportError as exc:  # pragma: no cover - uvicorn is the emulator extra
        pytest.fail(f"mpt_emulator needs the emulator extra ({exc})", pytrace=False)
    # Explicit credentials: the emulator never picks up real keys from the environment.
    emulator = _emulator.Emulator(
        api_key=_emulator.DEFAULT_API_KEY,
        secret_key=_emulator.DEFAULT_SECRET_KEY,
        access_key=_emulator.DEFAULT_ACCESS_KEY,
        secret_access_key=_emulator.DEFAULT_SECRET_ACCESS_KEY,
        v2_api_key=_emulator.DEFAULT_V2_API_KEY,
    )
    with emulator:
        yield emulator


@pytest.fixture
def mpt_emulator(_mpt_emulator_session: Emulator) -> Emulator:
    """The session's :class:`~mpt_async.testing.Emulator`, reset for this test.

    Faults, scripted replies, counters, records, tokens and settings start afresh.
    """
    _mpt_emulator_session.reset()
    return _mpt_emulator_session


@pytest.fixture
async def mpt_client(mpt_emulator: Emulator, anyio_backend: object) -> AsyncIterator[Client]:
    """A :class:`~mpt_async.Client` for ``mpt_emulator`` (token auth, no wait between retries).

    It reaches the emulator directly, whatever proxy the environment names (the emulator is
    on this machine), and is closed after the test.
    """
    from mpt_async import AccessTokenAuth, Backoff, Client

    no_wait = Backoff(initial=0, maximum=0, jitter=0, max_retry_after=0)
    auth = AccessTokenAuth(mpt_emulator.api_key, mpt_emulator.secret_key)
    client = Client(auth=auth, base_url=mpt_emulator.base_url, backoff=no_wait, trust_env=False)
    async with client:
        yield client


@pytest.fixture
async def mpt_v2_client(mpt_emulator: Emulator, anyio_backend: object) -> AsyncIterator[Client]:
    """A v2 :class:`~mpt_async.Client` for ``mpt_emulator`` (its API key, no wait between retries).

    It reaches the emulator directly, like ``mpt_client``, and is closed after the test.
    """
    from mpt_async import APIKeyAuth, Backoff, Client

    no_wait = Backoff(initial=0, maximum=0, jitter=0, max_retry_after=0)
    auth = APIKeyAuth(mpt_emulator.v2_api_key)
    client = Client(auth=auth, base_url=mpt_emulator.base_url, backoff=no_wait, trust_env=False)
    async with client:
        yield client
