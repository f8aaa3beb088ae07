"""Scripted replies: answers chosen by the test instead of derived from the question.

``Emulator.add_reply("yes")`` queues one; the next accepted chat calls consume them in
order. A reply given as one string is cut into ``stream_chunks`` pieces for a stream; a
list of sentences is streamed one sentence per chunk and joined for a plain answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from mpt_async.testing._config import check_int

__all__ = ["MAX_REPLY_CHARS", "MAX_SENTENCES", "ScriptedReply"]

#: The longest scripted answer, in characters.
MAX_REPLY_CHARS = 1_000_000
#: The most sentences (stream chunks) in a scripted answer.
MAX_SENTENCES = 10_000
_MAX_INT = 2**31 - 1
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens"})
_KEYS = frozenset({"text", "sentences", "usage", "need_clear_history", "ban_round", "times"})


def _sentences(reply: object) -> tuple[tuple[str, ...], bool]:
    if isinstance(reply, str):
        return (reply,), False
    if (
        not isinstance(reply, Sequence)
        or not reply
        or len(reply) > MAX_SENTENCES
        or not all(isinstance(s, str) for s in reply)
    ):
        msg = f"a reply is a string or a list of 1 to {MAX_SENTENCES} strings"
        raise ValueError(msg)
    return tuple(reply), True


def _usage(usage: object) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None
    if not isinstance(usage, Mapping) or not usage.keys() <= _USAGE_KEYS:
        msg = "usage must be a mapping with prompt_tokens and/or completion_tokens"
        raise ValueError(msg)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    for name, value in (("prompt_tokens", prompt), ("completion_tokens", completion)):
        if value is not None:
            check_int(f"usage.{name}", value, 0, _MAX_INT)
    return prompt, completion


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        msg = f"{name} must be a bool"
        raise ValueError(msg)  # noqa: TRY004 - every bad argument of a reply is a ValueError


@attrs.frozen(kw_only=True)
class ScriptedReply:
    """One answer queued by a test. Build it with :meth:`build`.

    Attributes:
        sentences: The answer's pieces (one piece: cut into ``stream_chunks`` for a stream).
        split: Whether ``sentences`` are the stream's chunks as given.
        prompt_tokens: The ``usage.prompt_tokens`` to report (``None``: counted).
        completion_tokens: The ``usage.completion_tokens`` to report (``None``: counted).
        need_clear_history: Whether the answer flags the conversation.
        ban_round: The ``ban_round`` of a flagged answer.
    """

    sentences: tuple[str, ...]
    split: bool
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    need_clear_history: bool = False
    ban_round: int = -1

    @property
    def text(self) -> str:
        """The whole answer."""
        return "".join(self.sentences)

    @classmethod
    def build(
        cls,
        reply: str | Sequence[str],
        *,
        usage: Mapping[str, int] | None = None,
        need_clear_history: bool = False,
        ban_round: int | None = None,
    ) -> ScriptedReply:
        """Check the arguments of ``Emulator.add_reply`` and build the reply.

        Raises:
            ValueError: A bad or oversized argument.
        """
        sentences, split = _sentences(reply)
        if sum(map(len, sentences)) > MAX_REPLY_CHARS:
            msg = f"a reply may have at most {MAX_REPLY_CHARS} characters"
            raise ValueError(msg)
        prompt, completion = _usage(usage)
        _check_bool("need_clear_history", need_clear_history)
        if ban_round is not None:
            check_int("ban_round", ban_round, -1, _MAX_INT)
            if not need_clear_history:
                msg = "ban_round goes with need_clear_history=True"
                raise ValueError(msg)
        return cls(
            sentences=sentences,
            split=split,
            prompt_tokens=prompt,
            completion_tokens=completion,
            need_clear_history=need_clear_history,
            ban_round=-1 if ban_round is None else ban_round,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> tuple[ScriptedReply, int]:
        """Build a reply from its JSON form, ``{"text": "yes"}`` or ``{"sentences": [...]}``.

        The other keys are ``usage``, ``need_clear_history``, ``ban_round`` and ``times``.

        Returns:
            The reply and its ``times``.

        Raises:
            ValueError: Unknown keys, or bad values.
        """
        if not isinstance(data, Mapping) or not data.keys() <= _KEYS:
            msg = f"a reply is a JSON object with some of {sorted(_KEYS)}"
            raise ValueError(msg)
        if ("text" in data) == ("sentences" in data):
            msg = 'a reply needs exactly one of "text" and "sentences"'
            raise ValueError(msg)
        reply = data["text"] if "text" in data else data["sentences"]
        if "sentences" in data and not isinstance(reply, list):
            msg = '"sentences" must be a list of strings'
            raise ValueError(msg)
        built = cls.build(
            reply,
            usage=data.get("usage"),
            need_clear_history=data.get("need_clear_history", False),
            ban_round=data.get("ban_round"),
        )
        return built, data.get("times", 1)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that :meth:`from_dict` reads back."""
        data: dict[str, Any] = (
            {"sentences": list(self.sentences)} if self.split else {"text": self.text}
        )
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        usage = {key: value for key, value in usage.items() if value is not None}
        if usage:
            data["usage"] = usage
        if self.need_clear_history:
            data["need_clear_history"] = True
            data["ban_round"] = self.ban_round
        return data
