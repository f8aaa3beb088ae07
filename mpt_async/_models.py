"""The protocol's value types, and every rule of the request body (SPEC sections 3 and 4).

Requests check themselves when built: a broken rule raises
:class:`~mpt_async.RequestValidationError` naming the field and the rule, so nothing that
the service would refuse is ever sent. Responses are plain frozen records; turning JSON into
them (and refusing malformed JSON) is the converter's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from mpt_async._exceptions import RequestValidationError
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._validate import check_bool, check_int, check_number, check_str

__all__ = [
    "MAX_METADATA_ENTRIES",
    "MAX_STOP_LENGTH",
    "MAX_STOP_WORDS",
    "MAX_TOP_K",
    "MAX_TOTAL_CONTENT",
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "ErrorEnvelope",
    "Message",
    "MessageLike",
    "Role",
    "TokenGrant",
    "Usage",
]

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")
#: The most characters the contents of all messages may add up to.
MAX_TOTAL_CONTENT = 4800
MAX_STOP_WORDS = 4
MAX_STOP_LENGTH = 20
MAX_METADATA_ENTRIES = 16
#: The largest ``top_k`` sent (the service reads it as a 32-bit integer).
MAX_TOP_K = 2**31 - 1


def _check_role(path: str, role: object) -> None:
    if role not in ROLES:
        raise RequestValidationError(path, f"must be 'user' or 'assistant', not {role!r}")


def _check_content(path: str, content: object) -> None:
    text = check_str(content, path, error=RequestValidationError)
    if not text:
        raise RequestValidationError(path, "must not be empty")
    _check_text(path, text)


def _check_text(path: str, text: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (lone surrogates, e.g. from bad decoding)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestValidationError(
                path, "must be valid Unicode text (it holds a lone surrogate)"
            ) from None


@attrs.frozen
class Message:
    """One turn of a conversation.

    Args:
        role: ``"user"`` or ``"assistant"``.
        content: The turn's text; must not be empty.

    Raises:
        RequestValidationError: If ``role`` or ``content`` breaks a rule.
    """

    role: Role
    content: str

    def __attrs_post_init__(self) -> None:
        _check_role("role", self.role)
        _check_content("content", self.content)


#: What ``messages`` may hold: :class:`Message` objects or ``{"role", "content"}`` dicts.
MessageLike = Message | Mapping[str, Any]


def _to_message(index: int, item: object) -> Message:
    if isinstance(item, Message):
        return item
    path = f"messages[{index}]"
    if not isinstance(item, Mapping):
        raise RequestValidationError(path, "must be a Message or a mapping with role and content")
    extra = set(item) - {"role", "content"}
    if extra:
        raise RequestValidationError(path, f"unknown keys {sorted(map(str, extra))}")
    for key in ("role", "content"):
        if key not in item:
            raise RequestValidationError(f"{path}.{key}", "is required")
    role, content = item["role"], item["content"]
    _check_role(f"{path}.role", role)
    _check_content(f"{path}.content", content)
    return Message(role=role, content=content)


def _to_messages(value: Iterable[MessageLike]) -> tuple[Message, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise RequestValidationError("messages", "must be a list of messages")
    return tuple(_to_message(i, item) for i, item in enumerate(value))


def _check_messages(_: object, __: object, messages: tuple[Message, ...]) -> None:
    if not messages:
        raise RequestValidationError("messages", "must not be empty")
    if len(messages) % 2 == 0:
        raise RequestValidationError(
            "messages", f"must hold an odd number of messages, not {len(messages)}"
        )
    for i, message in enumerate(messages):
        expected = ROLES[i % 2]
        if message.role != expected:
            raise RequestValidationError(
                f"messages[{i}].role",
                f"must be {expected!r}: roles alternate user, assistant, ..., user",
            )
    total = sum(len(m.content) for m in messages)
    if total > MAX_TOTAL_CONTENT:
        raise RequestValidationError(
            "messages",
            f"total content must be at most {MAX_TOTAL_CONTENT} characters, not {total}",
        )


def _range_check(
    low: float, high: float, *, low_open: bool = False
) -> attrs._ValidatorType[float | None]:
    def check(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None:
            check_number(
                value,
                attribute.name,
                low=low,
                high=high,
                low_open=low_open,
                error=RequestValidationError,
            )

    return check


def _check_top_k(_: object, __: object, value: int | None) -> None:
    if value is not None:
        check_int(value, "top_k", low=1, high=MAX_TOP_K, error=RequestValidationError)


def _to_stop(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise RequestValidationError("stop", "must be a list of strings")
    words = tuple(value)
    if len(words) > MAX_STOP_WORDS:
        raise RequestValidationError(
            "stop", f"must hold at most {MAX_STOP_WORDS} elements, not {len(words)}"
        )
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise RequestValidationError(f"stop[{i}]", "must be a string")
        _check_text(f"stop[{i}]", word)
        if len(word) > MAX_STOP_LENGTH:
            raise RequestValidationError(
                f"stop[{i}]", f"must be at most {MAX_STOP_LENGTH} characters, not {len(word)}"
            )
    return words


def _check_user_id(_: object, __: object, value: str | None) -> None:
    if value is not None:
        _check_text("user_id", check_str(value, "user_id", error=RequestValidationError))


def _to_metadata(value: Mapping[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RequestValidationError("metadata", "must be a mapping of strings to strings")
    if len(value) > MAX_METADATA_ENTRIES:
        raise RequestValidationError(
            "metadata", f"must hold at most {MAX_METADATA_ENTRIES} entries, not {len(value)}"
        )
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise RequestValidationError(f"metadata[{key!r}]", "keys and values must be strings")
        _check_text(f"metadata[{key!r}]", key + item)
    return dict(value)


def sampling_options(
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    penalty_score: float | None,
    stop: Iterable[str] | None,
    user_id: str | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The sampling options that were given (not ``None``), as :class:`ChatRequest` keywords."""
    given = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "penalty_score": penalty_score,
        "stop": stop,
        "user_id": user_id,
        "metadata": metadata,
    }
    return {name: value for name, value in given.items() if value is not None}


@attrs.frozen(kw_only=True)
class ChatRequest:
    """The body of one chat call, checked against every rule of SPEC section 3.

    Fields left ``None`` are not sent.

    Args:
        messages: Odd count, alternating ``user``/``assistant``, first and last ``user``,
            contents adding up to at most 4,800 characters. Dicts are accepted.
        stream: Ask for a stream of sentences.
        temperature: In (0, 1].
        top_k: A positive integer.
        top_p: In [0, 1].
        penalty_score: In [1, 2].
        stop: At most 4 strings of at most 20 characters each.
        user_id: The end user's id.
        metadata: At most 16 string-to-string entries.

    Raises:
        RequestValidationError: Naming the field and the rule it breaks.
    """

    messages: tuple[Message, ...] = attrs.field(converter=_to_messages, validator=_check_messages)
    stream: bool = attrs.field(default=False)
    temperature: float | None = attrs.field(
        default=None, validator=_range_check(0.0, 1.0, low_open=True)
    )
    top_k: int | None = attrs.field(default=None, validator=_check_top_k)
    top_p: float | None = attrs.field(default=None, validator=_range_check(0.0, 1.0))
    penalty_score: float | None = attrs.field(default=None, validator=_range_check(1.0, 2.0))
    stop: tuple[str, ...] | None = attrs.field(default=None, converter=_to_stop)
    user_id: str | None = attrs.field(default=None, validator=_check_user_id)
    metadata: dict[str, str] | None = attrs.field(default=None, converter=_to_metadata, hash=False)

    @stream.validator
    def _check_stream(self, _: object, value: object) -> None:
        check_bool(value, "stream", error=RequestValidationError)


@attrs.frozen
class Usage:
    """Token counts of one call."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@attrs.frozen(kw_only=True)
class ChatResponse:
    """A whole (non-stream) answer.

    Attributes:
        id: The id of this round.
        object: ``"chat.completion"``.
        created: Unix time in seconds.
        result: The answer's text.
        is_truncated: The answer was cut short.
        need_clear_history: The input was flagged: end the session and clear the history.
        ban_round: With ``need_clear_history``, the flagged round (``-1``: this question).
        usage: Token counts.
        rate_limit: The quota the reply's ``X-Ratelimit-*`` headers announced, or ``None``
            without them. Taken from the headers, never from the body; not compared by ``==``.
    """

    id: str
    object: str
    created: int
    result: str
    is_truncated: bool = False
    need_clear_history: bool = False
    ban_round: int | None = None
    usage: Usage
    # "local": the converter never reads it from a body.
    rate_limit: RateLimitInfo | None = attrs.field(default=None, eq=False, metadata={"local": True})


@attrs.frozen(kw_only=True)
class ChatChunk:
    """One sentence of a streamed answer.

    Attributes:
        sentence_id: 0, 1, 2, ... in order.
        is_end: True on the last chunk.
        result: This sentence's text.
        usage: Token counts so far; totals on the last chunk.

    The other attributes are those of :class:`ChatResponse`.
    """

    id: str
    object: str
    created: int
    sentence_id: int
    is_end: bool
    result: str
    is_truncated: bool = False
    need_clear_history: bool = False
    ban_round: int | None = None
    usage: Usage


@attrs.frozen(kw_only=True)
class ErrorEnvelope:
    """The body of a refused call: ``{"error_code": ..., "error_msg": ...}``."""

    error_code: int
    error_msg: str
    id: str | None = None


@attrs.frozen(kw_only=True)
class TokenGrant:
    """What the token endpoint grants; only ``access_token`` and ``expires_in`` are used.

    The other fields are Baidu's documented extras, kept so that a strict reading of the
    reply knows them; the secret-looking ones stay out of ``repr``.
    """

    access_token: str = attrs.field(repr=False)
    expires_in: int
    refresh_token: str | None = attrs.field(default=None, repr=False)
    scope: str | None = None
    session_key: str | None = attrs.field(default=None, repr=False)
    session_secret: str | None = attrs.field(default=None, repr=False)
