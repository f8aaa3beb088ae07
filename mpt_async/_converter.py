"""The JSON format: one cattrs converter between the protocol's classes and JSON.

Requests are unstructured with every unset (``None``) field left out: the service is sent
no ``null`` and no field the caller did not set. Responses are structured strictly by type
(``"5"`` is not an int) but tolerate unknown fields the service may add; anything that
does not fit becomes :class:`~mpt_async.MalformedResponseError`, never a ``KeyError``.

The test suite swaps in ``make_converter(strict=True)``, which also refuses unknown
fields, so that drift between the emulator and the models shows up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from mpt_async import _models
from mpt_async._exceptions import MalformedResponseError
from mpt_async._models import ChatChunk, ChatRequest, Usage

__all__ = [
    "CONVERTER",
    "chunk_structurer",
    "decode_json",
    "dumps",
    "encode_request",
    "is_int64",
    "loads",
    "make_converter",
    "structure",
]

T = TypeVar("T")


#: Integers in replies are 64-bit: a larger one is not a count the service could mean.
_INT_LIMIT = 2**63


def _exact(kind: type[Any]) -> Any:
    name = kind.__name__

    def structure_exact(value: object, _: object) -> Any:
        # bool is an int subclass: True is not an acceptable token count.
        if type(value) is kind:
            return value
        raise TypeError(f"expected {name}, got {type(value).__name__}")

    return structure_exact


def is_int64(value: object) -> TypeGuard[int]:
    """An ``int`` (not a ``bool``) that fits in 64 bits, as every integer of a reply must."""
    return type(value) is int and -_INT_LIMIT < value < _INT_LIMIT


def _structure_int(value: object, _: object) -> int:
    if is_int64(value):
        return value
    if type(value) is int:
        raise TypeError("expected a 64-bit int, got a larger one")
    raise TypeError(f"expected int, got {type(value).__name__}")


def _structure_float(value: object, _: object) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def make_converter(*, strict: bool = False, detailed: bool = False) -> cattrs.Converter:
    """Build the JSON converter.

    cattrs generates each class's hooks on first use, so building one is cheap and
    ``import mpt_async`` pays for no code generation.

    Args:
        strict: Also refuse unknown fields in responses (for the test suite).
        detailed: Track where a structuring error happened (slower; used only to explain
            an error once the fast path has failed).
    """
    converter = cattrs.Converter(
        detailed_validation=detailed,
        forbid_extra_keys=strict,
        # Every optional request field defaults to None (stream to False): omitted unless set.
        omit_if_default=True,
    )
    for kind in (str, bool):
        converter.register_structure_hook(kind, _exact(kind))
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook_factory(attrs.has, _structure_factory)
    converter.register_unstructure_hook_factory(attrs.has, _unstructure_factory)
    if not detailed:  # the detailed one explains what the fast hook refused
        hook = _structure_chunk_strict if strict else _structure_chunk
        converter.register_structure_hook(ChatChunk, hook)
    return converter


def _resolve(cls: type[Any]) -> None:
    # The models' string annotations name things that live in _models; once mpt_async has
    # re-homed the classes as mpt_async.X, only _models' namespace can resolve them.
    attrs.resolve_types(cls, globalns=vars(_models))


def _structure_factory(cls: type[Any], converter: cattrs.Converter) -> Any:
    _resolve(cls)
    # Fields marked ``local`` (a response's rate_limit) come from the headers, never a body.
    local = {f.name: override(omit=True) for f in attrs.fields(cls) if f.metadata.get("local")}
    return make_dict_structure_fn(cls, converter, **local)  # type: ignore[arg-type]


def _unstructure_factory(cls: type[Any], converter: cattrs.Converter) -> Any:
    _resolve(cls)
    return make_dict_unstructure_fn(
        cls, converter, _cattrs_omit_if_default=converter.omit_if_default
    )


_CHUNK_KEYS = frozenset(field.name for field in attrs.fields(ChatChunk))
_USAGE_KEYS = frozenset(field.name for field in attrs.fields(Usage))
#: The counts of the last chunk structured, and their Usage: every chunk of a stream but the
#: last carries the same ones (the prompt's, completion 0), so one frozen Usage serves them.
_last_usage: tuple[tuple[int, int, int] | None, Usage] = (None, Usage(0, 0, 0))


def _structure_chunk(data: Any, _: Any) -> ChatChunk:
    """A hand-written structuring of stream chunks (the one type structured per sentence).

    It checks what the generated hooks check (a test pins that they agree), in one function
    instead of a call per field: with the shared Usage, 1.7 against 2.6 µs a chunk, a tenth
    of the budget of the decode target (<= 1.2 x a bare line loop). On failure,
    ``structure`` asks the detailed converter where the problem is.
    """
    global _last_usage  # one (counts, Usage) pair, replaced whole
    usage = data["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    total = usage["total_tokens"]
    id_, object_, result = data["id"], data["object"], data["result"]
    created, sentence_id, is_end = data["created"], data["sentence_id"], data["is_end"]
    truncated = data.get("is_truncated", False)
    flagged = data.get("need_clear_history", False)
    ban_round = data.get("ban_round")
    if not (
        type(prompt) is int
        and type(completion) is int
        and type(total) is int
        and type(created) is int
        and type(sentence_id) is int
        # is_int64, inline: a call per integer costs as much as the check
        and -_INT_LIMIT < prompt < _INT_LIMIT
        and -_INT_LIMIT < completion < _INT_LIMIT
        and -_INT_LIMIT < total < _INT_LIMIT
        and -_INT_LIMIT < created < _INT_LIMIT
        and -_INT_LIMIT < sentence_id < _INT_LIMIT
        and type(id_) is str
        and type(object_) is str
        and type(result) is str
        and type(is_end) is bool
        and type(truncated) is bool
        and type(flagged) is bool
        and (ban_round is None or is_int64(ban_round))
    ):
        raise TypeError("a chunk field has the wrong type")
    counts, shared = _last_usage
    if counts != (prompt, completion, total):
        shared = Usage(prompt, completion, total)
        _last_usage = ((prompt, completion, total), shared)
    return ChatChunk(
        id=id_,
        object=object_,
        created=created,
        sentence_id=sentence_id,
        is_end=is_end,
        result=result,
        is_truncated=truncated,
        need_clear_history=flagged,
        ban_round=ban_round,
        usage=shared,
    )


def _structure_chunk_strict(data: Any, cls: Any) -> ChatChunk:
    """:func:`_structure_chunk`, refusing unknown fields (the test suite's converter)."""
    usage = data["usage"]
    if not (data.keys() <= _CHUNK_KEYS and usage.keys() <= _USAGE_KEYS):
        extra = (data.keys() - _CHUNK_KEYS) | (usage.keys() - _USAGE_KEYS)
        raise cattrs.ForbiddenExtraKeysError("", ChatChunk, set(extra))
    return _structure_chunk(data, cls)


def _stdlib_dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _pick_json() -> None:
    """Use orjson (the ``speed`` extra) when installed: about five times faster to parse."""
    global loads, dumps
    try:
        import orjson
    except ImportError:
        loads, dumps = json.loads, _stdlib_dumps
    else:
        loads, dumps = orjson.loads, orjson.dumps


def _first_loads(data: bytes | str) -> Any:
    _pick_json()
    return loads(data)


def _first_dumps(data: Any) -> bytes:
    _pick_json()
    return dumps(data)


#: Parse JSON (bytes or str); raises ValueError. Replaced by the real parser on first use,
#: so that importing the package does not pay for importing orjson.
loads: Callable[[bytes | str], Any] = _first_loads
#: Serialise to compact UTF-8 JSON bytes.
dumps: Callable[[Any], bytes] = _first_dumps


#: The converter the package uses (the test suite swaps in a strict one).
CONVERTER = make_converter()
_explainer: cattrs.Converter | None = None


def encode_request(request: ChatRequest, converter: cattrs.Converter | None = None) -> bytes:
    """Serialise a request body: compact UTF-8 JSON with only the fields that were set."""
    data = (converter or CONVERTER).unstructure(request)
    # A copy of exactly its size: orjson's result keeps its 4 KiB buffer, and a body lives
    # as long as its call (10,000 calls in flight would hold 40 MB of slack).
    return bytes(memoryview(dumps(data)))


def chunk_structurer() -> Callable[[Any, Any], ChatChunk]:
    """The current converter's structuring hook for stream chunks (called once per sentence)."""
    hook: Callable[[Any, Any], ChatChunk] = CONVERTER.get_structure_hook(ChatChunk)
    return hook


def decode_json(content: bytes | str, *, status_code: int | None = None) -> Any:
    """Parse a reply body.

    Raises:
        MalformedResponseError: If the body is not JSON, or nested too deeply to parse.
    """
    try:
        return loads(content)
    except (ValueError, RecursionError):
        snippet = (
            content[:80] if isinstance(content, str) else content[:80].decode(errors="replace")
        )
        raise MalformedResponseError(
            f"reply is not JSON: {snippet!r}", status_code=status_code
        ) from None


def structure(
    data: Any,
    cls: type[T],
    *,
    status_code: int | None = None,
    converter: cattrs.Converter | None = None,
) -> T:
    """Turn parsed JSON into ``cls``.

    Raises:
        MalformedResponseError: Naming what was missing or of the wrong type.
    """
    if not isinstance(data, dict):
        raise MalformedResponseError(
            f"expected a JSON object for {cls.__name__}, got {type(data).__name__}",
            status_code=status_code,
        )
    try:
        return (converter or CONVERTER).structure(data, cls)
    except cattrs.ForbiddenExtraKeysError as exc:
        problem = f"unknown fields {sorted(exc.extra_fields)}"
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
        cattrs.BaseValidationError,
    ):
        # e.g. a nested object that is null or a list: find and name the place.
        problem = _explain(data, cls)
    request_id = data.get("id")
    raise MalformedResponseError(
        f"malformed {cls.__name__}: {problem}",
        status_code=status_code,
        request_id=request_id if isinstance(request_id, str) else None,
    )


def _explain(data: dict[str, Any], cls: type[Any]) -> str:
    """Say which field broke structuring, e.g. ``invalid type (...) @ $.usage.total_tokens``."""
    global _explainer  # built on the first malformed reply, not at import
    if _explainer is None:
        _explainer = make_converter(detailed=True)
    try:
        _explainer.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        return "; ".join(cattrs.transform_error(exc))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError):
        return "invalid value"  # pragma: no cover
    return "invalid value"  # pragma: no cover - the fast path and the explainer disagree
