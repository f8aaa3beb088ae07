"""Rate limits as users set them, as replies announce them, and as the client learned them.

:class:`RateLimits` is what a user asks for; :class:`RateLimitInfo` is what a reply's
``X-Ratelimit-*`` headers say; :class:`LearnedLimits` is what a client holds calls to now.
The policy lives in ``mpt_async._quota_model``, the waiting in ``mpt_async._limiter``, the
counters in ``mpt_async._quota_store`` (or Redis); this module imports none of them.
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx

from mpt_async._public import claim
from mpt_async._redis_store import RedisStore  # light: coredis loads on first connection
from mpt_async._validate import check_bool, check_instance, check_int, check_number

__all__ = [
    "LIMIT_REQUESTS",
    "LIMIT_TOKENS",
    "LearnedLimits",
    "REMAINING_REQUESTS",
    "REMAINING_TOKENS",
    "RateLimitInfo",
    "RateLimits",
    "read_rate_limit",
]

#: The reply headers in which Qianfan announces a key's per-minute quotas.
LIMIT_REQUESTS = "X-Ratelimit-Limit-Requests"
LIMIT_TOKENS = "X-Ratelimit-Limit-Tokens"
REMAINING_REQUESTS = "X-Ratelimit-Remaining-Requests"
REMAINING_TOKENS = "X-Ratelimit-Remaining-Tokens"

_HEADER_FIELDS = {
    LIMIT_REQUESTS.lower().encode(): "limit_requests",
    LIMIT_TOKENS.lower().encode(): "limit_tokens",
    REMAINING_REQUESTS.lower().encode(): "remaining_requests",
    REMAINING_TOKENS.lower().encode(): "remaining_tokens",
}
_PREFIX = b"x-ratelimit-"


def _check_qps(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_number(value, f"RateLimits.{attribute.name}", low=0, low_open=True)


def _check_count(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_int(value, f"RateLimits.{attribute.name}", low=1)


def _check_bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_bool(value, f"RateLimits.{attribute.name}")


def _check_shared(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    check_instance(value, f"RateLimits.{attribute.name}", RedisStore, what="a RedisStore or None")


@attrs.frozen
class RateLimits:
    """How fast a client may call the service; pass it as ``Client(rate_limits=...)``.

    Every client has a limiter, even without this: it learns the rate the service grants
    from its answers and refusals (``adaptive``), and adopts the per-minute limits replies
    announce. Calls over a limit wait (before each attempt, retries included) instead of
    failing, and a refusal by a rate quota sends the call back to wait, not counted as a
    retry. ``Timeouts.quota`` bounds that wait; it is not part of any other timeout. The
    limits given here are ceilings: adaptation works below them. ``None`` leaves a limit
    unset.

    Args:
        qps: Calls per second, evenly spaced (a ceiling).
        rpm: Calls per minute (a ceiling).
        tpm: Tokens (prompt and answer) per minute (a ceiling).
        adopt_server_limits: Also obey the per-minute limits that replies announce in their
            ``X-Ratelimit-Limit-*`` headers (the stricter of yours and the service's
            wins). Until the first reply has arrived, calls go one at a time (with
            ``shared``: the limits any process has seen apply at once).
        shared: Share these limits with every client, process and host that uses the same
            :class:`RedisStore`, the same credentials and the same endpoint: they all draw
            from one budget, and what one learns holds for all. ``None`` counts per client.
        adaptive: Learn the service's rate from its refusals (slow start, then cut to the
            rate it granted, hold, probe). ``False`` turns learning off: only the limits
            given here (and those announced, with ``adopt_server_limits``) hold calls back.

    Raises:
        ConfigurationError: A limit that is not a positive number (``rpm`` and ``tpm``:
            a positive integer), or a ``shared`` that is not a :class:`RedisStore`.
    """

    qps: float | None = attrs.field(default=None, validator=_check_qps)
    rpm: int | None = attrs.field(default=None, validator=_check_count)
    tpm: int | None = attrs.field(default=None, validator=_check_count)
    adopt_server_limits: bool = attrs.field(default=True, validator=_check_bool, kw_only=True)
    shared: RedisStore | None = attrs.field(default=None, validator=_check_shared, kw_only=True)
    adaptive: bool = attrs.field(default=True, validator=_check_bool, kw_only=True)


@attrs.frozen
class LearnedLimits:
    """The limits a client holds its calls to now (``Client.learned_limits()``).

    Attributes:
        qps: Calls per second: learned, under the ``RateLimits.qps`` ceiling (``None``: no
            limit, with adaptation off and no ceiling).
        rpm: Calls per minute: the strictest of the ceiling, the announced and the learned
            limit, or ``None``.
        tpm: Tokens per minute, likewise.
        adaptive: Whether the client is learning.
    """

    qps: float | None
    rpm: int | None
    tpm: int | None
    adaptive: bool


@attrs.frozen
class RateLimitInfo:
    """The quota a reply announced in its ``X-Ratelimit-*`` headers (per minute).

    Each field is ``None`` when the reply did not carry (a valid) header for it.

    Attributes:
        limit_requests: Calls allowed per minute.
        limit_tokens: Tokens allowed per minute.
        remaining_requests: Calls left in the current window.
        remaining_tokens: Tokens left in the current window.
    """

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None


def _count(value: bytes) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None


def read_rate_limit(headers: httpx.Headers) -> RateLimitInfo | None:
    """The quota announced in a reply's headers; ``None`` (cheaply) when there is none."""
    found: dict[str, int | None] | None = None
    for key, value in headers.raw:
        if key[:12].lower() != _PREFIX:
            continue
        field = _HEADER_FIELDS.get(key.lower())
        if field is not None:
            if found is None:
                found = {}
            found[field] = _count(value)
    return None if found is None else RateLimitInfo(**found)


claim(
    globals(), "LearnedLimits", "RateLimitInfo", "RateLimits"
)  # public as mpt_async.X, even loaded on first use
