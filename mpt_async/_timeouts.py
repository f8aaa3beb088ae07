"""How long to wait, for a model that may think for minutes.

A ``read`` timeout bounds an idle gap (no bytes arriving), not the whole call.
"""

from __future__ import annotations

import attrs
import httpx

from mpt_async._validate import check_number, is_number, refuse

__all__ = ["DEFAULT_TIMEOUTS", "TimeoutLike", "Timeouts", "as_timeouts"]


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_number(value, f"Timeouts.{attribute.name}", low=0, low_open=True, unit=" of seconds")


@attrs.frozen
class Timeouts:
    """Bounds on each wait, in seconds.

    Args:
        connect: Opening a connection.
        write: Sending the request.
        pool: Waiting for a free connection from the pool.
        read: A non-stream call's wait for its whole answer (a 30B model may take minutes).
        stream_read: A stream's longest silence: before the first chunk and between chunks.
    """

    connect: float = attrs.field(default=10.0, validator=_positive)
    write: float = attrs.field(default=30.0, validator=_positive)
    pool: float = attrs.field(default=60.0, validator=_positive)
    read: float = attrs.field(default=300.0, validator=_positive)
    stream_read: float = attrs.field(default=60.0, validator=_positive)

    def for_httpx(self, *, stream: bool) -> httpx.Timeout:
        """The httpx timeout for one request."""
        return httpx.Timeout(
            connect=self.connect,
            write=self.write,
            pool=self.pool,
            read=self.stream_read if stream else self.read,
        )


DEFAULT_TIMEOUTS = Timeouts()

#: A :class:`Timeouts`, or one number of seconds for every bound.
TimeoutLike = Timeouts | float


def as_timeouts(value: TimeoutLike) -> Timeouts:
    """Accept a :class:`Timeouts` or a single number applied to every bound.

    Raises:
        ConfigurationError: If the value is neither.
    """
    if isinstance(value, Timeouts):
        return value
    if not is_number(value):
        refuse("timeout", f"must be a number of seconds or a Timeouts, not {type(value).__name__}")
    seconds = check_number(value, "timeout", low=0, low_open=True, unit=" of seconds")
    return Timeouts(seconds, seconds, seconds, seconds, seconds)
