"""The request-body rules of the chat endpoint, as a plain table.

The rules are those of the service's API page,
https://cloud.baidu.com/doc/WENXINWORKSHOP/s/Elkqus29q.

Each rule names one field, one check and the message sent back when the check fails.
Rules run in table order and the first failure wins; a rule may rely on the earlier
rules for its own field having passed (``messages`` is a list before its items are
looked at). Nothing here is shared with the client's models on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from mpt_async._validate import is_int, is_number
from mpt_async.testing import _errors

__all__ = ["ALLOWED_FIELDS", "MAX_INPUT_CHARS", "RULES", "Rule", "Violation", "validate"]

MAX_INPUT_CHARS = 4800
_ROLES = ("user", "assistant")


@attrs.frozen
class Rule:
    """One check on one top-level field of the body.

    Attributes:
        field: The top-level field; the rule is skipped when it is absent.
        check: Returns ``True`` when the value is acceptable.
        message: The ``error_msg`` when it is not (names the field and the rule).
        code: The ``error_code`` when it is not.
    """

    field: str
    check: Callable[[Any], bool]
    message: str
    code: int = _errors.INVALID_PARAMETER


@attrs.frozen
class Violation:
    """Why a body was refused: the ``error_code`` and ``error_msg`` to answer."""

    code: int
    message: str


def _alternates(messages: list[dict[str, str]]) -> bool:
    return all(m["role"] == _ROLES[i % 2] for i, m in enumerate(messages))


def _total_chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


RULES: tuple[Rule, ...] = (
    Rule("messages", lambda v: isinstance(v, list), "messages must be a list"),
    Rule("messages", lambda v: len(v) > 0, "messages must not be empty"),
    Rule(
        "messages",
        lambda v: all(isinstance(m, dict) for m in v),
        "messages: every message must be an object",
    ),
    Rule(
        "messages",
        lambda v: all(m.keys() == {"role", "content"} for m in v),
        "messages: every message must have exactly the fields role and content",
    ),
    Rule(
        "messages",
        lambda v: all(m["role"] in _ROLES for m in v),
        "messages: role must be 'user' or 'assistant'",
    ),
    Rule(
        "messages",
        lambda v: all(isinstance(m["content"], str) and m["content"] for m in v),
        "messages: content must be a non-empty string",
    ),
    Rule(
        "messages",
        lambda v: len(v) % 2 == 1,
        "the length of messages must be an odd number",
        _errors.MESSAGES_NOT_ODD,
    ),
    Rule(
        "messages",
        _alternates,
        "messages: roles must alternate user, assistant, user, ... starting and ending with user",
    ),
    Rule(
        "messages",
        lambda v: _total_chars(v) <= MAX_INPUT_CHARS,
        f"messages: the total length of all content must be at most {MAX_INPUT_CHARS} characters",
        _errors.INPUT_TOO_LONG,
    ),
    Rule("stream", lambda v: isinstance(v, bool), "stream must be a boolean"),
    Rule("temperature", is_number, "temperature must be a number"),
    Rule("temperature", lambda v: 0 < v <= 1, "temperature must be in (0, 1.0]"),
    Rule("top_k", is_int, "top_k must be an integer"),
    Rule("top_k", lambda v: v > 0, "top_k must be a positive integer"),
    Rule("top_p", is_number, "top_p must be a number"),
    Rule("top_p", lambda v: 0 <= v <= 1, "top_p must be in [0, 1.0]"),
    Rule("penalty_score", is_number, "penalty_score must be a number"),
    Rule("penalty_score", lambda v: 1 <= v <= 2, "penalty_score must be in [1.0, 2.0]"),
    Rule("stop", lambda v: isinstance(v, list), "stop must be a list of strings"),
    Rule("stop", lambda v: len(v) <= 4, "stop must have at most 4 elements"),
    Rule(
        "stop", lambda v: all(isinstance(s, str) for s in v), "stop: every element must be a string"
    ),
    Rule(
        "stop",
        lambda v: all(len(s) <= 20 for s in v),
        "stop: every element must be at most 20 characters",
    ),
    Rule("user_id", lambda v: isinstance(v, str), "user_id must be a string"),
    Rule("metadata", lambda v: isinstance(v, dict), "metadata must be an object"),
    Rule("metadata", lambda v: len(v) <= 16, "metadata must have at most 16 entries"),
    Rule(
        "metadata",
        lambda v: all(isinstance(x, str) for x in v.values()),
        "metadata: every value must be a string",
    ),
    # Not in Baidu's table, but the official qianfan SDK always sends it.
    Rule("extra_parameters", lambda v: isinstance(v, dict), "extra_parameters must be an object"),
)

#: Every field a body may carry.
ALLOWED_FIELDS: frozenset[str] = frozenset(rule.field for rule in RULES)
_REQUIRED = ("messages",)


def validate(body: Any) -> Violation | None:
    """Check a decoded chat request body.

    Args:
        body: The decoded JSON.

    Returns:
        ``None`` when the body is acceptable, else the first violation: unknown fields,
        then ``null`` values, then missing required fields, then :data:`RULES` in order.
    """
    if not isinstance(body, dict):
        return Violation(_errors.INVALID_PARAMETER, "the request body must be a JSON object")
    for key, value in body.items():
        if key not in ALLOWED_FIELDS:
            return Violation(_errors.INVALID_PARAMETER, f"unknown field {key!r} is not allowed")
        if value is None:
            return Violation(_errors.INVALID_PARAMETER, f"{key} must not be null")
    for key in _REQUIRED:
        if key not in body:
            return Violation(_errors.INVALID_PARAMETER, f"{key} is required")
    for rule in RULES:
        if rule.field in body and not rule.check(body[rule.field]):
            return Violation(rule.code, rule.message)
    return None
