"""Quota stores: the counters that the limits in force are checked against.

A store keeps the per-second schedule (a GCRA: starts ``interval`` apart, after a burst),
a log of the calls of the last window (their start and their tokens) and nothing else: the
policy is the quota model's. :class:`MemoryQuotaStore` keeps them in this process;
``mpt_async._redis_quota`` keeps them in Redis, for a fleet.

A call counts in the minute windows from its start for a window and a margin (the
service sees it a little after it starts); a refused call does not count at all. A store
answers "start now" (and counts the call) or "ask again in so many seconds" (and counts
nothing): a waiter holds no capacity, so one that is cancelled wastes none.

Each call says its priority. One process's queue orders its own waiters; a shared store
also makes a batch call of one client step aside while another client's interactive calls
wait (see ``mpt_async._priority``): the memory store has nothing to share.
"""

from __future__ import annotations

import collections
import math
from typing import Protocol

from mpt_async._priority import INTERACTIVE
from mpt_async._quota_model import Limits, QuotaModel, Usage

__all__ = ["MARGIN", "MAX_LOG", "Grant", "MemoryQuotaStore", "QuotaStore"]

#: A call counts in the minute windows for the window and this share of it.
MARGIN = 0.02
#: The most calls a log keeps (the oldest go first): a bound on memory at any rate.
MAX_LOG = 100_000

#: Why a call could not start: the rate, a minute window, a pause, or (a batch call) other
#: clients' interactive calls that wait.
RATE, WINDOW, PAUSE, PRIORITY = "rate", "window", "pause", "priority"


class Grant:
    """A store's answer: start now (``wait`` 0, with a ``handle``) or ask again later."""

    __slots__ = ("handle", "reason", "wait")

    def __init__(self, wait: float, reason: str | None, handle: object = None) -> None:
        self.wait: float = wait
        self.reason: str | None = reason
        self.handle: object = handle


class QuotaStore(Protocol):
    """Where the counters live."""

    async def take(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE, behind: int = 0
    ) -> Grant:
        """Count a call of ``cost`` tokens starting now, if the limits allow.

        Args:
            model: The policy, for the limits in force.
            cost: The call's estimated tokens.
            priority: Its queue: a batch call steps aside for other clients' waiting
                interactive calls (a shared store).
            behind: Interactive calls of this client waiting behind this one (a shared
                store keeps this client's lease while some remain).
        """

    def take_at_once(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE
    ) -> Grant | None:
        """:meth:`take`, if a place can start now and the store knows it without I/O.

        ``None``: ask with :meth:`take` (which may wait, or ask a shared store).
        """

    def release(self) -> None:
        """This client's interactive calls no longer wait: drop its lease (best effort)."""

    def settle(self, handle: object, tokens: int) -> None:
        """Replace a counted call's tokens (``-1``: it was refused, forget it)."""

    def usage(self) -> Usage:
        """What is counted now (with Redis: as of the last round trip)."""

    def replied(self) -> None:
        """A reply came (it may have announced limits the fleet should hear of)."""


class _Entry:
    __slots__ = ("cost", "live", "start")

    def __init__(self, start: float, cost: int) -> None:
        self.start = start
        self.cost = cost
        self.live = True  # still in the log


class MemoryQuotaStore:
    """The counters of one process.

    Args:
        window: The length of the minute windows, in seconds.
        clock: The time source.
    """

    def __init__(self, model: QuotaModel) -> None:
        self._clock = model.clock
        self._horizon = model.window * (1 + MARGIN)
        self._next = -math.inf  # the schedule's next free start
        self._log: collections.deque[_Entry] = collections.deque()
        self._tokens = 0

    def __repr__(self) -> str:
        return f"<MemoryQuotaStore {len(self._log)} calls in the window>"

    async def take(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE, behind: int = 0
    ) -> Grant:
        """Count a call starting now, or say how long to wait (see :class:`QuotaStore`).

        The priority is the limiter's business here: one process has one queue.
        """
        return self.take_now(model.current(), cost)

    def take_at_once(
        self, model: QuotaModel, cost: int, priority: int = INTERACTIVE
    ) -> Grant | None:
        """A place now, counted, or ``None`` (nothing counted)."""
        grant = self.take_now(model.current(), cost)
        return grant if grant.wait <= 0 else None

    def release(self) -> None:
        """No lease in one process."""

    def take_now(self, limits: Limits, cost: int) -> Grant:
        """:meth:`take`, without awaiting."""
        now = self._clock()
        if limits.not_before > now:
            return Grant(limits.not_before - now, PAUSE)
        early = self._next - (limits.burst - 1) * limits.interval  # GCRA's tolerance
        if early > now:
            return Grant(early - now, RATE)
        log, per_second = self._log, limits.per_second
        if per_second is not None and len(log) >= per_second:
            # When the n-th latest leaves the service's last second (with the margin: the
            # service sees a call a little after it starts, and not always as soon).
            frees = log[-per_second].start + 1.0 + MARGIN
            if frees > now:
                return Grant(frees - now, RATE)
        if limits.rpm is not None or limits.tpm is not None:
            wait = self._window_wait(limits, cost, now)
            if wait > 0:
                return Grant(wait, WINDOW)
        elif len(self._log) > MAX_LOG // 2:
            self._prune(now)
        self._next = max(self._next, now) + limits.interval
        entry = _Entry(now, cost)
        self._log.append(entry)
        self._tokens += cost
        if len(self._log) > MAX_LOG:
            self._drop()
        return Grant(0.0, None, entry)

    def _drop(self) -> None:
        entry = self._log.popleft()
        entry.live = False
        self._tokens -= entry.cost

    def _prune(self, now: float) -> None:
        log, edge = self._log, now - self._horizon
        while log and log[0].start <= edge:
            self._drop()

    def _window_wait(self, limits: Limits, cost: int, now: float) -> float:
        self._prune(now)
        log, horizon = self._log, self._horizon
        wait = 0.0
        rpm = limits.rpm
        if rpm is not None and len(log) >= rpm:
            wait = log[len(log) - rpm].start + horizon - now
        tpm = limits.tpm
        if tpm is not None and log and self._tokens + cost > tpm:
            left = self._tokens
            for entry in log:
                left -= entry.cost
                if left + cost <= tpm:
                    break
            # (A call costlier than the whole budget waits for an empty window.)
            wait = max(wait, entry.start + horizon - now)
        return wait

    def settle(self, handle: object, tokens: int) -> None:
        """Replace a counted call's tokens (``-1``: refused, forget it)."""
        assert isinstance(handle, _Entry)
        if not handle.live:
            return  # out of the window: nothing to correct
        if tokens < 0:
            handle.live = False
            self._log.remove(handle)  # rare: a refusal, near the log's end
            self._tokens -= handle.cost
            return
        self._tokens += tokens - handle.cost
        handle.cost = tokens

    def usage(self) -> Usage:
        """What is counted now."""
        now = self._clock()
        self._prune(now)
        second = 0
        edge = now - 1.0
        for entry in reversed(self._log):
            if entry.start <= edge:
                break
            second += 1
        return Usage(second, len(self._log), self._tokens)

    def replied(self) -> None:
        """Nothing to share in one process."""
