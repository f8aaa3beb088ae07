"""What the chat endpoint answers to a valid request: a whole body, or a stream.

An :class:`Answer` holds what one call will say (the text derived from the question or
a scripted reply, the usage, a flag), and :func:`send_stream` sends it as Baidu's
server-sent events, with any stream fault applied on the way.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import Any

from mpt_async.testing import _replies
from mpt_async.testing._asgi import Receive, Send, drop_connection, dumps, respond, stall
from mpt_async.testing._config import Config
from mpt_async.testing._faults import Fault, FaultKind
from mpt_async.testing._script import ScriptedReply

__all__ = ["Answer", "derived_reply", "send_stream", "send_whole"]

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@functools.lru_cache(maxsize=4096)
def derived_reply(question: str) -> tuple[str, int]:
    """The answer derived from ``question`` and its token count."""
    text = _replies.reply_text(question)
    return text, _replies.count_tokens((text,))


class Answer:
    """What one chat call answers.

    Args:
        question: The last user message.
        prompt_tokens: The tokens counted in the messages.
        fault: The answer or stream fault taken for this call, if any.
        scripted: The scripted reply taken for this call, if any.
    """

    __slots__ = (
        "ban_round",
        "completion_tokens",
        "fault",
        "flagged",
        "head",
        "prompt_tokens",
        "sentences",
        "text",
    )

    def __init__(
        self,
        question: str,
        prompt_tokens: int,
        fault: Fault | None,
        scripted: ScriptedReply | None,
    ) -> None:
        self.fault = fault
        self.head = {
            "id": _replies.new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
        }
        self.sentences: tuple[str, ...] | None = None
        self.ban_round: int | None = None
        self.prompt_tokens = prompt_tokens
        if fault is not None and fault.kind is FaultKind.FLAG:
            self.text, self.completion_tokens = "", 0
            self.flagged, self.ban_round = True, fault.ban_round
        elif scripted is not None:
            self._script(scripted)
        else:
            self.text, self.completion_tokens = derived_reply(question)
            self.flagged = False

    def _script(self, scripted: ScriptedReply) -> None:
        self.text = scripted.text
        self.sentences = scripted.sentences if scripted.split else None
        counted = _replies.count_tokens(scripted.sentences)
        self.completion_tokens = (
            counted if scripted.completion_tokens is None else scripted.completion_tokens
        )
        if scripted.prompt_tokens is not None:
            self.prompt_tokens = scripted.prompt_tokens
        self.flagged = scripted.need_clear_history
        if self.flagged:
            self.ban_round = scripted.ban_round

    def usage(self, *, final: bool = True) -> dict[str, int]:
        """The ``usage`` object: the whole answer's, or a partial chunk's (no completion)."""
        completion = self.completion_tokens if final else 0
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def body(self) -> dict[str, Any]:
        """The whole (non-stream) reply."""
        reply = {**self.head, "result": self.text, "is_truncated": False}
        reply["need_clear_history"] = self.flagged
        if self.flagged:
            reply["ban_round"] = self.ban_round
        reply["usage"] = self.usage()
        return reply

    def pieces(self, stream_chunks: int) -> tuple[str, ...]:
        """The stream's chunks of text (a fault may ask for another count)."""
        kind = self.fault.kind if self.fault is not None else None
        if kind is FaultKind.FLAG:  # a flagged answer is one empty chunk
            return ("",)
        count = stream_chunks if self.sentences is None else len(self.sentences)
        if kind in (FaultKind.SKIP_ID, FaultKind.REPEAT_ID):  # they need two chunks to show
            count = max(2, count)
        if self.sentences is not None and len(self.sentences) == count:
            return self.sentences
        return _replies.split_text(self.text, count)


async def send_whole(send: Send, answer: Answer, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Send ``answer`` as one JSON body (or a truncated one, for a ``malformed`` fault)."""
    fault = answer.fault
    if fault is not None and fault.kind is FaultKind.MALFORMED:
        broken = dumps(answer.head)[:-1] + b',"result":"' + answer.text[:20].encode()
        await respond(send, 200, broken)
        return
    await respond(send, 200, dumps(answer.body()), headers=headers)


def _sentence_ids(kind: FaultKind | None, count: int) -> list[int]:
    if kind is FaultKind.SKIP_ID:
        return [0, *range(2, count + 1)]
    if kind is FaultKind.REPEAT_ID:
        return [0, *range(count - 1)]
    return list(range(count))


def _chunk(answer: Answer, sentence_id: int, piece: str, last: bool) -> bytes:
    kind = answer.fault.kind if answer.fault is not None else None
    chunk = {
        "id": answer.head["id"],
        "object": "chat.completion",
        "created": int(time.time()),
        "sentence_id": sentence_id,
        "is_end": last and kind is not FaultKind.NO_END,
        "is_truncated": False,
        "result": piece,
        "need_clear_history": answer.flagged,
    }
    if answer.flagged:
        chunk["ban_round"] = answer.ban_round
    chunk["usage"] = answer.usage(final=last)
    return b"data: " + dumps(chunk) + b"\n\n"


async def _fault_mid_stream(send: Send, receive: Receive, answer: Answer, fault: Fault) -> bool:
    """Apply a fault due at this point of the stream; ``True`` if the stream ends here."""
    if fault.kind is FaultKind.DROP_AFTER:
        await drop_connection(send)
        return True
    if fault.kind is FaultKind.MALFORMED:
        line = b"data: " + dumps(answer.head)[:-1] + b',"sentence_id":' + b"\n\n"
        await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
    await stall(receive, fault.seconds or 0.0)  # a stall mid-stream
    return False


async def send_stream(
    send: Send,
    receive: Receive,
    answer: Answer,
    config: Config,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send ``answer`` as server-sent events, one ``data:`` line per chunk."""
    fault = answer.fault
    pieces = answer.pieces(config.stream_chunks)
    count = len(pieces)
    ids = _sentence_ids(fault.kind if fault is not None else None, count)
    after = fault.after if fault is not None else None
    delay = config.chunk_delay
    start = [*_SSE_HEADERS, *headers] if headers else _SSE_HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": start})
    for index in range(count + 1):
        if index == after:
            assert fault is not None
            if await _fault_mid_stream(send, receive, answer, fault):
                return
        if index == count:
            break
        if index and delay:
            await asyncio.sleep(delay)
        line = _chunk(answer, ids[index], pieces[index], index == count - 1)
        await send({"type": "http.response.body", "body": line, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
