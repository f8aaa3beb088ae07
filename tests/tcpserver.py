"""A loopback TCP server for the byte-level fakes: a thread per connection, stopped at close.

:class:`~tests.hostile.HostileServer` (HTTP) and :class:`~tests.resp.LyingRedis` (RESP) build
on it; each says how it serves one connection.
"""

from __future__ import annotations

import socket
import threading


class LoopbackServer:
    """Accepts connections on a free 127.0.0.1 port, each served by ``_serve`` in a thread."""

    def __init__(self) -> None:
        #: Connections accepted.
        self.accepted = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def wait(self, seconds: float) -> None:
        """Pause a script (cut short when the server stops)."""
        self._stop.wait(seconds)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop serving and wait for the connection threads."""
        self._stop.set()
        self._sock.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
