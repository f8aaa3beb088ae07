"""The reply decoder: one reading of a whole reply, an answer or a token grant.

It reads a whole body at a bounded cost, decodes its JSON, and turns it into the answer, or
into the :class:`~mpt_async._verdict.AttemptFailed` it deserves (``_verdict``). A stream's chunks
are read by :class:`~mpt_async._stream.ChunkDecoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import httpx

from mpt_async import _converter
from mpt_async._body import Body, BodyTooLarge, UnsupportedEncoding, aclose_response
from mpt_async._codes import Action
from mpt_async._exceptions import MalformedResponseError
from mpt_async._models import ChatChunk, ChatResponse
from mpt_async._ratelimit import RateLimitInfo
from mpt_async._verdict import (
    AttemptFailed,
    connection_error,
    error_body_failure,
    is_error_body,
    status_failure,
)

__all__ = ["Refusal", "decode_body", "read_reply", "whole_answer", "whole_stream"]


#: A check of a parsed body before the generic ones (the token endpoint's OAuth errors).
Refusal = Callable[[Any, httpx.Response], "AttemptFailed | None"]


def decode_body(response: httpx.Response, content: bytes, refusal: Refusal | None = None) -> Any:
    """The success body of a whole reply, or raise the :class:`AttemptFailed` it deserves.

    Raises:
        AttemptFailed: For a body that is not JSON, an error body, or an HTTP error status.
    """
    status = response.status_code
    try:
        data = _converter.decode_json(content, status_code=status)
    except MalformedResponseError as exc:
        if status == 200:
            raise AttemptFailed(exc, Action.RAISE) from None
        raise status_failure(response) from None
    if refusal is not None and (failure := refusal(data, response)) is not None:
        raise failure
    if is_error_body(data):
        raise error_body_failure(data, response)
    if status != 200:
        raise status_failure(response)
    return data


async def read_reply(response: httpx.Response, doing: str, refusal: Refusal | None = None) -> Any:
    """Read, close and decode a whole reply (the caller bounds the time it takes).

    Raises:
        AttemptFailed: For a broken connection (retried), an oversized or undecodable body, and
            whatever :func:`decode_body` refuses.
    """
    failure: AttemptFailed | None = None
    body: Body | None = None
    content = b""
    try:
        body = Body(response)
        content = await body.read()
    except httpx.TransportError as exc:
        failure = AttemptFailed(connection_error(exc, doing), Action.RETRY)
    except (BodyTooLarge, UnsupportedEncoding) as exc:
        error = MalformedResponseError(str(exc), status_code=response.status_code)
        failure = AttemptFailed(error, Action.RAISE)
    finally:
        await (aclose_response(response) if body is None else body.aclose())
    if failure is not None:
        raise failure
    return decode_body(response, content, refusal)


#: The fields a whole answer takes from a stream's last chunk as they are.
_FROM_LAST_CHUNK = tuple(
    field.name
    for field in attrs.fields(ChatResponse)
    if field.name in attrs.fields_dict(ChatChunk)
    and field.name not in ("result", "need_clear_history", "ban_round")
)


def whole_stream(
    last: ChatChunk, text: str, flagged: ChatChunk | None, rate_limit: RateLimitInfo | None
) -> ChatResponse:
    """A whole answer from a finished stream: its last chunk, all its text, its first flag."""
    return ChatResponse(
        **{name: getattr(last, name) for name in _FROM_LAST_CHUNK},
        result=text,
        need_clear_history=flagged is not None,
        ban_round=flagged.ban_round if flagged is not None else None,
        rate_limit=rate_limit,
    )


def whole_answer(data: Any, rate_limit: RateLimitInfo | None) -> ChatResponse:
    """A whole answer from its parsed body and the quota its headers announced.

    Raises:
        AttemptFailed: If the body is not a well-formed answer.
    """
    try:
        reply = _converter.structure(data, ChatResponse, status_code=200)
    except MalformedResponseError as exc:
        raise AttemptFailed(exc, Action.RAISE) from None
    return reply if rate_limit is None else attrs.evolve(reply, rate_limit=rate_limit)
