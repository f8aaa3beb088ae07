"""The sampling options of a chat call: their one type, and their one set of rules.

:class:`ChatOptions` is what users pass as keywords (``client.chat(messages,
temperature=0.2)``) and what :class:`~mpt_async.Client.chat`,
:meth:`~mpt_async.Client.chat_stream`, :class:`~mpt_async.Conversation` and
:meth:`~mpt_async.Client.batch` take as ``**options``. Each option's rule is one function
here; :class:`~mpt_async.ChatRequest` uses the same functions as its field converters, and
:func:`check_options` checks options that have no messages yet (a conversation's or the
command line's defaults) without building a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict, cast

from mpt_async._exceptions import RequestValidationError
from mpt_async._validate import check_int, check_number, check_str, refuse

__all__ = [
    "MAX_METADATA_ENTRIES",
    "MAX_STOP_LENGTH",
    "MAX_STOP_WORDS",
    "MAX_TOP_K",
    "OPTION_NAMES",
    "ChatOptions",
    "check_names",
    "check_options",
    "check_text",
    "options_from",
]

MAX_STOP_WORDS = 4
MAX_STOP_LENGTH = 20
MAX_METADATA_ENTRIES = 16
#: The largest ``top_k`` sent (the service reads it as a 32-bit integer).
MAX_TOP_K = 2**31 - 1
#: v2's ``seed`` lies strictly between 0 and 2**31 - 1.
MAX_SEED = 2**31 - 2
#: The largest ``max_completion_tokens`` sent (a 32-bit integer; each model caps it lower).
MAX_COMPLETION_TOKENS = 2**31 - 1
_BAD = RequestValidationError


class ChatOptions(TypedDict, total=False):
    """The sampling options of one call, all optional; ``None`` (or leaving one out) sends nothing.

    Pass them as keywords: ``client.chat(messages, temperature=0.2, stop=["END"])``, or
    keep a set as a dict: ``options: ChatOptions = {"top_p": 0.9}; client.chat(m, **options)``.

    Keys:
        temperature: Randomness, in (0, 1].
        top_k: Sample among the ``top_k`` likeliest tokens: a positive integer.
        top_p: Nucleus sampling, in [0, 1].
        penalty_score: Penalty on repeated tokens, in [1, 2].
        stop: At most 4 strings of at most 20 characters each; the answer stops before any.
        user_id: The end user's id.
        metadata: At most 16 string-to-string entries, sent with the call.
        system: A system prompt: on the v2 interface, a leading ``system`` message. The v1
            interface of a self-deployed service has none: there it is refused.
        seed: Makes sampling repeatable, in [1, 2147483646] (v2 only, refused on v1).
        max_completion_tokens: The most tokens the answer may have, at least 1; the service
            caps it per model (v2 only, refused on v1).
        frequency_penalty: Penalty on tokens by how often they appeared, in [-2, 2] (v2 only,
            refused on v1).
        presence_penalty: Penalty on tokens that appeared at all, in [-2, 2] (v2 only,
            refused on v1).
    """

    temperature: float | None
    top_k: int | None
    top_p: float | None
    penalty_score: float | None
    stop: Iterable[str] | None
    user_id: str | None
    metadata: Mapping[str, str] | None
    system: str | None
    seed: int | None
    max_completion_tokens: int | None
    frequency_penalty: float | None
    presence_penalty: float | None


#: The option names, in the order a request body lists them.
OPTION_NAMES: tuple[str, ...] = tuple(ChatOptions.__annotations__)


def check_text(path: str, text: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (lone surrogates, e.g. from bad decoding)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            refuse(path, "must be valid Unicode text (it holds a lone surrogate)", _BAD)


# -- one converter per option: None passes, anything else is checked (and copied) -----------
# Numbers are returned as given, so that ``temperature=1`` is sent as ``1``.


def to_temperature(value: float | None) -> float | None:
    """Check ``temperature``."""
    if value is not None:
        check_number(value, "temperature", low=0.0, high=1.0, low_open=True, error=_BAD)
    return value


def to_top_k(value: int | None) -> int | None:
    """Check ``top_k``."""
    return None if value is None else check_int(value, "top_k", low=1, high=MAX_TOP_K, error=_BAD)


def to_top_p(value: float | None) -> float | None:
    """Check ``top_p``."""
    if value is not None:
        check_number(value, "top_p", low=0.0, high=1.0, error=_BAD)
    return value


def to_penalty_score(value: float | None) -> float | None:
    """Check ``penalty_score``."""
    if value is not None:
        check_number(value, "penalty_score", low=1.0, high=2.0, error=_BAD)
    return value


def to_stop(value: Iterable[str] | None) -> tuple[str, ...] | None:
    """Check ``stop``, as a tuple (a generator or a list changed later counts as given)."""
    if value is None:
        return None
    # A mapping is iterable too, but only its keys would be sent.
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        refuse("stop", "must be a list of strings", _BAD)
    words = tuple(value)
    if len(words) > MAX_STOP_WORDS:
        refuse("stop", f"must hold at most {MAX_STOP_WORDS} elements, not {len(words)}", _BAD)
    for i, word in enumerate(words):
        check_text(f"stop[{i}]", check_str(word, f"stop[{i}]", error=_BAD))
        if len(word) > MAX_STOP_LENGTH:
            refuse(
                f"stop[{i}]", f"must be at most {MAX_STOP_LENGTH} characters, not {len(word)}", _BAD
            )
    return words


def to_user_id(value: str | None) -> str | None:
    """Check ``user_id``."""
    if value is not None:
        check_text("user_id", check_str(value, "user_id", error=_BAD))
    return value


def to_system(value: str | None) -> str | None:
    """Check ``system``: text that is not empty."""
    if value is not None:
        text = check_str(value, "system", error=_BAD)
        if not text:
            refuse("system", "must not be empty", _BAD)
        check_text("system", text)
    return value


def to_seed(value: int | None) -> int | None:
    """Check ``seed``."""
    return None if value is None else check_int(value, "seed", low=1, high=MAX_SEED, error=_BAD)


def to_max_completion_tokens(value: int | None) -> int | None:
    """Check ``max_completion_tokens`` (the service knows each model's own ceiling)."""
    if value is None:
        return None
    return check_int(value, "max_completion_tokens", low=1, high=MAX_COMPLETION_TOKENS, error=_BAD)


def to_frequency_penalty(value: float | None) -> float | None:
    """Check ``frequency_penalty``."""
    if value is not None:
        check_number(value, "frequency_penalty", low=-2.0, high=2.0, error=_BAD)
    return value


def to_presence_penalty(value: float | None) -> float | None:
    """Check ``presence_penalty``."""
    if value is not None:
        check_number(value, "presence_penalty", low=-2.0, high=2.0, error=_BAD)
    return value


def to_metadata(value: Mapping[str, str] | None) -> dict[str, str] | None:
    """Check ``metadata``, as a dict of its own."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        refuse("metadata", "must be a mapping of strings to strings", _BAD)
    if len(value) > MAX_METADATA_ENTRIES:
        refuse(
            "metadata", f"must hold at most {MAX_METADATA_ENTRIES} entries, not {len(value)}", _BAD
        )
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            refuse(f"metadata[{key!r}]", "keys and values must be strings", _BAD)
        check_text(f"metadata[{key!r}]", key + item)
    return dict(value)


_CONVERTERS: Mapping[str, Callable[[Any], object]] = {
    "temperature": to_temperature,
    "top_k": to_top_k,
    "top_p": to_top_p,
    "penalty_score": to_penalty_score,
    "stop": to_stop,
    "user_id": to_user_id,
    "metadata": to_metadata,
    "system": to_system,
    "seed": to_seed,
    "max_completion_tokens": to_max_completion_tokens,
    "frequency_penalty": to_frequency_penalty,
    "presence_penalty": to_presence_penalty,
}


def check_names(names: Iterable[object]) -> None:
    """Refuse a name that is not an option.

    Raises:
        RequestValidationError: Naming the first unknown name.
    """
    for name in names:
        if name not in _CONVERTERS:
            refuse(str(name), f"is not an option; the options are {', '.join(OPTION_NAMES)}", _BAD)


def check_options(given: Mapping[str, object]) -> ChatOptions:
    """The options that were given (not ``None``), checked and copied.

    Raises:
        RequestValidationError: An unknown name, or a value that breaks its rule.
    """
    check_names(given)
    checked = {name: _CONVERTERS[name](value) for name, value in given.items() if value is not None}
    return cast("ChatOptions", checked)


def options_from(source: object) -> ChatOptions:
    """The options held as attributes of ``source`` (an ``argparse.Namespace``), checked.

    Attributes that are missing or ``None`` are left out; other attributes are ignored.

    Raises:
        RequestValidationError: A value that breaks its rule.
    """
    return check_options({name: getattr(source, name, None) for name in OPTION_NAMES})
