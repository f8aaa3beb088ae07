"""The access-token cache: one fetch at a time, refreshed before it runs out.

A :class:`TokenCache` belongs to one client and every copy made by ``with_options``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable

import anyio
import attrs

from mpt_async._models import TokenGrant

__all__ = ["CachedToken", "TokenCache", "refresh_margin"]


def refresh_margin(expires_in: float) -> float:
    """How long before expiry a token is replaced: a tenth of its life, at most an hour."""
    return min(expires_in / 10, 3600.0)


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
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: CachedToken | None = None
        self._lock = anyio.Lock()
        self._generation = 0
        self._last_error: BaseException | None = None

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
                grant = await fetch()
            except Exception as exc:
                self._last_error = exc
                self._generation += 1
                raise
            self._token = CachedToken.from_grant(grant, self._clock())
            self._last_error = None
            self._generation += 1
            return self._token.value

    def invalidate(self, failed: str) -> bool:
        """Drop the cached token if it is still ``failed`` (the one the server refused).

        Returns:
            Whether it was dropped; ``False`` means another task already replaced it.
        """
        if self._token is not None and self._token.value == failed:
            self._token = None
            return True
        return False
