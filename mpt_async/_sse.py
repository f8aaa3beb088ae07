"""Splitting a ``text/event-stream`` body into its ``data:`` payloads, without decoding text.

Payloads stay bytes: ``json.loads`` takes bytes, and skipping the str round trip is what
keeps per-chunk cost close to a bare line loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

__all__ = ["BadLine", "EventReader"]

_IGNORED_FIELDS = (b":", b"event:", b"id:", b"retry:")


class BadLine(ValueError):
    """A line that is neither a ``data:`` line, an SSE field, nor blank."""


class EventReader:
    """Yields each ``data:`` payload of an event stream, in order, as bytes.

    Args:
        chunks: The response body as it arrives.
    """

    __slots__ = ("_buffer", "_chunks", "_eof", "_ready")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._ready: deque[bytes] = deque()
        self._eof = False

    async def next_payload(self) -> bytes | None:
        """The next payload, or ``None`` at the end of the body.

        Raises:
            BadLine: For a line that is not part of an event stream.
        """
        ready = self._ready
        while not ready:
            if self._eof:
                return None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._eof = True
                tail, self._buffer = self._buffer, b""
                self._take(tail)
                continue
            lines = (self._buffer + chunk).split(b"\n") if self._buffer else chunk.split(b"\n")
            self._buffer = lines.pop()
            for line in lines:
                if line[:5] == b"data:":  # the common case, inline: it runs per sentence
                    ready.append(line[5:].strip())
                elif line:
                    self._take(line)
        return ready.popleft()

    def _take(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            self._ready.append(line[5:].strip())
        elif line.strip() and not line.startswith(_IGNORED_FIELDS):
            raise BadLine(line[:80].decode(errors="replace"))
