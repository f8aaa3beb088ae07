"""A call's priority under the quotas: live calls go before batch calls.

A waiting ``"interactive"`` call starts before any waiting ``"batch"`` call, under every
limit (the learned one, the user's ceilings, the announced ones); within one priority,
calls start in arrival order. A batch is not given a minimum share: it gets all the
capacity that interactive calls leave, and none while they keep the quota full.

Across the processes that share a ``RedisStore``, a client whose interactive calls wait
holds a short *lease* in Redis (renewed while they wait, dropped when they start or give
up), and another client's batch call that could start is told to ask again a moment later
(:data:`RECHECK`) while any lease is live. A lease claims no capacity: it only makes batch
calls step aside; and one left by a process that died lapses after :data:`LEASE` seconds.
"""

from __future__ import annotations

from typing import Literal

from mpt_async._exceptions import ConfigurationError

__all__ = [
    "BATCH",
    "INTERACTIVE",
    "LEASE",
    "NAMES",
    "RECHECK",
    "Priority",
    "check_priority",
    "queue_of",
]

#: A call's priority under the quotas.
Priority = Literal["interactive", "batch"]
#: The limiter's queue of each priority, the first served first.
INTERACTIVE, BATCH = 0, 1
_QUEUE: dict[str, int] = {"interactive": INTERACTIVE, "batch": BATCH}
#: The name of each queue, for logs.
NAMES: tuple[Priority, Priority] = ("interactive", "batch")
#: Seconds a client's claim "my interactive calls wait" holds in a shared store unless
#: renewed; a waiting interactive call renews it every half of this.
LEASE = 2.0
#: Seconds after which a batch call held back by another client's waiting interactive
#: calls asks again (short: those calls start at once, and the batch takes the next place).
RECHECK = 0.01


def check_priority(value: object) -> Priority:
    """``value`` if it is a :data:`Priority`, checked before any I/O.

    Raises:
        ConfigurationError: It is not ``"interactive"`` or ``"batch"``.
    """
    if value == "interactive" and isinstance(value, str):
        return "interactive"
    if value == "batch" and isinstance(value, str):
        return "batch"
    msg = f"priority must be 'interactive' or 'batch', not {value!r}"
    raise ConfigurationError(msg)


def queue_of(priority: Priority) -> int:
    """The limiter's queue for ``priority``."""
    return _QUEUE[priority]
