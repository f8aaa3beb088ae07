"""The limiter: every client has one; calls queue in it until the quota model lets them go.

One :class:`Limiter` belongs to a client and every copy made by ``with_options``. The
request loop asks it for a place right before each attempt is sent (retries and quota
waits included), and tells it about each reply and refusal through the attempt's
:class:`Ticket`. What the limits are is the quota model's business
(``mpt_async._quota_model``); what has been counted is the quota store's
(``mpt_async._quota_store``, or Redis). This module only queues.

The waiters queue per priority (``INTERACTIVE`` before ``BATCH``), first come first served
within one. Only the head of the queue asks the store for a place and sleeps until the
store's answer (or until something changes: a reply, a settled charge); the others sleep
until they are the head. With the in-process store, each change also gives places to the
waiters at the head that may start now, all at once and in order, so that a queue empties
in one turn of the event loop instead of one waiter a turn. A cancelled waiter leaves the
queue and holds nothing: the store counts a call only when it starts (a place given to a
waiter that is cancelled before it wakes is given back).

With a shared store, the order holds across clients too: while interactive calls of this
client wait, the store keeps a lease for it, which holds other clients' batch calls back
(see ``mpt_async._priority``). The head renews it by asking again at least every half
lease; the last interactive waiter to start or leave drops it.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING

import anyio

from mpt_async._logging import logger
from mpt_async._priority import BATCH, INTERACTIVE, LEASE, NAMES
from mpt_async._quota_model import QuotaModel, TokenEstimate
from mpt_async._quota_store import RATE, Grant, MemoryQuotaStore, QuotaStore
from mpt_async._ratelimit import LearnedLimits, RateLimitInfo, RateLimits

if TYPE_CHECKING:
    from mpt_async._auth import Auth
    from mpt_async._exceptions import RateLimitError

__all__ = ["BATCH", "INTERACTIVE", "Limiter", "Ticket", "TokenEstimate", "new_limiter"]

#: At most one log line about the learned limits in this many seconds.
LOG_EVERY = 10.0


def new_limiter(
    limits: RateLimits | None,
    base_url: str,
    auth: Auth,
    endpoint: str,
    *,
    window: float = 60.0,
) -> Limiter:
    """The limiter of a new client: counted in this process, or in ``limits.shared``."""
    limits = limits or RateLimits()
    model = QuotaModel(limits, clock=anyio.current_time, window=window)
    if limits.shared is None:
        return Limiter(model, MemoryQuotaStore(model))
    from mpt_async._redis_quota import RedisQuotaStore  # only with a shared store

    store = RedisQuotaStore(
        model, limits.shared, base_url=base_url.rstrip("/"), auth=auth, endpoint=endpoint
    )
    return Limiter(model, store)


class _Waiter:
    __slots__ = ("event", "fallback", "grant", "queued", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.event: anyio.Event | None = None
        self.queued = True
        #: A place the queue took for this waiter while it slept (an in-process store),
        #: until the waiter takes it.
        self.grant: Grant | None = None
        self.fallback = 0


class Ticket:
    """One admitted attempt's place: the request loop reports how it ended.

    :meth:`reply` when an answer starts arriving, :meth:`settle` with the real token count,
    :meth:`refused` when a quota refused it, and :meth:`finish` when the attempt is over.
    """

    __slots__ = ("_epoch", "_fallback", "_flying", "_handle", "_limiter", "_settled", "_size")

    def __init__(
        self, limiter: Limiter, handle: object, size: int, fallback: int, epoch: int
    ) -> None:
        self._limiter = limiter
        self._handle = handle
        self._size = size
        self._fallback = fallback
        self._epoch = epoch
        self._settled = False
        self._flying = True

    def __repr__(self) -> str:
        return f"<Ticket {'in flight' if self._flying else 'answered'}>"

    def reply(self, info: RateLimitInfo | None) -> None:
        """A reply arrived (with this quota in its headers, if any)."""
        limiter = self._limiter
        limiter.model.replied(info)
        limiter.store.replied()
        if info is not None:
            limiter.note()
        self.answered()

    def answered(self) -> None:
        """The attempt is over on the wire (idempotent)."""
        if self._flying:
            self._flying = False
            self._limiter.landed()

    def refused(self, error: RateLimitError | None, retry_after: float | None = None) -> None:
        """A quota refused the call: it is not counted, and the model learns from it."""
        if self._settled:
            return
        self._settled = True
        limiter = self._limiter
        limiter.store.settle(self._handle, -1)
        quota = None if error is None else error.quota
        limiter.model.refused(
            quota, epoch=self._epoch, usage=limiter.store.usage(), retry_after=retry_after
        )
        limiter.note()
        self.answered()

    def settle(self, total_tokens: int, prompt_tokens: int | None = None) -> None:
        """Charge the real token count (``0`` for a call the service refused).

        Args:
            total_tokens: The call's ``usage.total_tokens``.
            prompt_tokens: Its ``usage.prompt_tokens``, to improve later estimates.
        """
        if self._settled:
            return
        self._settled = True
        limiter = self._limiter
        limiter.store.settle(self._handle, limiter.model.charge(total_tokens))
        if prompt_tokens is not None:
            limiter.model.learn(self._size, prompt_tokens, total_tokens - prompt_tokens)
        limiter.poke()

    def finish(self) -> None:
        """The attempt ended; without a real count, charge what its prompt likely cost."""
        self.answered()
        if not self._settled:
            self.settle(self._fallback)


class Limiter:
    """Queues calls until the quota model and its store let them start.

    Args:
        model: The policy.
        store: The counters.
    """

    def __init__(self, model: QuotaModel, store: QuotaStore) -> None:
        self.model = model
        self.store = store
        self._queues: tuple[collections.deque[_Waiter], ...] = (
            collections.deque(),
            collections.deque(),
        )
        self._waiting = 0
        self._flying = 0
        self._leased = False  # the store may hold this client's interactive lease
        self._logged = model.learned()
        self._next_log = -math.inf

    def __repr__(self) -> str:
        return f"<Limiter {self.model!r}, {self._flying} in flight, {self._waiting} waiting>"

    @property
    def limits(self) -> RateLimits:
        """The user's limits."""
        return self.model.limits

    def learned(self) -> LearnedLimits:
        """The limits calls are held to now."""
        return self.model.learned()

    @property
    def waiting(self) -> int:
        """How many calls wait for a place."""
        return self._waiting

    def admit_now(self, size: int, priority: int = INTERACTIVE) -> Ticket | None:
        """A place at once, if no call waits and the store grants one without I/O.

        ``None``: :meth:`acquire` it (a wait, or a round trip to a shared store).
        """
        if not self._may_go_first():
            return None
        model = self.model
        cost, fallback = model.estimate(size, model.tpm)
        grant = self.store.take_at_once(model, cost, priority)
        if grant is None:
            return None
        return self._admit(grant.handle, size, fallback, held=False)

    async def acquire(self, size: int, priority: int = INTERACTIVE) -> Ticket:
        """Wait for a place for one attempt, by priority then in arrival order.

        Args:
            size: The request body's length in bytes (the basis of the token estimate).
            priority: :data:`INTERACTIVE` or :data:`BATCH`.
        """
        model = self.model
        cost, fallback = model.estimate(size, model.tpm)
        grant = None
        if self._may_go_first():
            try:
                grant = await self._take(cost, priority, 0)
            finally:
                if grant is None and priority == INTERACTIVE:
                    self._unclaim()  # cancelled: the take may have left a lease
            if grant.wait <= 0:
                return self._admit(grant.handle, size, fallback, held=False)
        return await self._queue(size, priority, grant)

    def _may_go_first(self) -> bool:
        """Whether a new call may ask for a place without queueing.

        None waits, and no call is awaiting the first reply (which may announce the limits).
        """
        return not self._waiting and not (self._flying and self.model.first_reply_wait())

    async def _queue(self, size: int, priority: int, refused: Grant | None) -> Ticket:
        """Wait in ``priority``'s queue until this call is the head and the store admits it.

        ``refused``: the store's answer to this call a moment ago, slept on before asking
        again (if this call is the head).
        """
        model = self.model
        waiter = _Waiter(size)
        queue = self._queues[priority]
        queue.append(waiter)
        self._waiting += 1
        held = False
        started = model.clock()
        try:
            while True:
                if waiter.grant is not None:  # served while it slept: its place is taken
                    grant, fallback, waiter.grant = waiter.grant, waiter.fallback, None
                    break
                if self._head() is not waiter:
                    refused = None  # stale once this call is the head
                    event = waiter.event = anyio.Event()
                    await event.wait()
                    continue
                # The first reply may bring the real limits: only one call goes before it.
                wait = self._flying and model.first_reply_wait()
                if wait:
                    refused = None
                else:
                    if refused is None:
                        grant, fallback = await self._ask(size, priority)
                        if grant.wait <= 0:
                            break
                    else:
                        grant, refused = refused, None
                    # A waiting interactive call renews its client's lease in the fleet.
                    wait = min(grant.wait, LEASE / 2) if priority == INTERACTIVE else grant.wait
                    held = held or grant.reason == RATE
                event = waiter.event = anyio.Event()
                with anyio.move_on_after(wait):
                    await event.wait()
        finally:
            if waiter.queued:
                queue.remove(waiter)
                self._waiting -= 1
            elif waiter.grant is not None:  # served, then cancelled: it gives its place back
                self.store.settle(waiter.grant.handle, -1)
            if priority == INTERACTIVE:
                self._unclaim()
            self.poke()  # the next head, if any
        logger.debug("quota: a %s call waited %.3f s", NAMES[priority], model.clock() - started)
        return self._admit(grant.handle, size, fallback, held=held)

    async def _ask(self, size: int, priority: int) -> tuple[Grant, int]:
        """Ask the store for the head's place, estimated afresh (the limits may have moved).

        Returns:
            The store's answer, and the tokens to charge if the call never reports usage.
        """
        model = self.model
        cost, fallback = model.estimate(size, model.tpm)
        behind = len(self._queues[priority]) - 1
        return await self._take(cost, priority, behind), fallback

    async def _take(self, cost: int, priority: int, behind: int) -> Grant:
        """Ask the store for a place, keeping track of this client's lease."""
        if priority != INTERACTIVE:
            return await self.store.take(self.model, cost, priority, behind)
        self._leased = True  # until the store says otherwise, the take may leave one
        grant = await self.store.take(self.model, cost, priority, behind)
        # Admitted with no one behind, the store dropped the lease; else it holds one.
        self._leased = bool(behind) or grant.wait > 0
        return grant

    def _unclaim(self) -> None:
        """No interactive call of this client waits: drop its lease, if it may hold one."""
        if self._leased and not self._queues[INTERACTIVE]:
            self._leased = False
            self.store.release()

    def _head(self) -> _Waiter | None:
        for queue in self._queues:
            if queue:
                return queue[0]
        return None

    def _admit(self, handle: object, size: int, fallback: int, *, held: bool) -> Ticket:
        self._flying += 1
        model = self.model
        model.admitted(held=held)
        if held:
            self.note()
        return Ticket(self, handle, size, fallback, model.epoch)

    def note(self) -> None:
        """Log the limits in force when they changed (one INFO line in LOG_EVERY seconds)."""
        now = self.model.clock()
        if now < self._next_log:
            return
        learned = self.model.learned()
        if learned == self._logged:
            return
        self._logged, self._next_log = learned, now + LOG_EVERY
        rate = "unlimited" if learned.qps is None else f"{learned.qps:.3g}"
        logger.info(
            "quota: calls held to %s a second (rpm %s, tpm %s)%s",
            rate,
            learned.rpm,
            learned.tpm,
            ", learned" if learned.adaptive else "",
        )

    def poke(self) -> None:
        """Wake the head of the queue: its wait may be over sooner than it planned."""
        self._serve()
        head = self._head()
        if head is not None and head.event is not None:
            head.event.set()

    def _serve(self) -> None:
        """Take places for the waiters at the head that may start now, in order, and wake them.

        Only places a store grants without I/O (the in-process counters, or places a shared
        store claimed before). Without this, a queue (once calls were held) drains one
        waiter a turn of the event loop, every new call queues behind it meanwhile, and
        under many concurrent callers it never empties, at any rate.
        """
        model = self.model
        while (head := self._head()) is not None:
            # (Before the first reply, the head goes alone: it may announce the limits.)
            if model.first_reply_wait():
                return
            priority = INTERACTIVE if self._queues[INTERACTIVE] else BATCH
            cost, fallback = model.estimate(head.size, model.tpm)
            grant = self.store.take_at_once(model, cost, priority)
            if grant is None:
                return
            self._queues[priority].popleft()
            self._waiting -= 1
            head.queued = False
            head.grant, head.fallback = grant, fallback
            if head.event is not None:
                head.event.set()

    def landed(self) -> None:
        """A call is no longer in flight."""
        self._flying -= 1
        self.poke()
