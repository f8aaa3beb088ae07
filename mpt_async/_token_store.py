"""Where access tokens live beyond one client: shared in memory, or on disk across processes.

A :class:`TokenStore` holds :class:`StoredToken` values under a key that names one
application on one service (see :func:`token_key`). The client's token cache asks the store
before fetching, and holds :meth:`TokenStore.lock` while it fetches, so that however many
clients (or processes) start at once, one of them fetches and the others read its token.

What a store holds may have been written by anyone who can write to it (a shared Redis, a
file). So the client seals each token it saves with its credentials (:class:`Seal`, an
HMAC keyed by a key derived from the secret) and uses only tokens that carry its own seal:
a token planted by someone without the secret is ignored, and replaced by the next fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeGuard, runtime_checkable

import anyio
import attrs

from mpt_async._exceptions import ConfigurationError
from mpt_async._logging import logger
from mpt_async._validate import is_number

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MemoryTokenStore",
    "Seal",
    "SealedTokenStore",
    "StoredToken",
    "TokenStore",
    "check_token_store",
    "is_token",
    "stored_token",
    "token_key",
    "token_seal",
]

#: The longest access token accepted, from the service or from a store. The service's
#: tokens are under 100 characters (v1) or a few hundred (v2 bearer tokens); a longer one
#: could not even be sent (httpx refuses a URL over 64 KiB).
MAX_TOKEN_LENGTH = 4096
#: A seal is a hex HMAC-SHA256.
_SEAL_LENGTH = 64


def is_token(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be an access token: 1 to 4,096 printable characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_LENGTH and value.isprintable()


@attrs.frozen
class StoredToken:
    """An access token and the wall-clock times it was obtained and runs out.

    Wall-clock (Unix) times, because a stored token may be read by another process.

    Args:
        value: The access token; never shown in ``repr``.
        expires_at: When the service stops accepting it, in seconds since the epoch.
        obtained_at: When it was fetched, in seconds since the epoch.
        seal: Ties the token to the credentials that fetched it (see :class:`Seal`); a
            store must keep it with the token, as it keeps the times.
    """

    value: str = attrs.field(repr=False)
    expires_at: float = attrs.field(converter=float)
    obtained_at: float = attrs.field(converter=float)
    seal: str = attrs.field(default="", kw_only=True, repr=False)

    @value.validator
    def _check_value(self, _: object, value: str) -> None:
        if not is_token(value):
            msg = (
                "StoredToken.value must be a string of 1 to"
                f" {MAX_TOKEN_LENGTH} printable characters"
            )
            raise ConfigurationError(msg)


def stored_token(
    value: object, expires_at: object, obtained_at: object, seal: object = ""
) -> StoredToken | None:
    """The token a store read back, or ``None`` unless each field is what it must be.

    What a store reads was written by another process, or by anyone with access to it: the
    value must be a plausible token (:func:`is_token`), the times finite numbers (an endless
    ``expires_at`` would keep a token forever), the seal a short string.
    """
    if not (is_token(value) and _is_time(expires_at) and _is_time(obtained_at)):
        return None
    if not isinstance(seal, str) or len(seal) > _SEAL_LENGTH:
        return None
    return StoredToken(value, expires_at, obtained_at, seal=seal)


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


@attrs.frozen
class Seal:
    """Ties what a store holds to the credentials that wrote it.

    A seal is an HMAC-SHA256 of the entry (its store key, token and times) keyed by a key
    derived from a secret of the credentials, never the secret itself. Whoever can write
    to the store but does not know the secret cannot make an entry that :meth:`opens`.
    Every kind of credentials that shares something through a store makes its own seal
    with its own ``purpose``: an access token of an API Key and Secret Key, a bearer token
    of an IAM Access Key and Secret Key...

    Args:
        purpose: What is sealed, with which kind of credentials (part of the derivation:
            one secret gives unrelated keys for unrelated purposes).
        secret: The credentials' secret.
    """

    _key: bytes = attrs.field(repr=False, alias="key")

    @classmethod
    def of(cls, purpose: str, secret: str) -> Seal:
        """The seal of the credentials whose secret is ``secret``, for ``purpose``."""
        key = hmac.digest(secret.encode(), f"mpt_async seal\0{purpose}".encode(), "sha256")
        return cls(key=key)

    def _mac(self, key: str, token: StoredToken) -> str:
        entry = f"{key}\0{token.value}\0{token.expires_at!r}\0{token.obtained_at!r}"
        return hmac.new(self._key, entry.encode(), "sha256").hexdigest()

    def seal(self, key: str, token: StoredToken) -> StoredToken:
        """``token``, sealed for the store key ``key``."""
        return attrs.evolve(token, seal=self._mac(key, token))

    def opens(self, key: str, token: StoredToken) -> bool:
        """Whether ``token`` was sealed by these credentials for the store key ``key``."""
        return hmac.compare_digest(token.seal, self._mac(key, token))


class SealedTokenStore:
    """A :class:`TokenStore` through which only tokens sealed with one :class:`Seal` pass.

    :meth:`save` seals; :meth:`load` gives back only a token whose seal opens, so the
    client fetches a token of its own instead of using one it did not write (and its save
    replaces the stranger's). The first stranger is logged as a warning.

    Args:
        store: Where the tokens are kept.
        seal: The credentials' seal.
    """

    def __init__(self, store: TokenStore, seal: Seal) -> None:
        self.store = store
        self._seal = seal
        self._warned = False

    def __repr__(self) -> str:
        return f"<SealedTokenStore over {self.store!r}>"

    async def load(self, key: str) -> StoredToken | None:
        """The token saved under ``key`` if these credentials sealed it, else ``None``."""
        token = await self.store.load(key)
        if token is None or self._seal.opens(key, token):
            return token
        if not self._warned:
            self._warned = True
            logger.warning(
                "ignoring a stored access token not sealed with these credentials (written"
                " without the Secret Key, or by a store that drops StoredToken.seal);"
                " fetching one"
            )
        return None

    async def save(self, key: str, token: StoredToken) -> None:
        """Keep ``token`` under ``key``, sealed."""
        await self.store.save(key, self._seal.seal(key, token))

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """The store's own fetch lock."""
        return self.store.lock(key)


def token_seal(secret_key: str) -> Seal:
    """The seal of one application's access tokens (the v1 API Key and Secret Key)."""
    return Seal.of("v1 access token", secret_key)


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
