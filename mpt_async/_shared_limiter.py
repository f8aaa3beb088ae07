"""Rate limits shared across processes and hosts, through a :class:`~mpt_async.RedisStore`.

A :class:`SharedLimiter` is a :class:`~mpt_async._limiter.Limiter` whose places are
reserved in Redis, by one atomic script per call (``mpt_async._redis_scripts.ADMIT``): the
script answers when the call may start, by the Redis server's clock, and the caller sleeps
until then here, in its own task (cancellable: a cancelled waiter gives its place back).
What a call learns later (its real token count, the limits a reply announced, a "too
many" pause) is owed to Redis and sent with this process's next reservation, or by
:meth:`~mpt_async.RedisStore.aclose`. When Redis does not answer and the store fails
open, the limiter counts in this process instead, as the plain :class:`Limiter` does.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Any

import anyio

from mpt_async._auth import AccessTokenAuth, AKSKAuth, APIKeyAuth, Auth, FixedTokenAuth
from mpt_async._limiter import Limiter, Ticket
from mpt_async._redis_scripts import ADMIT, CANCEL
from mpt_async._redis_store import RedisStore, _Unavailable
from mpt_async._token_store import token_key

if TYPE_CHECKING:
    from mpt_async._ratelimit import RateLimitInfo, RateLimits

__all__ = ["SharedLimiter", "SharedTicket", "application_key"]

_US = 1_000_000


def application_key(base_url: str, auth: Auth) -> str:
    """A string naming one application on one service: its credentials only as a hash."""
    if isinstance(auth, AccessTokenAuth):
        return token_key(base_url, auth.api_key, auth.secret_key)
    if isinstance(auth, AKSKAuth):
        return token_key(base_url, f"aksk\0{auth.access_key}", auth.secret_key)
    if isinstance(auth, APIKeyAuth):
        return token_key(base_url, "apikey\0", auth.api_key)
    assert isinstance(auth, FixedTokenAuth)
    return token_key(base_url, "fixed\0", auth.access_token)


class SharedTicket(Ticket):
    """One admitted attempt's reservation in Redis."""

    __slots__ = ("_estimate", "_id", "_shared")

    def __init__(
        self, limiter: SharedLimiter, reservation: str, size: int, estimate: int, fallback: int
    ) -> None:
        self._limiter = self._shared = limiter  # its observe() shares what a reply announced
        self._id = reservation
        self._size = size
        self._estimate = estimate
        self._fallback = fallback
        self._settled = False

    def __repr__(self) -> str:
        return f"<SharedTicket {self._estimate} tokens estimated>"

    def _answered(self) -> None:
        """Nothing to do: a reservation leaves the windows by the Redis clock."""

    def _charge(self, tokens: int) -> None:
        """Replace the reservation's estimate with ``tokens``, in Redis."""
        self._shared.owe(self._id, tokens)


class SharedLimiter(Limiter):
    """Holds calls back to one budget shared in Redis (or, when Redis fails open, per process).

    Args:
        limits: The user's limits (``limits.shared`` is ``store``).
        store: Where the budget lives.
        base_url: The service's address.
        auth: The credentials (only their hash names the budget).
        endpoint: The API name: each endpoint has its own budget.
        window: The length of the RPM and TPM windows in seconds (shorter in tests).
    """

    def __init__(
        self,
        limits: RateLimits,
        store: RedisStore,
        *,
        base_url: str,
        auth: Auth,
        endpoint: str,
        window: float = 60.0,
    ) -> None:
        super().__init__(limits, window=window)
        self.store = store
        application = application_key(base_url.rstrip("/"), auth)
        names = ("limits", "rpm", "tpm", "tpm-cost", "server")
        self._keys = [store.key(application, f"{name}:{endpoint}") for name in names]
        self._interval_us = math.ceil(_US / limits.qps) if limits.qps is not None else 0
        self._window_us = round(window * _US)
        self._owed: list[Any] = []  # (reservation id, real tokens), flattened
        #: The limits (rpm, tpm) the service last announced, sent with every call: Redis
        #: may have lost them (a restart, or a day without calls).
        self._shared_limits = (0, 0)
        self._limits_unsent = False
        self._pause = 0
        store.register(self)

    def __repr__(self) -> str:
        return f"<SharedLimiter qps={self.limits.qps} rpm={self.rpm} tpm={self.tpm}>"

    async def acquire(self, size: int) -> Ticket:
        """Reserve a place in the shared budget and sleep until it comes."""
        estimate, fallback = self.estimate(size, self.tpm)
        reservation = secrets.token_hex(8)
        try:
            start, now = await self._reserve(reservation, estimate)
        except _Unavailable:
            return await super().acquire(size)
        # (Cancelled while the script ran: its reservation, if any, expires by itself.)
        if start > now:
            given_back = True
            try:
                await anyio.sleep((start - now) / _US)
                given_back = False
            finally:
                if given_back:
                    with anyio.CancelScope(shield=True):
                        await self._cancel(reservation, start)
        return SharedTicket(self, reservation, size, estimate, fallback)

    def _arguments(self, reservation: str, estimate: int) -> list[Any]:
        limits = self.limits
        return [
            reservation,
            self._interval_us,
            limits.rpm or 0,
            limits.tpm or 0,
            self._window_us,
            self._window_us // 50,  # margin: the service sees a call a little after
            estimate,
            int(limits.adopt_server_limits),
            *self._shared_limits,
            self._pause,
            *self._owed,
        ]

    async def _reserve(self, reservation: str, estimate: int) -> tuple[int, int]:
        arguments = self._arguments(reservation, estimate)
        # What this call carries to Redis is taken now (and put back if it does not go).
        owed, unsent, pause = self._owed, self._limits_unsent, self._pause
        self._owed, self._limits_unsent, self._pause = [], False, 0
        sent = False
        try:
            result = await self.store.run(
                lambda c: c.script(ADMIT)(keys=self._keys, args=arguments)
            )
            sent = True
        finally:
            if not sent:
                self._owed[:0] = owed
                self._limits_unsent = self._limits_unsent or unsent
                self._pause = max(self._pause, pause)
        return int(result[0]), int(result[1])

    async def _cancel(self, reservation: str, start: int) -> None:
        try:
            await self.store.run(
                lambda c: c.script(CANCEL)(
                    keys=self._keys, args=[reservation, start, self._interval_us]
                )
            )
        except Exception:  # noqa: BLE001 - a reservation not given back expires by itself
            return

    async def flush(self) -> None:
        """Send what is owed to Redis now (real token counts, announced limits, pauses)."""
        if self._owed or self._limits_unsent or self._pause:
            try:
                await self._reserve("", 0)
            except Exception:  # noqa: BLE001 - it is only bookkeeping; the windows expire
                return

    def owe(self, reservation: str, tokens: int) -> None:
        """Note a reservation's real token count, to send to Redis (if tokens are counted)."""
        if self.limits.tpm is not None or self.limits.adopt_server_limits:
            self._owed += (reservation, max(0, tokens))
            self.store.nudge()

    def observe(self, info: RateLimitInfo | None) -> None:
        """Adopt the limits a reply announced, here and (with the next call) in Redis."""
        super().observe(info)
        if info is None or not self.limits.adopt_server_limits:
            return
        announced = (info.limit_requests or 0, info.limit_tokens or 0)
        if announced != (0, 0) and announced != self._shared_limits:
            self._shared_limits, self._limits_unsent = announced, True
            self.store.nudge()

    def pause(self, seconds: float) -> None:
        """Hold every new call back for ``seconds``, in every process."""
        super().pause(seconds)
        self._pause = max(self._pause, math.ceil(seconds * _US))
        self.store.nudge()
