"""The package's one set of strict argument checks.

Each ``check_*`` function takes a value and the name the user knows it by, returns the
value (typed) when it is acceptable, and otherwise raises the package's typed error:
:class:`~mpt_async.ConfigurationError` (the default) for a setting, or
:class:`~mpt_async.RequestValidationError` (``error=RequestValidationError``) for a part of
a request, naming the field. "Strict" means no coercion: ``True`` is not an integer, ``"5"``
is not a number, and NaN or infinity is never a number of anything.
"""

from __future__ import annotations

import math
from typing import NoReturn, TypeGuard, TypeVar

from mpt_async._exceptions import ConfigurationError, RequestValidationError

__all__ = [
    "ArgumentError",
    "check_bool",
    "check_instance",
    "check_int",
    "check_number",
    "check_str",
    "is_int",
    "is_number",
    "refuse",
]

T = TypeVar("T")
#: Which error a failed check raises.
ArgumentError = type[ConfigurationError] | type[RequestValidationError]
#: Integers longer than this are described by their size, never printed whole.
_MAX_SHOWN_DIGITS = 40


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an ``int`` or ``float`` (not a ``bool``), finite or not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def refuse(name: str, rule: str, error: ArgumentError = ConfigurationError) -> NoReturn:
    """Raise ``error`` saying that ``name`` breaks ``rule`` (``"must be ..."``)."""
    if issubclass(error, RequestValidationError):
        raise error(name, rule)
    raise error(f"{name} {rule}")


def _shown(value: object) -> str:
    """A short description of a refused value (a huge integer's repr can even fail)."""
    if is_int(value) and value.bit_length() > 3 * _MAX_SHOWN_DIGITS:
        return f"an integer of {len(format(value, 'x'))} hex digits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _int_rule(low: int | None, high: int | None) -> str:
    if low in (0, 1):
        rule = "a non-negative integer" if low == 0 else "a positive integer"
        return rule if high is None else f"{rule} (at most {high})"
    if low is not None and high is not None:
        return f"an integer in [{low}, {high}]"
    if low is not None:
        return f"an integer of at least {low}"
    return "an integer" if high is None else f"an integer of at most {high}"


def check_int(
    value: object,
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    error: ArgumentError = ConfigurationError,
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[low, high]`` (``None``: unbounded)."""
    if is_int(value) and (low is None or value >= low) and (high is None or value <= high):
        return value
    refuse(name, f"must be {_int_rule(low, high)}, not {_shown(value)}", error)


def _number_rule(low: float | None, high: float | None, low_open: bool, unit: str) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}]"
    if low == 0:
        return f"a {'positive' if low_open else 'non-negative'} number{unit}"
    if low is not None:
        return f"a number{unit} {'over' if low_open else 'of at least'} {low}"
    return f"a number{unit}" if high is None else f"a number{unit} of at most {high}"


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    unit: str = "",
    error: ArgumentError = ConfigurationError,
) -> float:
    """``value`` as a ``float`` if it is a finite ``int`` or ``float`` in range.

    Args:
        value: The value to check.
        name: The argument's name, for the message.
        low: The least value allowed (``None``: unbounded).
        high: The greatest value allowed (``None``: unbounded).
        low_open: ``low`` itself is refused.
        unit: Words after "number" in the message, such as ``" of seconds"``.
        error: The error to raise.
    """
    if not is_number(value):
        refuse(name, f"must be a number{unit}, not {type(value).__name__}", error)
    if not math.isfinite(value):
        refuse(name, f"must be a finite number{unit}, not {value!r}", error)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        refuse(name, f"must be {_number_rule(low, high, low_open, unit)}, not {value!r}", error)
    return float(value)


def check_bool(value: object, name: str, *, error: ArgumentError = ConfigurationError) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        refuse(name, f"must be True or False, not {_shown(value)}", error)
    return value


def check_str(
    value: object,
    name: str,
    *,
    non_empty: bool = False,
    error: ArgumentError = ConfigurationError,
) -> str:
    """``value`` if it is a ``str`` (with ``non_empty``, not blank); never echoes the text."""
    if not isinstance(value, str):
        refuse(name, f"must be a string, not {type(value).__name__}", error)
    if non_empty and not value.strip():
        refuse(name, "must be a non-empty string", error)
    return value


def check_instance(
    value: object,
    name: str,
    cls: type[T],
    *,
    what: str | None = None,
    error: ArgumentError = ConfigurationError,
) -> T:
    """``value`` if it is an instance of ``cls`` (described as ``what`` in the message)."""
    if not isinstance(value, cls):
        refuse(name, f"must be {what or 'a ' + cls.__name__}, not {type(value).__name__}", error)
    return value
