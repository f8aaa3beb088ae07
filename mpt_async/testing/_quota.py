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
            level = self._refill(qps, now)
            if level < 1.0 - 1e-9:
                code = _errors.QPS_LIMIT
        self._forget_before(now - window)
        if code is None and rpm is not None and len(self._requests) >= rpm:
            code = _errors.RPM_LIMIT
        if code is None and tpm is not None and self._token_sum + tokens > tpm:
            code = _errors.TPM_LIMIT
        if code is None:
            if qps is not None:
                self._level = level - 1.0
            if rpm is not None:
                self._requests.append(now)
            if tpm is not None:
                self._tokens.append((now, tokens))
                self._token_sum += tokens
        return code, self._headers(rpm, tpm)

    def _refill(self, qps: float, now: float) -> float:
        """The QPS bucket's level now (it holds one second's worth, at least one call)."""
        capacity = max(float(qps), 1.0)
        level = capacity if self._level is None else self._level + (now - self._level_at) * qps
        level = min(level, capacity)
        self._level, self._level_at = level, now
        return level

    def _forget_before(self, start: float) -> None:
        """Drop the calls and tokens counted before ``start`` (out of the window)."""
        requests = self._requests
        while requests and requests[0] <= start:
            requests.popleft()
        used = self._tokens
        while used and used[0][0] <= start:
            self._token_sum -= used.popleft()[1]

    def _headers(self, rpm: int | None, tpm: int | None) -> RateHeaders:
        headers: RateHeaders = []
        if rpm is not None:
            remaining = max(0, rpm - len(self._requests))
            headers.append((b"x-ratelimit-limit-requests", b"%d" % rpm))
            headers.append((b"x-ratelimit-remaining-requests", b"%d" % remaining))
        if tpm is not None:
            headers.append((b"x-ratelimit-limit-tokens", b"%d" % tpm))
            headers.append((b"x-ratelimit-remaining-tokens", b"%d" % max(0, tpm - self._token_sum)))
        return headers
