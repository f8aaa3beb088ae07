"""Access tokens: fetching one from the token endpoint, and the cache that shares it.

:func:`fetch_token` asks the OAuth endpoint for a grant and reads its refusals.

A :class:`TokenCache` belongs to one client and every copy made by ``with_options``. Given
a :class:`~mpt_async._token_store.TokenStore`, it also shares its token beyond them: it
reads the store before fetching, and fetches while holding the store's lock.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import httpx

from mpt_async import _converter
from mpt_async._body import ACCEPT_ENCODING, plain_content
from mpt_async._codes import Action
from mpt_async._exceptions import (
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    MalformedResponseError,
)
from mpt_async._logging import logger
from mpt_async._models import TokenGrant
from mpt_async._reply import Refusal, read_reply
from mpt_async._token_store import MAX_TOKEN_LENGTH, is_token
from mpt_async._verdict import AttemptFailed, connection_error

if TYPE_CHECKING:
    from mpt_async._auth import AccessTokenAuth, AKSKAuth
    from mpt_async._timeouts import Timeouts
    from mpt_async._token_store import StoredToken, TokenStore

__all__ = [
    "IAM_TOKEN_PATH",
    "TOKEN_PATH",
    "CachedToken",
    "TokenCache",
    "fetch_bearer_token",
    "fetch_token",
    "refresh_margin",
]

TOKEN_PATH = "/oauth/2.0/token"
#: A token fetch is quick; do not let it wait as long as a model's answer.
TOKEN_READ_TIMEOUT = 30.0
_FETCHING = "fetching a token"


async def fetch_token(
    http: httpx.AsyncClient, base_url: str, auth: AccessTokenAuth, timeouts: Timeouts
) -> TokenGrant:
    """Ask the token endpoint for a grant (``client_credentials``).

    Its whole reply must come within ``min(timeouts.read, 30 s)``.

    Raises:
        AttemptFailed: Saying what went wrong and whether the request loop may retry.
    """
    logger.debug("fetching an access token")
    request = plain_content(
        http.build_request(
            "POST",
            base_url + TOKEN_PATH,
            params={
                "grant_type": "client_credentials",
                "client_id": auth.api_key,
                "client_secret": auth.secret_key,
            },
            headers={"Accept-Encoding": ACCEPT_ENCODING},
            timeout=_token_timeout(timeouts),
        )
    )
    data = await _ask(http, request, timeouts, _FETCHING, _oauth_refusal)
    try:
        grant = _converter.structure(data, TokenGrant, status_code=200)
    except MalformedResponseError as exc:
        raise AttemptFailed(exc, Action.RAISE) from None
    if not is_token(grant.access_token):
        error = MalformedResponseError(
            f"the token endpoint sent an access token of {len(grant.access_token)} characters;"
            f" one of 1 to {MAX_TOKEN_LENGTH} printable characters was expected",
            status_code=200,
        )
        raise AttemptFailed(error, Action.RAISE)
    logger.debug("fetched an access token valid for %ds", grant.expires_in)
    return grant


async def _ask(
    http: httpx.AsyncClient,
    request: httpx.Request,
    timeouts: Timeouts,
    doing: str,
    refusal: Refusal,
) -> Any:
    """Send a token request; its whole reply, parsed, within its bounds.

    Raises:
        AttemptFailed: Saying what went wrong and whether the request loop may retry.
    """
    read = min(timeouts.read, TOKEN_READ_TIMEOUT)
    failure: AttemptFailed | None = None
    data = None
    with anyio.move_on_after(read + timeouts.connect + timeouts.pool) as scope:
        try:
            response = await http.send(request, stream=True)
        except httpx.TransportError as exc:
            failure = AttemptFailed(connection_error(exc, doing), Action.RETRY)
        else:
            data = await read_reply(response, doing, refusal)
    if scope.cancelled_caught:
        failure = AttemptFailed(APITimeoutError(f"timed out {doing}"), Action.RETRY)
    if failure is not None:
        raise failure
    return data


def _token_timeout(timeouts: Timeouts) -> httpx.Timeout:
    read = min(timeouts.read, TOKEN_READ_TIMEOUT)
    return httpx.Timeout(
        connect=timeouts.connect, write=timeouts.write, pool=timeouts.pool, read=read
    )


def _oauth_refusal(data: object, response: httpx.Response) -> AttemptFailed | None:
    """The token endpoint's own refusal: ``{"error", "error_description"}``."""
    if not (isinstance(data, dict) and "error" in data):
        return None
    reason = data.get("error_description") or data["error"]
    error = AuthenticationError(
        f"token endpoint refused the credentials: {str(reason)[:300]}",
        status_code=response.status_code,
    )
    error.error = str(data["error"])[:100]
    return AttemptFailed(error, Action.RAISE)


#: IAM's route for v2 bearer tokens (https://cloud.baidu.com/doc/IAM/s/Mlwqxxjdf).
IAM_TOKEN_PATH = "/v1/BCE-BEARER/token"
#: The lifetime asked of IAM for a bearer token: IAM's own default, 30 minutes.
BEARER_LIFETIME = 1800
_FETCHING_BEARER = "fetching a bearer token from IAM"


async def fetch_bearer_token(
    http: httpx.AsyncClient, iam_base_url: str, auth: AKSKAuth, timeouts: Timeouts
) -> TokenGrant:
    """Ask IAM for a v2 bearer token, with a bce-auth-v1 signature made with IAM AK/SK.

    IAM answers ``{userId, token, status, createTime, expireTime}``; the token is granted for
    :data:`BEARER_LIFETIME` seconds, and replaced at about 80% of that (:func:`refresh_margin`).

    Raises:
        AttemptFailed: Saying what went wrong and whether the request loop may retry.
    """
    from mpt_async._signer import sign_request  # only with IAM AK/SK on v2

    logger.debug("fetching a bearer token from IAM")
    request = plain_content(
        http.build_request(
            "GET",
            iam_base_url + IAM_TOKEN_PATH,
            params={"expireInSeconds": str(BEARER_LIFETIME)},
            headers={"Accept-Encoding": ACCEPT_ENCODING},
            timeout=_token_timeout(timeouts),
        )
    )
    sign_request(
        request,
        access_key=auth.access_key,
        secret_key=auth.secret_key,
        expiration=auth.expiration,
        now=time.time(),
    )
    data = await _ask(http, request, timeouts, _FETCHING_BEARER, _iam_refusal)
    reply: dict[str, object] = data if isinstance(data, dict) else {}
    token = reply.get("token")
    if (
        not isinstance(token, str)
        or not is_token(token)
        or reply.get("status", "enable") != "enable"
    ):
        error = MalformedResponseError(
            "IAM's reply holds no usable bearer token (a printable 'token' of at most"
            f" {MAX_TOKEN_LENGTH} characters, with status 'enable')",
            status_code=200,
        )
        raise AttemptFailed(error, Action.RAISE)
    return TokenGrant(access_token=token, expires_in=_lifetime(reply))


def _lifetime(data: dict[str, object]) -> int:
    """The bearer token's lifetime from its ISO times; the asked one if they don't parse."""
    try:
        created = datetime.fromisoformat(str(data["createTime"]).replace("Z", "+00:00"))
        expires = datetime.fromisoformat(str(data["expireTime"]).replace("Z", "+00:00"))
        seconds = int((expires - created).total_seconds())
    except (KeyError, ValueError, TypeError, OverflowError):
        return BEARER_LIFETIME
    return seconds if 0 < seconds <= 31 * 86400 else BEARER_LIFETIME


def _iam_refusal(data: object, response: httpx.Response) -> AttemptFailed | None:
    """IAM's refusal: BCE's ``{"code", "message", "requestId"}`` with a 4xx or 5xx status."""
    status = response.status_code
    if status < 400 or not (isinstance(data, dict) and "code" in data):
        return None
    reason = str(data.get("message") or data["code"])[:300]
    if status >= 500:
        return AttemptFailed(
            InternalServerError(f"IAM failed: {reason}", status_code=status), Action.RETRY
        )
    error = AuthenticationError(f"IAM refused the AK/SK: {reason}", status_code=status)
    error.error = str(data["code"])[:100]
    return AttemptFailed(error, Action.RAISE)


def refresh_margin(expires_in: float) -> float:
    """How long before expiry a token is replaced: a fifth of its life, at most an hour.

    A 30-minute IAM bearer token is replaced after 24 minutes; a 30-day v1 token an hour early.
    """
    return min(expires_in / 5, 3600.0)


@attrs.frozen
class CachedToken:
    """A token and the monotonic time after which it should no longer be used."""

    value: str = attrs.field(repr=False)
    refresh_at: float

    @classmethod
    def from_grant(cls, grant: TokenGrant, now: float) -> CachedToken:
        """Cache a grant fetched at monotonic time ``now``."""
        return cls(grant.access_token, now + grant.expires_in - refresh_margin(grant.expires_in))


class TokenCache:
    """Single-flight access to the current token.

    However many calls arrive at once, one fetch runs; the others wait for it and share
    its token, or its error (a failed fetch is not repeated by every waiter).

    Args:
        clock: The monotonic clock that times the token held in memory.
        store: Where the token is shared with other clients and processes, if anywhere.
        key: The token's key in ``store`` (see :func:`~mpt_async._token_store.token_key`).
        wall_clock: The clock of the stored tokens' times (they cross processes).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        store: TokenStore | None = None,
        key: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._token: CachedToken | None = None
        self._lock = anyio.Lock()
        self._generation = 0
        self._last_error: BaseException | None = None
        self._store = store
        self._key = key
        self._wall = wall_clock
        #: The last token the server refused: a store still holding it has nothing usable.
        self._refused: str | None = None

    def __repr__(self) -> str:
        state = "empty" if self._token is None else "holding a token"
        return f"<TokenCache {state}>"

    def _fresh(self) -> str | None:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        return None

    async def get(self, fetch: Callable[[], Awaitable[TokenGrant]]) -> str:
        """Return a usable token, fetching one if there is none or it is about to expire.

        Args:
            fetch: Fetches a new grant; called by at most one task at a time.

        Raises:
            Exception: Whatever ``fetch`` raised, in the task that ran it and in those that
                waited for it.
        """
        if (value := self._fresh()) is not None:
            return value
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                # Another task fetched while this one waited: share its outcome.
                if self._last_error is not None:
                    raise copy.copy(self._last_error)
                if (value := self._fresh()) is not None:
                    return value
            try:
                if self._store is None:
                    self._token = CachedToken.from_grant(await fetch(), self._clock())
                else:
                    self._token = await self._through_store(self._store, fetch)
            except Exception as exc:
                self._last_error = exc
                self._generation += 1
                raise
            self._last_error = None
            self._generation += 1
            return self._token.value

    async def _through_store(
        self, store: TokenStore, fetch: Callable[[], Awaitable[TokenGrant]]
    ) -> CachedToken:
        """A usable token from the store, or one fetched under its lock and saved there."""
        if (cached := self._adopt(await self._load(store))) is not None:
            return cached
        async with store.lock(self._key):
            # Whoever held the lock before may have just saved a fresh token.
            if (cached := self._adopt(await self._load(store))) is not None:
                logger.debug("using the access token another client just saved")
                return cached
            grant = await fetch()
            now = self._wall()
            from mpt_async._token_store import StoredToken  # only with a store

            stored = StoredToken(grant.access_token, now + grant.expires_in, now)
            try:
                await store.save(self._key, stored)
            except Exception as exc:  # noqa: BLE001 - a store is a cache: never fail a call
                logger.warning("could not save the access token: %s", _describe(exc))
        return CachedToken.from_grant(grant, self._clock())

    async def _load(self, store: TokenStore) -> StoredToken | None:
        try:
            return await store.load(self._key)
        except Exception as exc:  # noqa: BLE001 - a store is a cache: fetch instead
            logger.warning("could not load the access token: %s", _describe(exc))
            return None

    def _adopt(self, stored: StoredToken | None) -> CachedToken | None:
        """``stored`` timed on the monotonic clock, unless refused or due for refresh."""
        if stored is None or stored.value == self._refused:
            return None
        lifetime = max(stored.expires_at - stored.obtained_at, 0.0)
        left = stored.expires_at - refresh_margin(lifetime) - self._wall()
        if left <= 0:
            return None
        return CachedToken(stored.value, self._clock() + left)

    def invalidate(self, failed: str) -> bool:
        """Drop the cached token if it is still ``failed`` (the one the server refused).

        With a store, a stored token that is still ``failed`` is not used again either; it
        is replaced by the next fetch.

        Returns:
            Whether it was dropped; ``False`` means another task already replaced it.
        """
        self._refused = failed
        if self._token is not None and self._token.value == failed:
            self._token = None
            return True
        return False


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
