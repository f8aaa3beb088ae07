"""The one set of strict argument checks: what each accepts, refuses, and how it says so."""

from __future__ import annotations

import math

import pytest

from mpt_async import ConfigurationError, RequestValidationError
from mpt_async._validate import (
    check_bool,
    check_instance,
    check_int,
    check_number,
    check_str,
    is_int,
    is_number,
    refuse,
)


def test_bool_is_neither_int_nor_number() -> None:
    """True and False are refused where an integer or a number is wanted."""
    assert [is_int(v) for v in (3, True, 3.0)] == [True, False, False]
    assert [is_number(v) for v in (3, 2.5, False, "1")] == [True, True, False, False]
    for check in (check_int, check_number):
        with pytest.raises(ConfigurationError, match="flag"):
            check(True, "flag")


@pytest.mark.parametrize(
    ("value", "low", "high", "words"),
    [
        (-1, 0, None, "non-negative integer"),
        (0, 1, None, "positive integer"),
        (5, 1, 4, "positive integer (at most 4)"),
        (1, 2, 9, "integer in [2, 9]"),
        (1, 2, None, "at least 2"),
        (9, None, 8, "at most 8"),
        ("3", None, None, "an integer, not '3'"),
        (1.0, None, None, "an integer, not 1.0"),
    ],
)
def test_check_int_refuses(value: object, low: int | None, high: int | None, words: str) -> None:
    """An int outside its bounds, or a non-int, is refused with the name and the rule."""
    with pytest.raises(ConfigurationError) as info:
        check_int(value, "count", low=low, high=high)
    assert str(info.value).startswith("count must be ")
    assert words in str(info.value)


def test_check_int_accepts_and_describes_huge_values_briefly() -> None:
    """An int in range comes back as is; a huge one, or a long text, is not shown whole."""
    assert check_int(7, "n", low=1, high=7) == 7
    with pytest.raises(ConfigurationError) as long_text:
        check_int("x" * 500, "n")
    assert str(long_text.value) == f"n must be an integer, not '{'x' * 56}..."
    with pytest.raises(RequestValidationError) as info:
        check_int(10**5000, "top_k", high=10, error=RequestValidationError)
    assert info.value.field == "top_k"
    assert "hex digits" in info.value.rule
    assert len(str(info.value)) < 120


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        ("1", "a number of seconds, not str"),
        (0, "a positive number of seconds, not 0"),
        (-0.5, "a positive number of seconds"),
    ],
)
def test_check_number_refuses(value: object, words: str) -> None:
    """NaN, infinities, non-numbers and numbers out of range are refused."""
    with pytest.raises(ConfigurationError) as info:
        check_number(value, "timeout", low=0, low_open=True, unit=" of seconds")
    assert str(info.value).startswith("timeout must be ")
    assert words in str(info.value)


def test_check_number_ranges() -> None:
    """Both bounds are shown as an interval; an int in range comes back as a float."""
    assert check_number(1, "x", low=0.0, high=1.0) == 1.0
    assert isinstance(check_number(1, "x"), float)
    assert check_number(0.0, "x", low=0.0) == 0.0
    with pytest.raises(RequestValidationError) as info:
        check_number(
            0.0, "temperature", low=0.0, high=1.0, low_open=True, error=RequestValidationError
        )
    assert (info.value.field, info.value.rule) == ("temperature", "must be in (0.0, 1.0], not 0.0")
    with pytest.raises(ConfigurationError, match=r"x must be in \[1.0, 2.0\], not 2.5"):
        check_number(2.5, "x", low=1.0, high=2.0)
    with pytest.raises(ConfigurationError, match="a number over 1"):
        check_number(1, "x", low=1, low_open=True)
    with pytest.raises(ConfigurationError, match="a number of at least 2"):
        check_number(1, "x", low=2)
    with pytest.raises(ConfigurationError, match="a number of at most 0"):
        check_number(1, "x", high=0)


def test_check_str_never_echoes_the_text() -> None:
    """A blank string is refused without showing it; a non-string by its type only."""
    assert check_str("", "name") == ""
    assert check_str(" k ", "key", non_empty=True) == " k "
    with pytest.raises(ConfigurationError) as info:
        check_str("   ", "secret_key", non_empty=True)
    assert str(info.value) == "secret_key must be a non-empty string"
    with pytest.raises(ConfigurationError) as info:
        check_str(b"s3cret", "secret_key")
    assert str(info.value) == "secret_key must be a string, not bytes"


def test_check_bool_and_instance() -> None:
    """check_bool takes only True or False; check_instance names the wanted type."""
    assert check_bool(False, "flag") is False
    with pytest.raises(RequestValidationError, match="stream: must be True or False, not 1"):
        check_bool(1, "stream", error=RequestValidationError)
    assert check_instance(3, "n", int) == 3
    with pytest.raises(ConfigurationError, match="backoff must be a Backoff, not int"):
        check_instance(5, "backoff", type("Backoff", (), {}))
    with pytest.raises(ConfigurationError, match="must be a list or None, not str"):
        check_instance("x", "v", list, what="a list or None")


def test_refuse_picks_the_error_shape() -> None:
    """A request error names its field apart; a setting error reads as one sentence."""
    with pytest.raises(RequestValidationError) as request_error:
        refuse("stop[0]", "must be a string", RequestValidationError)
    assert (request_error.value.field, request_error.value.rule) == ("stop[0]", "must be a string")
    with pytest.raises(ConfigurationError, match=r"^max_retries must be >= 0$"):
        refuse("max_retries", "must be >= 0")
