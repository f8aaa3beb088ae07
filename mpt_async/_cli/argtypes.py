"""Argparse value types, shared by ``python -m mpt_async`` and the emulator's command line.

Each one converts the text, checks it with the package's strict checks
(:mod:`mpt_async._validate`), and raises :class:`argparse.ArgumentTypeError` with a message
in plain words, so that argparse prints ``argument --rpm: must be a positive integer, not
0`` rather than the name of a private function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from mpt_async._exceptions import ConfigurationError
from mpt_async._validate import check_int, check_number

__all__ = ["int_at_least", "non_negative_number", "positive_number"]

_T = TypeVar("_T")
_NAME = "value"  # argparse names the option itself


def _convert(text: str, convert: Callable[[str], _T], what: str) -> _T:
    try:
        return convert(text)
    except ValueError:
        msg = f"not {what}: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _plain(error: ConfigurationError) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(str(error).removeprefix(f"{_NAME} "))


def _number_from_zero(text: str, *, zero: bool) -> float:
    try:
        return check_number(_convert(text, float, "a number"), _NAME, low=0, low_open=not zero)
    except ConfigurationError as exc:
        raise _plain(exc) from None


def positive_number(text: str) -> float:
    """A finite number above zero (``--timeout``, ``--qps``).

    Args:
        text: The option's value, as typed.

    Raises:
        argparse.ArgumentTypeError: It is not such a number.
    """
    return _number_from_zero(text, zero=False)


def non_negative_number(text: str) -> float:
    """A finite number of zero or more (``--chunk-delay``, ``--token-ttl``).

    Args:
        text: The option's value, as typed.

    Raises:
        argparse.ArgumentTypeError: It is not such a number.
    """
    return _number_from_zero(text, zero=True)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for whole numbers of at least ``minimum``.

    Args:
        minimum: The smallest value accepted.
    """

    def parse(text: str) -> int:
        try:
            return check_int(_convert(text, int, "a whole number"), _NAME, low=minimum)
        except ConfigurationError as exc:
            raise _plain(exc) from None

    parse.__name__ = parse.__qualname__ = f"integer of at least {minimum}"
    return parse
