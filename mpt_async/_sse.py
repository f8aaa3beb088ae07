"""Splitting a ``text/event-stream`` body into its ``data:`` payloads, without decoding text.

Payloads stay bytes: ``json.loads`` takes bytes, and skipping the str round trip is what
keeps per-chunk cost close to a bare line loop. A line is held until its end arrives, in
pieces joined once (a long line costs linear time); once more than :data:`MAX_LINE_BYTES` of
one line are held, the stream is refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

__all__ = ["MAX_LINE_BYTES", "BadLine", "EventReader"]

#: The longest line a stream may send (a chunk's JSON is a few hundred bytes).
MAX_LINE_BYTES = 1024 * 1024

_IGNORED_FIELDS = (b":", b"event:", b"id:", b"retry:")


class BadLine(ValueError):
    """A line that is neither a ``data:`` line, an SSE field, nor blank, or one too long."""


class EventReader:
    """Yields each ``data:`` payload of an event stream, in order, as bytes.

    Args:
        chunks: The response body as it arrives.
        bare_json: Also take a line that is a bare JSON object as a payload.
    """

    __slots__ = ("_bare_json", "_chunks", "_eof", "_held", "_pieces", "ready")

    def __init__(self, chunks: AsyncIterator[bytes], *, bare_json: bool = False) -> None:
        self._chunks = chunks
        #: Take a line that is a bare JSON object as a payload (v2's undocumented errors).
        self._bare_json = bare_json
        #: The start of a line whose end has not arrived yet, in pieces.
        self._pieces: list[bytes] = []
        self._held = 0
        #: Payloads received and not yet taken.
        self.ready: deque[bytes] = deque()
        self._eof = False

    async def next_payload(self) -> bytes | None:
        """The next payload, or ``None`` at the end of the body.

        Raises:
            BadLine: For a line that is not part of an event stream.
        """
        ready = self.ready
        while not ready:
            if not await self.fill():
                return None
        return ready.popleft()

    async def fill(self) -> bool:
        """Read what the body has next into :attr:`ready`; ``False`` once it has ended.

        Raises:
            BadLine: For a line that is not part of an event stream, or too long.
        """
        if self._eof:
            return bool(self.ready)
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._eof = True
            tail, self._pieces, self._held = b"".join(self._pieces), [], 0
            self._take(tail)
            return bool(self.ready)
        if b"\n" not in chunk:
            self._hold(chunk)
            return True
        if self._pieces:
            chunk = b"".join(self._pieces) + chunk
            self._pieces, self._held = [], 0
        lines = chunk.split(b"\n")
        if tail := lines.pop():  # a line whose end is still to come (rarely)
            self._hold(tail)
        ready = self.ready
        for line in lines:
            if line[:5] == b"data:":  # the common case, inline: it runs per sentence
                ready.append(line[5:].strip())
            elif line:
                self._take(line)
        return True

    def _hold(self, piece: bytes) -> None:
        if piece:
            self._held += len(piece)
            if self._held > MAX_LINE_BYTES:
                raise BadLine(f"a line longer than {MAX_LINE_BYTES} bytes")
            self._pieces.append(piece)

    def _take(self, line: bytes) -> None:
        if len(line) > MAX_LINE_BYTES:
            raise BadLine(f"a line longer than {MAX_LINE_BYTES} bytes")
        if line.startswith(b"data:"):
            self.ready.append(line[5:].strip())
        elif self._bare_json and line.lstrip().startswith(b"{"):
            self.ready.append(line.strip())
        elif line.strip() and not line.startswith(_IGNORED_FIELDS):
            raise BadLine(line[:80].decode(errors="replace"))
