"""What each kind of credentials does on each attempt: one strategy object per kind.

:mod:`mpt_async._auth` describes credentials (frozen, public); this module turns them into
what the request loop uses, chosen once per transport by :func:`credentials_for`:

- :class:`AsIs`: a token sent as it is, never refreshed (an access token obtained
  elsewhere, a v2 API key, a bearer token);
- :class:`Fetched`: a token fetched, cached, shared through a token store and replaced
  before it expires or once it is refused (a v1 application's keys traded for an access
  token; IAM AK/SK traded with IAM for a v2 bearer token);
- :class:`Signed`: no token; every request signed bce-auth-v1 (IAM AK/SK on v1).

Where a token goes (the URL's query, a Bearer header) is the dialect's business, not theirs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx

from mpt_async._auth import AccessTokenAuth, AKSKAuth, APIKeyAuth, Auth, FixedTokenAuth
from mpt_async._signer import sign_request
from mpt_async._token import TokenCache, fetch_bearer_token, fetch_token

if TYPE_CHECKING:
    from mpt_async._dialect import API
    from mpt_async._models import TokenGrant
    from mpt_async._telemetry import CallObserver
    from mpt_async._timeouts import Timeouts
    from mpt_async._token_store import TokenStore

__all__ = ["AsIs", "Credentials", "Fetched", "Signed", "credentials_for"]

#: Fetches a token: (the pooled client, the call's timeouts) -> its grant.
Fetch = Callable[[httpx.AsyncClient, "Timeouts"], Awaitable["TokenGrant"]]


class AsIs:
    """A token sent as it is: an access token from elsewhere, a v2 API key, a bearer token."""

    __slots__ = ("_token", "secrets")
    tokens: TokenCache | None = None

    def __init__(self, token: str) -> None:
        self._token = token
        #: What must never show in an error.
        self.secrets: tuple[str, ...] = (token,)

    async def token(
        self, http: httpx.AsyncClient, timeouts: Timeouts, observer: CallObserver | None
    ) -> str | None:
        """The token to send."""
        return self._token

    def sign(self, request: httpx.Request) -> None:
        """Nothing to sign."""


class Fetched:
    """A token fetched once for many calls, replaced before expiry or once refused.

    Args:
        fetch: Fetches a new token.
        tokens: The cache (single-flight, shared through a token store, if any).
        secret: The secret the token is fetched with.
    """

    __slots__ = ("_fetch", "secrets", "tokens")

    def __init__(self, fetch: Fetch, tokens: TokenCache, secret: str) -> None:
        self._fetch = fetch
        self.tokens: TokenCache | None = tokens
        self.secrets: tuple[str, ...] = (secret,)

    async def token(
        self, http: httpx.AsyncClient, timeouts: Timeouts, observer: CallObserver | None
    ) -> str | None:
        """The cached token, fetched first if there is none (observed, with telemetry on)."""

        def fetch() -> Awaitable[TokenGrant]:
            fetching = self._fetch(http, timeouts)
            return fetching if observer is None else observer.token_fetch(fetching)

        assert self.tokens is not None  # always, for this kind
        return await self.tokens.get(fetch)

    def sign(self, request: httpx.Request) -> None:
        """Nothing to sign: the token says who calls."""


class Signed:
    """No token: every request signed bce-auth-v1 with IAM AK/SK, over what goes on the wire."""

    __slots__ = ("_auth", "secrets")
    tokens: TokenCache | None = None

    def __init__(self, auth: AKSKAuth) -> None:
        self._auth = auth
        self.secrets: tuple[str, ...] = (auth.secret_key,)

    async def token(
        self, http: httpx.AsyncClient, timeouts: Timeouts, observer: CallObserver | None
    ) -> str | None:
        """No token."""
        return None

    def sign(self, request: httpx.Request) -> None:
        """Sign ``request`` afresh (a signature is valid for ``expiration`` seconds)."""
        auth = self._auth
        sign_request(
            request,
            access_key=auth.access_key,
            secret_key=auth.secret_key,
            expiration=auth.expiration,
            now=time.time(),
        )


Credentials = AsIs | Fetched | Signed


def credentials_for(
    auth: Auth,
    api: API,
    *,
    base_url: str,
    iam_base_url: str,
    token_store: TokenStore | None,
) -> Credentials:
    """The strategy for ``auth`` on ``api`` (chosen once, for every call of a transport)."""
    if isinstance(auth, FixedTokenAuth):
        return AsIs(auth.access_token)
    if isinstance(auth, APIKeyAuth):
        return AsIs(auth.api_key)  # sent to the service only, never to a token route
    if isinstance(auth, AKSKAuth) and api == "v1":
        return Signed(auth)
    if isinstance(auth, AccessTokenAuth):
        oauth = auth

        def fetch(http: httpx.AsyncClient, timeouts: Timeouts) -> Awaitable[TokenGrant]:
            return fetch_token(http, base_url, oauth, timeouts)

        identity, url = auth.api_key, base_url
    else:
        iam = auth

        def fetch(http: httpx.AsyncClient, timeouts: Timeouts) -> Awaitable[TokenGrant]:
            return fetch_bearer_token(http, iam_base_url, iam, timeouts)

        identity, url = f"iam\0{auth.access_key}", iam_base_url
    return Fetched(fetch, _cache(url, identity, auth.secret_key, token_store), auth.secret_key)


def _cache(url: str, identity: str, secret: str, store: TokenStore | None) -> TokenCache:
    """A token cache, shared through ``store`` (sealed with ``secret``) when there is one."""
    if store is None:
        return TokenCache(store=None, key="")
    from mpt_async._token_store import SealedTokenStore, token_key, token_seal  # with a store

    sealed = SealedTokenStore(store, token_seal(secret))
    return TokenCache(store=sealed, key=token_key(url, identity, secret))
