"""The wire format: one cattrs converter between the protocol's classes and JSON.

Requests are unstructured with every unset (``None``) field left out: the service is sent
no ``null`` and no field the caller did not set. Responses are structured strictly by type
(``"5"`` is not an int) but tolerate unknown fields, as SPEC section 4 asks; anything that
does not fit becomes :class:`~mpt_async.MalformedResponseError`, never a ``KeyError``.

The test suite swaps in ``make_converter(strict=True)``, which also refuses unknown
fields, so that drift between the emulator and the models shows up.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import cattrs

from mpt_async._exceptions import MalformedResponseError
from mpt_async._models import ChatRequest

__all__ = ["CONVERTER", "decode_json", "encode_request", "make_converter", "structure"]

T = TypeVar("T")

def _exact(kind: type[Any]) -> Any:
    name = kind.__name__

    def structure_exact(value: object, _: object) -> Any:
        # bool is an int subclass: True is not an acceptable token count.
        if type(value) is kind:
            return value
        raise TypeError(f"expected {name}, got {type(value).__name__}")

    return structure_exact


def _structure_float(value: object, _: object) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def make_converter(*, strict: bool = False, detailed: bool = False) -> cattrs.Converter:
    """Build the wire converter.

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
    for kind in (int, str, bool):
        converter.register_structure_hook(kind, _exact(kind))
    converter.register_structure_hook(float, _structure_float)
    return converter


#: The converter the package uses (the test suite swaps in a strict one).
CONVERTER = make_converter()
_explainer: cattrs.Converter | None = None


def encode_request(request: ChatRequest, converter: cattrs.Converter | None = None) -> bytes:
    """Serialise a request body: compact UTF-8 JSON with only the fields that were set."""
    data = (converter or CONVERTER).unstructure(request)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def decode_json(content: bytes | str, *, status_code: int | None = None) -> Any:
    """Parse a reply body.

    Raises:
        MalformedResponseError: If the body is not JSON.
    """
    try:
        return json.loads(content)
    except ValueError:
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
    except (KeyError, TypeError, ValueError, AttributeError, cattrs.BaseValidationError):
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
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pragma: no cover
        return repr(exc)
    return "invalid value"  # pragma: no cover - the fast path and the explainer disagree
