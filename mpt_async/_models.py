"""The protocol's value types, and every rule of the request body.

The rules and fields are those of the service's API page,
https://cloud.baidu.com/doc/WENXINWORKSHOP/s/Elkqus29q.

Requests check themselves when built: a broken rule raises
:class:`~mpt_async.RequestValidationError` naming the field and the rule, so nothing that
the service would refuse is ever sent. Responses are plain frozen records; turning JSON into
them (and refusing malformed JSON) is the converter's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, TypedDict

import attrs

from mpt_async._exceptions import RequestValidationError
from mpt_async._options import (
    check_text,
    to_frequency_penalty,
    to_max_completion_tokens,
    to_metadata,
    to_penalty_score,
    to_presence_penalty,
    to_seed,
    to_stop,
    to_system,
    to_temperature,
    to_top_k,
    to_top_p,
    to_user_id,
)
from mpt_async._public import claim
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._validate import check_bool, check_str, refuse

__all__ = [
    "MAX_TOTAL_CONTENT",
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "ErrorEnvelope",
    "Message",
    "MessageDict",
    "MessageLike",
    "Role",
    "TokenGrant",
    "Usage",
    "to_messages",
]

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")
#: The most characters the contents of all messages may add up to.
MAX_TOTAL_CONTENT = 4800


def _check_role(path: str, role: object) -> None:
    if role not in ROLES:
        refuse(path, f"must be 'user' or 'assistant', not {role!r}", RequestValidationError)


def _check_content(path: str, content: object) -> None:
    text = check_str(content, path, error=RequestValidationError)
    if not text:
        refuse(path, "must not be empty", RequestValidationError)
    check_text(path, text)


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


class MessageDict(TypedDict):
    """A message given as a dict: ``{"role": "user", "content": "Hi"}``."""

    role: Role
    content: str


#: What ``messages`` may hold: :class:`Message` objects or :class:`MessageDict` dicts.
MessageLike = Message | MessageDict


def _to_message(index: int, item: object) -> Message:
    """A :class:`Message` from an item of ``messages``; a dict is checked once, as a Message."""
    if isinstance(item, Message):
        return item
    path = f"messages[{index}]"
    if not isinstance(item, Mapping):
        refuse(path, "must be a Message or a mapping with role and content", RequestValidationError)
    extra = set(item) - {"role", "content"}
    if extra:
        refuse(path, f"unknown keys {sorted(map(str, extra))}", RequestValidationError)
    for key in ("role", "content"):
        if key not in item:
            refuse(f"{path}.{key}", "is required", RequestValidationError)
    try:
        return Message(role=item["role"], content=item["content"])
    except RequestValidationError as exc:
        raise RequestValidationError(f"{path}.{exc.field}", exc.rule) from None


def to_messages(value: Iterable[MessageLike]) -> tuple[Message, ...]:
    """Each item of ``messages`` as a :class:`Message` (the order and roles are not checked)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        refuse("messages", "must be a list of messages", RequestValidationError)
    return tuple(_to_message(i, item) for i, item in enumerate(value))


def _check_messages(_: object, __: object, messages: tuple[Message, ...]) -> None:
    if not messages:
        refuse("messages", "must not be empty", RequestValidationError)
    if len(messages) % 2 == 0:
        refuse(
            "messages",
            f"must hold an odd number of messages, not {len(messages)}",
            RequestValidationError,
        )
    for i, message in enumerate(messages):
        expected = ROLES[i % 2]
        if message.role != expected:
            refuse(
                f"messages[{i}].role",
                f"must be {expected!r}: roles alternate user, assistant, ..., user",
                RequestValidationError,
            )
    total = sum(len(m.content) for m in messages)
    if total > MAX_TOTAL_CONTENT:
        refuse(
            "messages",
            f"total content must be at most {MAX_TOTAL_CONTENT} characters, not {total}",
            RequestValidationError,
        )


@attrs.frozen(kw_only=True)
class ChatRequest:
    """The body of one chat call, checked against every rule of the API page.

    Fields left ``None`` are not sent.

    Args:
        messages: Odd count, alternating ``user``/``assistant``, first and last ``user``,
            contents adding up to at most 4,800 characters. Dicts are accepted.
        stream: Ask for a stream of sentences.
        temperature: The sampling options, see :class:`ChatOptions`.
        top_k: See :class:`ChatOptions`.
        top_p: See :class:`ChatOptions`.
        penalty_score: See :class:`ChatOptions`.
        stop: See :class:`ChatOptions`.
        user_id: See :class:`ChatOptions`.
        metadata: See :class:`ChatOptions`.
        system: See :class:`ChatOptions` (the v2 interface only).
        seed: See :class:`ChatOptions` (the v2 interface only).
        max_completion_tokens: See :class:`ChatOptions` (the v2 interface only).
        frequency_penalty: See :class:`ChatOptions` (the v2 interface only).
        presence_penalty: See :class:`ChatOptions` (the v2 interface only).

    Raises:
        RequestValidationError: Naming the field and the rule it breaks.
    """

    messages: tuple[Message, ...] = attrs.field(converter=to_messages, validator=_check_messages)
    stream: bool = attrs.field(default=False)
    temperature: float | None = attrs.field(default=None, converter=to_temperature)
    top_k: int | None = attrs.field(default=None, converter=to_top_k)
    top_p: float | None = attrs.field(default=None, converter=to_top_p)
    penalty_score: float | None = attrs.field(default=None, converter=to_penalty_score)
    stop: tuple[str, ...] | None = attrs.field(default=None, converter=to_stop)
    user_id: str | None = attrs.field(default=None, converter=to_user_id)
    metadata: dict[str, str] | None = attrs.field(default=None, converter=to_metadata, hash=False)
    system: str | None = attrs.field(default=None, converter=to_system)
    seed: int | None = attrs.field(default=None, converter=to_seed)
    max_completion_tokens: int | None = attrs.field(
        default=None, converter=to_max_completion_tokens
    )
    frequency_penalty: float | None = attrs.field(default=None, converter=to_frequency_penalty)
    presence_penalty: float | None = attrs.field(default=None, converter=to_presence_penalty)

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


# Public as mpt_async.X, even when loaded on first use.
claim(globals(), "ChatChunk", "ChatRequest", "ChatResponse", "Message", "MessageDict")
claim(globals(), "MessageLike", "Role", "Usage")
