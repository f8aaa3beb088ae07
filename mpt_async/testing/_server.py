"""Running uvicorn in a daemon thread with its own asyncio event loop.

The server's loop is private to its thread, so tests running on asyncio, on trio, or
with no event loop at all talk to it the same way: over loopback TCP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["ServerThread", "check_loopback"]

_START_TIMEOUT = 10.0
_STOP_GRACE = 5.0


def check_loopback(host: str) -> None:
    """Refuse to listen anywhere but loopback: the emulator has no real security.

    Args:
        host: The address to listen on.

    Raises:
        ValueError: ``host`` is not a loopback address.
    """
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        msg = f"the emulator listens on loopback only (e.g. 127.0.0.1), not {host!r}"
        raise ValueError(msg)


class ServerThread:
    """One uvicorn server on a socket bound by the caller, served from a thread.

    Args:
        app: The ASGI application.
        host: A loopback address.
        port: The port, or 0 for a free one.
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        check_loopback(host)
        self._app = app
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (known once started)."""
        if self._socket is None:
            msg = "the server is not running"
            raise RuntimeError(msg)
        return int(self._socket.getsockname()[1])

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def open_connections(self) -> int:
        """The number of TCP connections open right now."""
        server = self._server
        return 0 if server is None else len(server.server_state.connections)

    def start(self) -> None:
        """Bind, start serving in a daemon thread, and return once it is listening.

        Raises:
            RuntimeError: Already started, or the server failed to start in time.
            OSError: The address could not be bound.
        """
        if self._thread is not None:
            msg = "the server is already started"
            raise RuntimeError(msg)
        # Bind here, in the caller's thread: a busy port raises right away, and port 0
        # resolves to a real port before the thread even starts.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
        # the listening socket says TCP, and without it every answer waits ~40 ms for a
        # delayed ACK (uvicorn writes headers and body separately).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        config = uvicorn.Config(
            self._app,
            http="auto",  # httptools when installed, else h11
            ws="none",
            lifespan="off",
            log_level="warning",
            log_config=None,  # leave the host program's logging alone
            access_log=False,
            timeout_keep_alive=15,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"mpt-async-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                msg = "the emulator's server did not start"
                raise RuntimeError(msg) from self._error
            time.sleep(0.002)

    def _run(self) -> None:
        assert self._server is not None
        assert self._socket is not None
        try:
            # uvicorn installs no signal handlers outside the main thread.
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(_STOP_GRACE)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join()
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None
        self._socket = None
