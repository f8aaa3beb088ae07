"""A Redis that lies: a byte-level RESP server on loopback, answering what a test chooses.

Each connection is served by a thread, so the same server serves clients on asyncio and
on trio. Every command (an array of bulk strings, as clients send them) is read, recorded,
and handed to the test's script, which returns the raw bytes to answer with, an iterator of
pieces (sent one by one for as long as the client reads: :func:`endless`), ``None`` to
stay silent, or :data:`HANG_UP` to close the connection. A script that wants a slow answer
calls :meth:`LyingRedis.wait` first.

Commands the script does not care about get :func:`honest` answers: ``HELLO`` a RESP3 map
of a standalone server, ``INFO`` a server that is not in a cluster, anything else ``+OK``.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from .tcpserver import LoopbackServer

__all__ = [
    "HANG_UP",
    "LyingRedis",
    "bulk",
    "endless",
    "honest",
    "lying_redis",
    "scripts_answer",
]

#: What a script returns to close the connection.
HANG_UP = b"\0hang up"

Command = list[bytes]
Script = Callable[[Command], "bytes | Iterable[bytes] | None"]


def bulk(value: bytes | str) -> bytes:
    """``value`` as a RESP bulk string."""
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def endless(head: bytes = b"$2000000000\r\n") -> Iterator[bytes]:
    """``head``, then 1 MiB pieces of a reply that never ends (a 2 GB bulk string)."""
    return itertools.chain([head], itertools.repeat(b"x" * (1 << 20)))


def honest(command: Command) -> bytes:
    """What a plain Redis 7 would answer, near enough for a client to get going."""
    name = command[0].upper()
    if name == b"HELLO":
        fields = [
            (b"server", bulk("redis")),
            (b"version", bulk("7.0.0")),
            (b"proto", b":3\r\n"),
            (b"id", b":7\r\n"),
            (b"mode", bulk("standalone")),
            (b"role", bulk("master")),
            (b"modules", b"*0\r\n"),
        ]
        return b"%%%d\r\n" % len(fields) + b"".join(bulk(k) + v for k, v in fields)
    if name == b"INFO":
        return bulk("# Cluster\r\ncluster_enabled:0\r\n")
    if name == b"PING":
        return b"+PONG\r\n"
    if name in (b"GET", b"EVALSHA", b"EVAL"):
        return b"_\r\n"
    return b"+OK\r\n"


def scripts_answer(reply: bytes) -> Script:
    """A script that answers every Lua script run (EVALSHA, EVAL) with ``reply``.

    SCRIPT (LOAD) gets a made-up digest; every other command an :func:`honest` answer.
    """

    def script(command: Command) -> bytes:
        if command[0].upper() in (b"EVALSHA", b"EVAL"):
            return reply
        if command[0].upper() == b"SCRIPT":
            return bulk(b"0" * 40)
        return honest(command)

    return script


class LyingRedis(LoopbackServer):
    """Serves every connection with ``script``; see the module's docstring."""

    def __init__(self, script: Script = honest) -> None:
        self.script = script
        #: Every command received, in order, across connections.
        self.commands: list[Command] = []
        #: How many bytes of answers the clients took (the socket accepted).
        self.sent = 0
        super().__init__()

    @property
    def url(self) -> str:
        """The server's redis:// URL."""
        return f"redis://127.0.0.1:{self.port}"

    def names(self) -> list[bytes]:
        """The names of the commands received, upper case."""
        return [command[0].upper() for command in list(self.commands)]

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            buffer = bytearray()
            while not self._stop.is_set():
                command = _take_command(buffer)
                if command is None:
                    try:
                        piece = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not piece:
                        return
                    buffer += piece
                    continue
                self.commands.append(command)
                answer = self.script(command)
                if answer == HANG_UP:
                    return
                pieces = [answer] if isinstance(answer, bytes) else answer or ()
                try:
                    for piece in pieces:
                        if self._stop.is_set():
                            return
                        conn.sendall(piece)
                        self.sent += len(piece)
                except OSError:
                    return


def _take_command(buffer: bytearray) -> Command | None:
    """Take one whole command (``*N`` then N bulk strings) off ``buffer``, if there is one."""
    if not buffer.startswith(b"*"):
        if b"\r\n" not in buffer:
            return None
        line, _, rest = bytes(buffer).partition(b"\r\n")  # an inline command
        buffer[:] = rest
        return line.split()
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, at, parts = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(buffer[at + 1 : end])
        start = end + 2
        if len(buffer) < start + size + 2:
            return None
        parts.append(bytes(buffer[start : start + size]))
        at = start + size + 2
    del buffer[:at]
    return parts


@contextmanager
def lying_redis(script: Script = honest) -> Iterator[LyingRedis]:
    """A :class:`LyingRedis` for the block."""
    server = LyingRedis(script)
    try:
        yield server
    finally:
        server.close()
