"""The emulator's rate limits: QPS (error 18), RPM (336501) and TPM (336502), as Baidu answers.

QPS is a token bucket holding one second's worth of calls, refilled continuously; RPM and
TPM count the calls and tokens accepted in the last ``window`` seconds (a minute, unless a
test shortens it). Only accepted calls count. Not thread-safe: the state's lock guards it.
"""

from __future__ import annotations

import collections

from mpt_async.testing import _errors

__all__ = ["Quota", "RateHeaders"]

#: Header name/value pairs for an ASGI response.
RateHeaders = list[tuple[bytes, bytes]]


class Quota:
    """Counts accepted chat calls against the configured limits."""

    def __init__(self) -> None:
        self._level: float | None = None  # the QPS bucket; None: full
        self._level_at = 0.0
        self._requests: collections.deque[float] = collections.deque()
        self._tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._token_sum = 0

    def clear(self) -> None:
        """Forget every call counted so far."""
        self._level = None
        self._requests.clear()
        self._tokens.clear()
        self._token_sum = 0

    def admit(
        self,
        *,
        qps: float | None,
        rpm: int | None,
        tpm: int | None,
        window: float,
        tokens: int,
        now: float,
    ) -> tuple[int | None, RateHeaders]:
        """Count one call of ``tokens`` tokens, or refuse it.

        Args:
            qps: Calls per second, or ``None``.
            rpm: Calls per window, or ``None``.
            tpm: Tokens per window, or ``None``.
            window: The RPM/TPM window in seconds.
            tokens: The call's total tokens (question and answer).
            now: The current monotonic time.

        Returns:
            The error code (``None``: accepted), and the ``X-Ratelimit-*`` headers to send.
        """
        code: int | None = None
        level = 0.0
        if qps is not None:
            capacity = max(float(qps), 1.0)
            level = capacity if self._level is None else self._level + (now - self._level_at) * qps
            level = min(level, capacity)
            self._level, self._level_at = level, now
            if level < 1.0 - 1e-9:
                code = _errors.QPS_LIMIT
        requests = self._requests
        while requests and requests[0] <= now - window:
            requests.popleft()
        used = self._tokens
        while used and used[0][0] <= now - window:
            self._token_sum -= used.popleft()[1]
        if code is None and rpm is not None and len(requests) >= rpm:
            code = _errors.RPM_LIMIT
        if code is None and tpm is not None and self._token_sum + tokens > tpm:
            code = _errors.TPM_LIMIT
        if code is None:
            if qps is not None:
                self._level = level - 1.0
            if rpm is not None:
                requests.append(now)
            if tpm is not None:
                used.append((now, tokens))
                self._token_sum += tokens
        headers: RateHeaders = []
        if rpm is not None:
            headers.append((b"x-ratelimit-limit-requests", b"%d" % rpm))
            headers.append((b"x-ratelimit-remaining-requests", b"%d" % max(0, rpm - len(requests))))
        if tpm is not None:
            headers.append((b"x-ratelimit-limit-tokens", b"%d" % tpm))
            headers.append((b"x-ratelimit-remaining-tokens", b"%d" % max(0, tpm - self._token_sum)))
        return code, headers
