"""Which quota refused a call: per second, per minute, tokens, per day, in total."""

from __future__ import annotations

import enum

__all__ = ["QuotaKind"]


class QuotaKind(enum.Enum):
    """The kind of quota behind a refusal (:attr:`RateLimitError.quota`)."""

    SECOND = "second"
    """Calls per second (v1 codes 4 and 18; v2 ``user_``/``cluster_rate_limit_exceeded``)."""
    MINUTE = "minute"
    """Calls per minute (v1 code 336501; v2 ``rpm_rate_limit_exceeded``)."""
    TOKENS = "tokens"
    """Tokens per minute (v1 code 336502; v2 ``tpm_rate_limit_exceeded``)."""
    DAY = "day"
    """Calls per day (v1 code 17): no wait helps until the day turns."""
    TOTAL = "total"
    """Calls in total (v1 code 19): no wait helps."""

    @property
    def waits(self) -> bool:
        """Whether waiting for capacity can help (a rate, not a used-up allowance)."""
        return self in _WAITS


_WAITS = frozenset({QuotaKind.SECOND, QuotaKind.MINUTE, QuotaKind.TOKENS})
