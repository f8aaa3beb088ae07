"""Argparse value types, shared by ``python -m mpt_async`` and the emulator's command line.

Each one raises :class:`argparse.ArgumentTypeError` with a message in plain words, so that
argparse prints ``argument --rpm: must be 1 or more, not 0`` rather than the name of a
private function.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["int_at_least", "non_negative_number", "positive_number"]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if math.isnan(value):
        msg = f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive_number(text: str) -> float:
    """A finite number above zero (``--timeout``, ``--qps``).

    Args:
        text: The option's value, as typed.

    Raises:
        argparse.ArgumentTypeError: It is not such a number.
    """
    value = _number(text)
    if not 0 < value < math.inf:
        msg = f"must be a positive number, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def non_negative_number(text: str) -> float:
    """A number of zero or more (``--chunk-delay``, ``--token-ttl``).

    Args:
        text: The option's value, as typed.

    Raises:
        argparse.ArgumentTypeError: It is not such a number.
    """
    value = _number(text)
    if value < 0:
        msg = f"must be zero or more, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for whole numbers of at least ``minimum``.

    Args:
        minimum: The smallest value accepted.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            msg = f"not a whole number: {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if value < minimum:
            msg = f"must be {minimum} or more, not {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    parse.__name__ = parse.__qualname__ = f"integer of at least {minimum}"
    return parse
