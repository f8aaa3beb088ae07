"""Where access tokens live beyond one client: shared in memory, or on disk across processes.

A :class:`TokenStore` holds :class:`StoredToken` values under a key that names one
application on one service (see :func:`token_key`). The client's token cache asks the store
before fetching, and holds :meth:`TokenStore.lock` while it fetches, so that however many
clients (or processes) start at once, one of them fetches and the others read its token.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeGuard, runtime_checkable

import anyio
import attrs

from mpt_async._exceptions import ConfigurationError
from mpt_async._validate import is_number

__all__ = [
    "MemoryTokenStore",
    "StoredToken",
    "TokenStore",
    "check_token_store",
    "stored_token",
    "token_key",
]


@attrs.frozen
class StoredToken:
    """An access token and the wall-clock times it was obtained and runs out.

    Wall-clock (Unix) times, because a stored token may be read by another process.

    Args:
        value: The access token; never shown in ``repr``.
        expires_at: When the service stops accepting it, in seconds since the epoch.
        obtained_at: When it was fetched, in seconds since the epoch.
    """

    value: str = attrs.field(repr=False)
    expires_at: float = attrs.field(converter=float)
    obtained_at: float = attrs.field(converter=float)

    @value.validator
    def _check_value(self, _: object, value: str) -> None:
        if not isinstance(value, str) or not value:
            msg = "StoredToken.value must be a non-empty string"
            raise ConfigurationError(msg)


def stored_token(value: object, expires_at: object, obtained_at: object) -> StoredToken | None:
    """The token a store read back, or ``None`` unless each field is what it must be.

    What a store reads was written by another process, or by anyone with access to it: the
    value must be a non-empty string, the times finite numbers (an endless ``expires_at``
    would keep a token forever).
    """
    if not (isinstance(value, str) and value and _is_time(expires_at) and _is_time(obtained_at)):
        return None
    return StoredToken(value, expires_at, obtained_at)


def _is_time(value: object) -> TypeGuard[float]:
    return is_number(value) and math.isfinite(value)


@runtime_checkable
class TokenStore(Protocol):
    """Somewhere to keep access tokens between clients, and to agree on who fetches.

    Implement it to keep tokens elsewhere (Redis, a database...). The client calls
    :meth:`load` first; when that gives nothing usable it enters ``lock(key)``, calls
    :meth:`load` again (another holder of the lock may just have saved a token), and only
    then fetches and :meth:`save` s, still holding the lock.
    """

    async def load(self, key: str) -> StoredToken | None:
        """The token saved under ``key``, or ``None``; an old one is fine (it is checked)."""
        ...

    async def save(self, key: str, token: StoredToken) -> None:
        """Keep ``token`` under ``key``, replacing what was there."""
        ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """A lock that lets one holder at a time fetch the token for ``key``."""
        ...


def check_token_store(value: object) -> TokenStore | None:
    """``value`` if it is a :class:`TokenStore` or ``None``.

    Raises:
        ConfigurationError: For anything else.
    """
    if value is None or isinstance(value, TokenStore):
        return value
    msg = f"token_store must be a TokenStore (load, save, lock), not {type(value).__name__}"
    raise ConfigurationError(msg)


def token_key(base_url: str, api_key: str, secret_key: str) -> str:
    """The store key of one application's token on one service.

    The credentials go in only as a hash, so a store never holds the Secret Key, and a
    changed Secret Key does not reuse the old key's token.

    Args:
        base_url: The service's address.
        api_key: The application's API Key.
        secret_key: The application's Secret Key.
    """
    digest = hashlib.sha256(f"mpt_async token\0{api_key}\0{secret_key}".encode()).hexdigest()
    return f"{base_url.rstrip('/')}#{digest[:32]}"


class MemoryTokenStore:
    """Tokens shared by the clients of one process (and one event loop).

    Useful when clients come and go, e.g. one per request in a web application: they all
    use one token instead of fetching their own.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, StoredToken] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def __repr__(self) -> str:
        return f"<MemoryTokenStore holding {len(self._tokens)} token(s)>"

    async def load(self, key: str) -> StoredToken | None:
        """The token saved under ``key``, or ``None``."""
        return self._tokens.get(key)

    async def save(self, key: str, token: StoredToken) -> None:
        """Keep ``token`` under ``key``."""
        self._tokens[key] = token

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the fetch lock for ``key``."""
        lock = self._locks.get(key)
        if lock is None:
            # Made on first use, inside the event loop that will use it.
            lock = self._locks[key] = anyio.Lock()
        async with lock:
            yield
