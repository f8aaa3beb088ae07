"""Argparse value types, shared by ``python -m mpt_async`` and the emulator's command line.

Each one converts the text, checks it with the package's strict checks
(:mod:`mpt_async._validate`), and raises :class:`argparse.ArgumentTypeError` with a message
in plain words, so that argparse prints ``argument --rpm: must be a positive integer, not
0`` rather than the name of a private function.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from mpt_async._exceptions import ConfigurationError
from mpt_async._validate import check_int, check_number

__all__ = ["add_count_option", "int_at_least", "non_negative_number", "positive_number"]

_T = TypeVar("_T")
_NAME = "value"  # argparse names the option itself


def _argtype(
    convert: Callable[[str], _T], what: str, check: Callable[[_T], _T], name: str
) -> Callable[[str], _T]:
    """An argparse ``type``: ``convert`` the text, then ``check`` the value.

    Args:
        convert: Makes the value from the text; raises :class:`ValueError` when it cannot.
        what: The kind of value, for the message ``not a number: 'x'``.
        check: One of the package's strict checks, given the value and :data:`_NAME`.
        name: The type's ``__name__`` (argparse would show it only for an unexpected error).
    """

    def parse(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            msg = f"not {what}: {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        try:
            return check(value)
        except ConfigurationError as exc:
            words = str(exc).removeprefix(f"{_NAME} ")
            raise argparse.ArgumentTypeError(words) from None

    parse.__name__ = parse.__qualname__ = name
    return parse


def _number_from_zero(*, zero: bool, name: str) -> Callable[[str], float]:
    check = functools.partial(check_number, name=_NAME, low=0, low_open=not zero)
    return _argtype(float, "a number", check, name)


#: A finite number above zero (``--timeout``, ``--qps``); raises
#: :class:`argparse.ArgumentTypeError` for anything else.
positive_number = _number_from_zero(zero=False, name="positive number")

#: A finite number of zero or more (``--chunk-delay``, ``--token-ttl``); raises
#: :class:`argparse.ArgumentTypeError` for anything else.
non_negative_number = _number_from_zero(zero=True, name="non-negative number")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for whole numbers of at least ``minimum``.

    Args:
        minimum: The smallest value accepted.
    """
    check = functools.partial(check_int, name=_NAME, low=minimum)
    return _argtype(int, "a whole number", check, f"integer of at least {minimum}")


def add_count_option(
    parser: Any,
    flag: str,
    *,
    minimum: int,
    default: int,
    help: str,
    metavar: str | None = None,
) -> None:
    """Add ``flag``: a whole number of at least ``minimum``, whose help shows its default.

    Args:
        parser: A parser or argument group.
        flag: The option, such as ``"--concurrency"``.
        minimum: The smallest value accepted (see :func:`int_at_least`).
        default: Its value when it is not given.
        help: What it means; `` (default: N)`` is added.
        metavar: The value's name in the help (``None``: argparse's own).
    """
    parser.add_argument(
        flag,
        type=int_at_least(minimum),
        default=default,
        metavar=metavar,
        help=f"{help} (default: %(default)s)",
    )
