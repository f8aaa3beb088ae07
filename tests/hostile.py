"""A byte-level hostile server on loopback: it sends exactly the bytes a test chooses.

Each connection is served by a thread: the request (head and ``Content-Length`` body) is
read, recorded, and handed to the test's script, which writes raw bytes (and may pause)
through a :class:`Wire`; with ``keep_alive``, the next request on the connection is read and
scripted in turn, until the client hangs up. Threads, not an event loop, so the same server serves clients on
asyncio and trio alike.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .tcpserver import LoopbackServer

__all__ = [
    "ANSWER",
    "SECRET_KEY",
    "TOKEN",
    "HostileServer",
    "Wire",
    "chunk_event",
    "gzip_bomb",
    "hostile",
    "http_head",
    "json_reply",
]

#: The credentials the tests' clients use; none of them may ever show in an error.
TOKEN = "tok-SECRET-0123456789abcdef"
SECRET_KEY = "sk-SECRET-fedcba9876543210"
#: A well-formed whole answer.
ANSWER: dict[str, Any] = {
    "id": "as-1",
    "object": "chat.completion",
    "created": 1,
    "result": "x",
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Wire:
    """One connection, as the script sees it."""

    def __init__(self, conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        self.conn = conn
        #: The request as received (head and body).
        self.request = request
        self._stop = stop

    @property
    def target(self) -> str:
        """The request's target (path and query), as sent."""
        return self.request.split(b" ", 2)[1].decode()

    def send(self, data: bytes) -> bool:
        """Send ``data``; ``False`` once the client has gone or the server is stopping."""
        if self._stop.is_set():
            return False
        try:
            self.conn.sendall(data)
        except OSError:
            return False
        return True

    def trickle(self, piece: bytes, every: float, limit: float = 30.0) -> None:
        """Send ``piece`` every ``every`` seconds until the client goes (at most ``limit``)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.send(piece):
            if self._stop.wait(every):
                return

    def wait(self, seconds: float) -> None:
        """Pause (cut short when the server stops)."""
        self._stop.wait(seconds)


Script = Callable[[Wire], None]


def http_head(status: str = "200 OK", **headers: str | int) -> bytes:
    """A response head; ``content_type="x"`` becomes ``Content-Type: x``."""
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{name.replace('_', '-').title()}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_reply(data: Any, status: str = "200 OK", **headers: str | int) -> bytes:
    """A whole JSON response."""
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return (
        http_head(status, content_type="application/json", content_length=len(body), **headers)
        + body
    )


def chunk_event(sentence_id: int, *, is_end: bool = False, text: str = "x") -> bytes:
    """One well-formed SSE event of a stream."""
    chunk = {
        "id": "as-1",
        "object": "chat.completion",
        "created": 1,
        "sentence_id": sentence_id,
        "is_end": is_end,
        "is_truncated": False,
        "result": text,
        "need_clear_history": False,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@functools.cache
def gzip_bomb(mib: int = 1024, piece: bytes = b" ") -> bytes:
    """A gzip body of about ``mib`` KiB that expands to ``mib`` MiB of ``piece``.

    Each MiB is compressed after a full flush, so its bytes repeat: 1 GiB costs milliseconds
    to build. The stream has no end; a client must refuse it long before.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = piece * (1 << 20)
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head + again * (mib - 1)


class HostileServer(LoopbackServer):
    """Serves every connection with ``script``; ``keep_alive`` serves each one many requests."""

    def __init__(self, script: Script, *, keep_alive: bool = False) -> None:
        self.script = script
        self.keep_alive = keep_alive
        self.requests: list[bytes] = []
        super().__init__()

    @property
    def url(self) -> str:
        """The base URL to give a client."""
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                while not self._stop.is_set():
                    request = _read_request(conn)
                    if request is None:
                        return
                    self.requests.append(request)
                    self.script(Wire(conn, request, self._stop))
                    if not self.keep_alive:
                        return  # one reply per connection: the script decides what it is
            except OSError:
                return


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            return None
        body += piece
    return head + b"\r\n\r\n" + body


@contextmanager
def hostile(script: Script, *, keep_alive: bool = False) -> Iterator[HostileServer]:
    """A :class:`HostileServer` for the block."""
    server = HostileServer(script, keep_alive=keep_alive)
    try:
        yield server
    finally:
        server.close()
