"""How long to wait before a retry: exponential, jittered, and ``Retry-After`` when sent."""

from __future__ import annotations

import random
import time

import attrs

from mpt_async._validate import check_number

__all__ = ["Backoff", "parse_retry_after"]


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_number(value, f"Backoff.{attribute.name}", low=0, unit=" of seconds")


def _share(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_number(value, f"Backoff.{attribute.name}", low=0.0, high=1.0)


@attrs.frozen
class Backoff:
    """The waits between attempts.

    The n-th retry waits ``initial * 2**n`` seconds, at most ``maximum``, less a random
    share of up to ``jitter`` of it (so that many clients do not retry in step). A
    server's ``Retry-After`` replaces that, capped at ``max_retry_after``.

    Args:
        initial: The first wait.
        maximum: The longest computed wait.
        jitter: The share of each wait that is random, in [0, 1].
        max_retry_after: The longest ``Retry-After`` honoured.
    """

    initial: float = attrs.field(default=0.5, validator=_non_negative)
    maximum: float = attrs.field(default=8.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.5, validator=_share)
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        base = min(self.initial * 2.0**retry, self.maximum)
        return base * (1 - self.jitter * random.random())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` header: delta seconds or an HTTP date; ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # rare (an HTTP date), and not worth its import time up front

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
