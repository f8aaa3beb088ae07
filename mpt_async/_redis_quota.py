"""A quota store in Redis: one budget, and one learned rate, for a fleet of processes.

Each round trip is one run of :data:`~mpt_async._redis_scripts.TAKE`: it carries what this
process owes the fleet (real token counts, a cut of the learned rate or its growth,
announced limits, a pause), claims places if the limits allow, and answers with the fleet's
counters and learned rate, which the quota model adopts. When Redis does not answer and the
store fails open, the same model goes on with counters in this process
(:class:`~mpt_async._quota_store.MemoryQuotaStore`): the rules do not change, only where the
counts are kept.

**Claims.** A round trip costs more client CPU than the rest of a call (coredis spends about
200 µs on one script run, a call against a loopback service about 500 µs), so a process
whose calls keep coming claims several places at once: the schedule's next starts, up to
:data:`CLAIM_AHEAD` ahead, handed out to its next calls without asking Redis again. A place
not used within :data:`CLAIM_LATE` of its start is given back (with the next round trip),
and Redis logs each place as starting that late, so a place used late never leaves the
service's window early in the count. The claim's size follows demand: one place after a
pause, twice the last claim while calls used all of it, what they used when some went back;
one place while a minute window is in force (a place held there would be held a minute).

Each store is one client's voice in the fleet, named by a random lease id. The limiter
says with each take whether it is a batch call (which steps aside while another client's
lease is live) and how many interactive calls wait behind it (while some do, the take
renews this client's lease); :meth:`RedisQuotaStore.release` drops the lease with the next
run of the script, sent soon by the background task. Redis keeps only the leases and
their expiry; when to hold one is the limiter's business, and their length the
priority module's (``mpt_async._priority``). Only interactive calls claim several places
and use claimed ones: a batch call asks Redis each time, so it always sees the leases.
"""

from __future__ import annotations

import collections
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

__all__ = ["CLAIM_AHEAD", "CLAIM_LATE", "CLAIM_MOST", "RedisQuotaStore", "application_key"]

#: The most places one round trip claims.
CLAIM_MOST = 32
#: How far ahead of now a claim takes the schedule's places, in seconds.
CLAIM_AHEAD = 0.025
#: How late a claimed place may still be used (Redis logs it as starting this late).
CLAIM_LATE = 0.010

_US = 1_000_000
_MILLI = 1000
#: Owed corrections sent by the background task once this many have piled up (else they
#: ride with the next call: one round trip per call).
_OWED_FLUSH = 128
_REASONS = {1: RATE, 2: WINDOW, 3: PAUSE, 4: PRIORITY}
#: Reply fields are below this (exact as floats); a rate is at most a million a second.
_EXACT = 1 << 53
_MAX_RATE = 10**6 * _MILLI
#: The furthest ahead a claimed place can start, in microseconds.
_REACH = round(CLAIM_AHEAD * _US)


def application_key(base_url: str, auth: Auth) -> str:
    """A string naming one application on one service: its credentials only as a hash."""
    return token_key(base_url, *auth._billed())


def _reply(raw: object, most: int) -> list[int]:
    """The script's answer, checked: integers in range, or a wrong reply.

    Eleven, then as many places' starts as the eleventh says (at most ``most``, and none
    beyond the claim's reach).
    """
    if not isinstance(raw, (list, tuple)) or not 11 <= len(raw) <= 11 + most:
        raise _WrongReply
    values = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _EXACT:
            raise _WrongReply
        values.append(value)
    if values[3] > _MAX_RATE or values[1] > 4 or len(values) != 11 + values[10]:
        raise _WrongReply
    if any(start > _REACH for start in values[11:]):
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
        # Claimed places not handed out yet: (may start at, may start until, logged id).
        self._stash: collections.deque[tuple[float, float, str]] = collections.deque()
        self._stash_epoch = 0  # the model's epoch when they were claimed
        self._unused = 0  # places claimed but not used, as counted in the last answer
        self._claimed_at = -math.inf
        self._claimed = 0  # places the last claim got
        self._used = 0  # of those, how many were handed out
        store.register(self)

    def __repr__(self) -> str:
        return f"<RedisQuotaStore {self.store!r}>"

    async def take(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE, behind: int = 0
    ) -> Grant:
        """Take a place in the shared budget, or say how long to wait.

        An interactive call gets a place claimed before, without a round trip, if there is
        one. A batch call always asks Redis (and claims one place), so it steps aside while
        another client's lease is live; an interactive call leaves this client's lease when
        it must wait or others wait behind it, and drops it otherwise.
        """
        if self._stash and priority != BATCH:
            grant = self._from_stash(model)
            if grant is not None:
                return grant
        claim = secrets.token_hex(8)
        # A batch call carries a pending drop; an interactive take decides the lease anew.
        drop = "-" if self._drop else ""
        lease = drop if priority == BATCH else "+" if behind else "?"
        self._drop = False
        sent = model.clock()
        most = 1 if priority == BATCH else self._claim_size(model, sent, behind)
        try:
            answer = await self._run(claim, cost, lease, batch=priority == BATCH, most=most)
        except _Unavailable:  # in-process order only, until Redis answers again
            return self._local.take_now(model.current(), cost)
        if not answer[10]:
            # A wait is never longer than the window (the script resets what lies beyond).
            wait = min(max(answer[0] / _US, 0.001), self._horizon / _US)
            return Grant(wait, _REASONS.get(answer[1], RATE))
        self._stock(claim, answer[12:], sent, model)
        return Grant(0.0, None, f"{claim}:1")  # the first place starts now

    def take_at_once(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE
    ) -> Grant | None:
        """A place claimed before, due now, for an interactive call; else ``None``."""
        if priority == BATCH or not self._stash:
            return None
        grant = self._from_stash(model)
        return grant if grant is not None and grant.wait <= 0 else None

    def _claim_size(self, model: QuotaModel, now: float, behind: int) -> int:
        """How many places to claim: as many as the calls that come soon will use."""
        if model.rpm is not None or model.tpm is not None:
            size = 1  # a place held in a minute window would be held for the minute
        elif now - self._claimed_at > CLAIM_AHEAD + CLAIM_LATE:
            size = 1  # after a pause: demand unknown
        elif self._used >= self._claimed:
            size = 2 * self._claimed  # calls used the whole last claim
        else:
            size = max(1, self._used)
        self._claimed_at, self._claimed, self._used = now, 1, 1
        return min(CLAIM_MOST, max(size, behind + 1))

    def _stock(self, claim: str, starts: list[int], sent: float, model: QuotaModel) -> None:
        """Keep the places after the first, each from its start until it is too late.

        A place starts no sooner than the schedule says (counted from when the answer
        came), and is used no later than Redis logged it (counted from before the claim
        was sent): after a round trip longer than the lateness allowed, none is kept.
        """
        self._claimed = 1 + len(starts)
        self._unused = len(starts)
        self._stash_epoch = model.epoch
        after, late = model.clock(), sent + CLAIM_LATE
        handles = [f"{claim}:{number}" for number in range(2, len(starts) + 2)]
        if after > late:  # none could be used in time: all go back
            for handle in handles:
                self._owed += (handle, -1)
            return
        for handle, start in zip(handles, starts, strict=True):
            offset = start / _US
            self._stash.append((after + offset, late + offset, handle))

    def _from_stash(self, model: QuotaModel) -> Grant | None:
        """A claimed place for this call, a wait for the next one, or ``None``: claim anew."""
        stash, now = self._stash, model.clock()
        if model.epoch != self._stash_epoch or model.not_before > now:
            self._give_back(len(stash))  # the rate was cut, or the service said to pause
            return None
        while stash and stash[0][1] < now:
            self._give_back(1)  # too late to be used
        if not stash:
            return None
        start, _, handle = stash[0]
        if start > now:
            return Grant(start - now, RATE)
        stash.popleft()
        self._used += 1
        self._unused -= 1
        return Grant(0.0, None, handle)

    def _give_back(self, count: int) -> None:
        """Forget ``count`` claimed places, the first first: Redis hears with the next run."""
        for _ in range(count):
            self._owed += (self._stash.popleft()[2], -1)

    async def _run(
        self, claim: str, cost: int, lease: str = "", *, batch: bool = False, most: int = 0
    ) -> list[int]:
        model = self.model
        owed = self._owed
        first, refines = self._arguments(claim, cost)
        arguments = [
            *first,
            *(self._lease, int(batch), lease, round(LEASE * _US), round(RECHECK * _US)),
            *(most, round(CLAIM_AHEAD * _US), round(CLAIM_LATE * _US)),
            int(refines),
            *owed,
        ]
        self._owed = []

        async def take(connection: Any) -> list[int]:
            raw = await connection.script(TAKE)(keys=self._keys, args=arguments)
            return _reply(raw, most)

        sent = False
        try:
            answer = await self.store.run(take)
            sent = True
        finally:
            if not sent:  # kept for the next call; a learned cut or growth stays local
                self._owed[:0] = owed
        model.adopt(answer[3] / _MILLI, answer[4])
        self._usage = Usage(answer[5], answer[6], answer[7])
        self._unused = len(self._stash)
        if answer[8] or answer[9]:
            model.adopt_announced(answer[8] or None, answer[9] or None)
        return answer

    def _arguments(self, claim: str, cost: int) -> tuple[list[Any], bool]:
        """The script's first arguments: the limits in force and what the fleet should learn.

        Also whether the cut they carry only refines the last one (the script's 26th).
        """
        model = self.model
        limits = model.current()
        now = model.clock()
        rate = model.rate
        seed = 0 if math.isinf(rate) else max(1, round(rate * _MILLI))
        cut = 0 if model.cut is None else max(1, round(model.cut * _MILLI))
        grown = max(0, round(model.grown * _MILLI))
        # A cut was made in the epoch before the model's; a refinement, in the model's.
        refines = bool(cut) and model.cut_refines
        made_in = model.epoch if refines or not cut else model.epoch - 1
        model.cut, model.grown, model.cut_refines = None, 0.0, False
        announced = self._shared = model.announced
        first = [
            claim,
            round(limits.interval * _US),
            limits.per_second or 0,
            limits.rpm or 0,
            limits.tpm or 0,
            self._horizon,
            cost,
            max(0, math.ceil((limits.not_before - now) * _US)) if limits.not_before > now else 0,
            seed,
            made_in,
            cut,
            made_in,
            grown,
            *(limit or 0 for limit in announced),  # with every call: Redis may lose them
            limits.burst,
            int(model.limits.adopt_server_limits),
        ]
        return first, refines

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
        """The fleet's counters as of the last round trip, less the places not used."""
        usage, unused = self._usage, self._unused
        if not unused:
            return usage
        return Usage(max(0, usage.last_second - unused), max(0, usage.calls - unused), usage.tokens)

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
