"""A quota store in Redis: one budget, and one learned rate, for a fleet of processes.

Each admission is one run of :data:`~mpt_async._redis_scripts.TAKE` (one round trip): it
carries what this process owes the fleet (real token counts, a cut of the learned rate or
its growth, announced limits, a pause), takes the call's place if the limits allow, and
answers with the fleet's counters and learned rate, which the quota model adopts. When
Redis does not answer and the store fails open, the same model goes on with counters in
this process (:class:`~mpt_async._quota_store.MemoryQuotaStore`): the rules do not change,
only where the counts are kept.

Each store is one client's voice in the fleet, named by a random lease id. The limiter
says with each take whether it is a batch call (which steps aside while another client's
lease is live) and how many interactive calls wait behind it (while some do, the take
renews this client's lease); :meth:`RedisQuotaStore.release` drops the lease with the next
run of the script, sent soon by the background task. Redis keeps only the leases and
their expiry; when to hold one is the limiter's business, and their length the
priority module's (``mpt_async._priority``).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from mpt_async._auth import Auth
from mpt_async._priority import BATCH, INTERACTIVE, LEASE, RECHECK
from mpt_async._quota_model import QuotaModel, Usage
from mpt_async._quota_store import (
    MARGIN,
    PAUSE,
    PRIORITY,
    RATE,
    WINDOW,
    Grant,
    MemoryQuotaStore,
)
from mpt_async._redis_scripts import TAKE
from mpt_async._redis_store import RedisStore, _Unavailable, _WrongReply
from mpt_async._token_store import token_key

__all__ = ["RedisQuotaStore", "application_key"]

_US = 1_000_000
_MILLI = 1000
#: Owed corrections sent by the background task once this many have piled up (else they
#: ride with the next call: one round trip per call).
_OWED_FLUSH = 128
_REASONS = {1: RATE, 2: WINDOW, 3: PAUSE, 4: PRIORITY}
#: Reply fields are below this (exact as floats); a rate is at most a million a second.
_EXACT = 1 << 53
_MAX_RATE = 10**6 * _MILLI


def application_key(base_url: str, auth: Auth) -> str:
    """A string naming one application on one service: its credentials only as a hash."""
    return token_key(base_url, *auth._billed())


def _reply(raw: object) -> list[int]:
    """The script's answer, checked: ten integers in range, or a wrong reply."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 10:
        raise _WrongReply
    values = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _EXACT:
            raise _WrongReply
        values.append(value)
    if values[3] > _MAX_RATE or values[1] > 4:
        raise _WrongReply
    return values


class RedisQuotaStore:
    """The counters of one budget, in Redis (and in this process while Redis is away).

    Args:
        model: The quota model it serves.
        store: Where the budget lives.
        base_url: The service's address.
        auth: The credentials (only their hash names the budget).
        endpoint: The API name: each endpoint has its own budget.
    """

    def __init__(
        self, model: QuotaModel, store: RedisStore, *, base_url: str, auth: Auth, endpoint: str
    ) -> None:
        self.model = model
        self.store = store
        application = application_key(base_url, auth)
        self._keys = [store.key(application, f"quota-{name}:{endpoint}") for name in "slcp"]
        self._horizon = round(model.window * (1 + MARGIN) * _US)
        self._local = MemoryQuotaStore(model)
        self._owed: list[Any] = []  # (id, real tokens), flattened
        self._usage = Usage(0, 0, 0)
        self._shared: tuple[int | None, int | None] = (None, None)  # announced, as sent
        self._lease = secrets.token_hex(8)  # this client's name among the leases
        self._drop = False  # the lease is to be dropped with the next run
        store.register(self)

    def __repr__(self) -> str:
        return f"<RedisQuotaStore {self.store!r}>"

    async def take(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE, behind: int = 0
    ) -> Grant:
        """Take a place in the shared budget, or say how long to wait.

        A batch call steps aside while another client's lease is live; an interactive call
        leaves this client's lease when it must wait or others wait behind it, and drops it
        otherwise.
        """
        reservation = secrets.token_hex(8)
        # A batch call carries a pending drop; an interactive take decides the lease anew.
        drop = "-" if self._drop else ""
        lease = drop if priority == BATCH else "+" if behind else "?"
        self._drop = False
        try:
            answer = await self._run(reservation, cost, lease, batch=priority == BATCH)
        except _Unavailable:  # in-process order only, until Redis answers again
            return self._local.take_now(model.current(), cost)
        wait, why = answer[0], answer[1]
        if why == 0 and wait == 0:
            return Grant(0.0, None, reservation)
        # A wait is never longer than the window (the script resets what lies beyond).
        return Grant(min(max(wait / _US, 0.001), self._horizon / _US), _REASONS.get(why, RATE))

    async def _run(
        self, reservation: str, cost: int, lease: str = "", *, batch: bool = False
    ) -> list[int]:
        model = self.model
        owed = self._owed
        arguments = [
            *self._arguments(reservation, cost),
            *(self._lease, int(batch), lease, round(LEASE * _US), round(RECHECK * _US)),
            *owed,
        ]
        self._owed = []

        async def take(connection: Any) -> list[int]:
            return _reply(await connection.script(TAKE)(keys=self._keys, args=arguments))

        sent = False
        try:
            answer = await self.store.run(take)
            sent = True
        finally:
            if not sent:  # kept for the next call; a learned cut or growth stays local
                self._owed[:0] = owed
        model.adopt(answer[3] / _MILLI, answer[4])
        self._usage = Usage(answer[5], answer[6], answer[7])
        if answer[8] or answer[9]:
            model.adopt_announced(answer[8] or None, answer[9] or None)
        return answer

    def _arguments(self, reservation: str, cost: int) -> list[Any]:
        """The script's first arguments: the limits in force and what the fleet should learn."""
        model = self.model
        limits = model.current()
        now = model.clock()
        rate = model.rate
        seed = 0 if math.isinf(rate) else max(1, round(rate * _MILLI))
        cut = 0 if model.cut is None else max(1, round(model.cut * _MILLI))
        grown = max(0, round(model.grown * _MILLI))
        model.cut, model.grown = None, 0.0
        announced = self._shared = model.announced
        return [
            reservation,
            round(limits.interval * _US),
            limits.per_second or 0,
            limits.rpm or 0,
            limits.tpm or 0,
            self._horizon,
            cost,
            max(0, math.ceil((limits.not_before - now) * _US)) if limits.not_before > now else 0,
            seed,
            model.epoch - (1 if cut else 0),  # a cut was made in the epoch before it
            cut,
            model.epoch - (1 if cut else 0),
            grown,
            *(limit or 0 for limit in announced),  # with every call: Redis may lose them
            limits.burst,
            int(model.limits.adopt_server_limits),
        ]

    def settle(self, handle: object, tokens: int) -> None:
        """Send a call's real tokens (``-1``: refused) with the next call."""
        if not isinstance(handle, str):
            self._local.settle(handle, tokens)
            return
        self._owed += (handle, tokens)
        if tokens < 0 or len(self._owed) >= 2 * _OWED_FLUSH:
            self.store.nudge()  # a refusal teaches the fleet now

    def release(self) -> None:
        """Drop this client's lease with the next run of the script, sent soon."""
        self._drop = True
        self.store.nudge()

    def usage(self) -> Usage:
        """The fleet's counters as of the last round trip."""
        return self._usage

    def replied(self) -> None:
        """Limits a reply announced reach the fleet now, not with the next call."""
        if self.model.announced != self._shared:
            self.store.nudge()

    async def flush(self) -> None:
        """Send what is owed to Redis now (token counts, a cut, announced limits)."""
        model = self.model
        owes = self._owed or model.cut is not None or model.grown
        if owes or self._drop or model.announced != self._shared:
            lease, self._drop = ("-" if self._drop else ""), False
            try:
                await self._run("", 0, lease)
            except Exception:  # noqa: BLE001 - only bookkeeping: the windows expire
                return
