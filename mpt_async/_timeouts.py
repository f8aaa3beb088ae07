"""How long to wait, for a model that may think for minutes.

What counts is answers and chunks, not bytes: a server that trickles bytes (blank lines,
SSE comments, one byte at a time) is cut off by the same bounds as one that stays silent.
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx

from mpt_async._validate import check_number, is_number, refuse

__all__ = [
    "DEFAULT_QUOTA_WAIT",
    "DEFAULT_TIMEOUTS",
    "DEFAULT_TOTAL",
    "TimeoutLike",
    "Timeouts",
    "as_timeouts",
]

#: A call's default total deadline: 10 minutes, retries included.
DEFAULT_TOTAL = 600.0
#: A call's default bound on waiting for quota capacity.
DEFAULT_QUOTA_WAIT = 60.0


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_number(value, f"Timeouts.{attribute.name}", low=0, low_open=True, unit=" of seconds")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_number(value, f"Timeouts.{attribute.name}", low=0, low_open=True, unit=" of seconds")


@attrs.frozen
class Timeouts:
    """Bounds on each wait, in seconds.

    Args:
        connect: Opening a connection.
        write: Sending the request.
        pool: Waiting for a free connection from the pool.
        read: A non-stream call's wait for its answer (a 30B model may take minutes), in
            two phases bounded by ``read`` each: the reply's head, once the request is sent
            (on top of ``pool``, ``connect`` and ``write``), then the whole body, once the
            head has come. A body that trickles in is cut off like a silent one. A token
            fetch gets ``min(read, 30)`` for its whole reply.
        stream_read: A stream's wait for each step: the reply's head once the request is
            sent (on top of ``pool``, ``connect`` and ``write``), then the first chunk, then
            each chunk after it.
        total: The longest a whole call may take, retries, backoff and token fetches
            included (the wait for the client's own rate limits excluded); for a stream,
            until its last chunk. ``None`` for no such bound.
        quota: The longest a call waits, in all, for capacity under a quota (the rate
            the client learned, the limits announced, your ceilings, the service's
            refusals): then it fails with :class:`RateLimitError`. A minute by default,
            for callers who wait on an answer; ``None`` waits as long as it takes (the
            batch runner's default). Not part of ``total``.
    """

    connect: float = attrs.field(default=10.0, validator=_positive)
    write: float = attrs.field(default=30.0, validator=_positive)
    pool: float = attrs.field(default=60.0, validator=_positive)
    read: float = attrs.field(default=300.0, validator=_positive)
    stream_read: float = attrs.field(default=60.0, validator=_positive)
    total: float | None = attrs.field(default=DEFAULT_TOTAL, validator=_positive_or_none)
    quota: float | None = attrs.field(default=DEFAULT_QUOTA_WAIT, validator=_positive_or_none)

    def for_httpx(self, *, stream: bool) -> httpx.Timeout:
        """The httpx timeout for one request."""
        return httpx.Timeout(
            connect=self.connect,
            write=self.write,
            pool=self.pool,
            read=self.stream_read if stream else self.read,
        )


DEFAULT_TIMEOUTS = Timeouts()

#: A :class:`Timeouts`, or one number of seconds for every bound but ``total``.
TimeoutLike = Timeouts | float


def as_timeouts(value: TimeoutLike) -> Timeouts:
    """Accept a :class:`Timeouts`, or a single number applied to every bound but ``total``.

    ``total`` keeps its default (or becomes the number, if larger): a number bounds each
    wait of one attempt, and the retries still have room.

    Raises:
        ConfigurationError: If the value is neither.
    """
    if isinstance(value, Timeouts):
        return value
    if not is_number(value):
        refuse("timeout", f"must be a number of seconds or a Timeouts, not {type(value).__name__}")
    seconds = check_number(value, "timeout", low=0, low_open=True, unit=" of seconds")
    return Timeouts(seconds, seconds, seconds, seconds, seconds, max(seconds, DEFAULT_TOTAL))
