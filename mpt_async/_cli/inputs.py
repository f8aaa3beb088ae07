"""The ``batch`` command's input: JSON Lines, read and decoded one bounded line at a time.

Nothing a line holds can stop the run: a line that is too long, not UTF-8, not JSON,
nested too deeply or holding an absurd number gets its error record (:class:`BadLine`),
and the next line is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import IO, NoReturn

from mpt_async._cli.outcome import Outcome

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_LINE_BYTES", "BadLine", "decode", "read_lines"]

#: The longest line read (bytes): far above what the API accepts (4,800 characters).
MAX_LINE_BYTES = 1 << 20
#: The deepest nesting of arrays and objects accepted in a line.
MAX_DEPTH = 64
#: The most digits of an integer in a line.
MAX_INT_DIGITS = 64
_SKIP_CHUNK = 1 << 16


class BadLine(Exception):
    """An input line that cannot be a request: what its error record says.

    Attributes:
        code: The record's ``code`` (a :class:`~mpt_async._cli.outcome.Outcome` name).
        message: The record's message, in plain words.
    """

    def __init__(self, failure: Outcome, message: str) -> None:
        super().__init__(message)
        self.code = failure.value
        self.message = message


def read_lines(source: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` for each line; ``None`` for a line over the size limit.

    At most :data:`MAX_LINE_BYTES` (plus one) are held at once: the rest of a longer line
    is read and dropped in small pieces.

    Args:
        source: The input, opened in binary mode.
    """
    number = 0
    while raw := source.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := source.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, raw


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        msg = f"holds an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})"
        raise BadLine(Outcome.INVALID_REQUEST, msg)
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        msg = f"holds a number too large for a request: {text[:20]}"
        raise BadLine(Outcome.INVALID_REQUEST, msg)
    return value


def _constant(text: str) -> NoReturn:
    msg = f"not a JSON value: {text} is not JSON"
    raise BadLine(Outcome.INVALID_JSON, msg)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        msg = (
            f"not UTF-8 text: byte {exc.start + 1} of the line (0x{raw[exc.start]:02x}) is "
            "not part of a UTF-8 character; save the file as UTF-8"
        )
        raise BadLine(Outcome.INVALID_JSON, msg) from None


def _check(value: object, *, strings: bool) -> None:
    """Refuse nesting beyond :data:`MAX_DEPTH` and (with ``strings``) lone surrogates."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                msg = f"nested more than {MAX_DEPTH} levels deep"
                raise BadLine(Outcome.INVALID_REQUEST, msg)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif strings and isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise BadLine(Outcome.INVALID_REQUEST, "text holds a lone surrogate") from None


def decode(raw: bytes) -> object:
    """The JSON value of one input line.

    Args:
        raw: The line, as read.

    Raises:
        BadLine: The line cannot be a request; its error record says why.
    """
    text = _text(raw)
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        msg = f"nested more than {MAX_DEPTH} levels deep"
        raise BadLine(Outcome.INVALID_REQUEST, msg) from None
    except ValueError as exc:
        raise BadLine(Outcome.INVALID_JSON, f"not a JSON value: {exc}") from None
    # A lone surrogate can only come from a \u escape: look for one only then.
    _check(value, strings="\\u" in text)
    return value
