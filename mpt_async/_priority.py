"""A call's priority under the quotas: live calls go before batch calls.

A waiting ``"interactive"`` call starts before any waiting ``"batch"`` call, under every
limit (the learned one, the user's ceilings, the announced ones); within one priority,
calls start in arrival order. A batch is not given a minimum share: it gets all the
capacity that interactive calls leave, and none while they keep the quota full.
"""

from __future__ import annotations

from typing import Literal

from mpt_async._exceptions import ConfigurationError

__all__ = ["BATCH", "INTERACTIVE", "Priority", "check_priority", "queue_of"]

#: A call's priority under the quotas.
Priority = Literal["interactive", "batch"]
#: The limiter's queue of each priority, the first served first.
INTERACTIVE, BATCH = 0, 1
_QUEUE: dict[str, int] = {"interactive": INTERACTIVE, "batch": BATCH}


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
