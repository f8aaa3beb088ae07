"""The emulator's settings and their bounds, checked once for every way to set them.

The constructor, the setters and ``POST /_emulator/config`` all go through these checks,
so no setting can take the emulator beyond what one process on a laptop can serve.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mpt_async import _validate

__all__ = [
    "MAX_CHUNK_DELAY",
    "MAX_STREAM_CHUNKS",
    "MAX_TOKEN_TTL",
    "RATE_KEYS",
    "Config",
    "check_chunk_delay",
    "check_int",
    "check_number",
    "check_rates",
    "check_stream_chunks",
    "check_token_ttl",
]

#: The most chunks a streamed answer may have.
MAX_STREAM_CHUNKS = 10_000
#: The longest pause between two stream chunks, in seconds.
MAX_CHUNK_DELAY = 60.0
#: The longest token lifetime, in seconds (ten years).
MAX_TOKEN_TTL = 10 * 365 * 86400.0
#: The rate settings, as named in ``Emulator(...)`` and ``/_emulator/config``.
RATE_KEYS = ("qps", "rpm", "tpm", "rate_window")
# Upper bounds of the rate settings: far above any test, far below an overflow.
_RATE_MAX = {"qps": 1e6, "rpm": 10**9, "tpm": 10**12, "rate_window": 86400.0}


def check_number(name: str, value: object, low: float, high: float) -> float:
    """Refuse anything but a finite int or float in ``[low, high]`` (the package's own check).

    Returns:
        The value as a float.

    Raises:
        ValueError: It is not a number (``bool`` included), or out of range
            (a :class:`~mpt_async.ConfigurationError`).
    """
    return _validate.check_number(value, name, low=low, high=high)


def check_int(name: str, value: object, low: int, high: int) -> int:
    """Refuse anything but an int (not a ``bool``) in ``[low, high]`` (the package's own check).

    Returns:
        The value.

    Raises:
        ValueError: It is not an int, or out of range (a :class:`~mpt_async.ConfigurationError`).
    """
    return _validate.check_int(value, name, low=low, high=high)


def check_rates(rates: Mapping[str, object]) -> None:
    """Refuse rate settings out of range (``None`` lifts a limit; ``rate_window`` needs a value).

    Args:
        rates: Some of ``qps``, ``rpm``, ``tpm`` and ``rate_window``.

    Raises:
        ValueError: An unknown key, a non-positive limit, or a non-integer ``rpm``/``tpm``.
    """
    for key, value in rates.items():
        if key not in RATE_KEYS:
            msg = f"unknown rate setting {key!r}"
            raise ValueError(msg)
        if key != "rate_window" and value is None:
            continue
        high = _RATE_MAX[key]
        if key in ("rpm", "tpm"):
            check_int(key, value, 1, int(high))
        elif check_number(key, value, 0, high) <= 0:
            msg = f"{key} must be a positive number"
            raise ValueError(msg)


def check_stream_chunks(value: object) -> int:
    """Refuse a chunk count that is not an int in ``[1, MAX_STREAM_CHUNKS]``.

    Raises:
        ValueError: It is not.
    """
    return check_int("stream_chunks", value, 1, MAX_STREAM_CHUNKS)


def check_chunk_delay(value: object) -> float:
    """Refuse a delay that is not a number of seconds in ``[0, MAX_CHUNK_DELAY]``.

    Raises:
        ValueError: It is not.
    """
    return check_number("chunk_delay", value, 0, MAX_CHUNK_DELAY)


def check_token_ttl(value: object, *, positive: bool = True) -> float:
    """Refuse a token lifetime beyond ``MAX_TOKEN_TTL`` (or not positive, if ``positive``).

    A negative lifetime (allowed when not ``positive``) mints an already expired token.

    Raises:
        ValueError: It is out of range or not a number.
    """
    ttl = check_number("token_ttl", value, -MAX_TOKEN_TTL, MAX_TOKEN_TTL)
    if positive and ttl <= 0:
        msg = "token_ttl must be positive"
        raise ValueError(msg)
    return ttl


@attrs.define
class Config:
    """The settings that tests may change while the emulator runs."""

    stream_chunks: int
    chunk_delay: float
    qps: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    rate_window: float = 60.0

    def __attrs_post_init__(self) -> None:
        check_stream_chunks(self.stream_chunks)
        self.chunk_delay = check_chunk_delay(self.chunk_delay)
        check_rates({key: getattr(self, key) for key in RATE_KEYS})
