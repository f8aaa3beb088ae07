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
import warnings
from typing import TYPE_CHECKING, Any

from mpt_async._signals import sigint_blocked

if TYPE_CHECKING:
    import uvicorn

__all__ = ["DEFAULT_IDLE_TIMEOUT", "ServerThread", "check_host", "is_loopback"]

#: Seconds a connection may wait for (the rest of) its next request.
DEFAULT_IDLE_TIMEOUT = 15.0
_START_TIMEOUT = 10.0
_STOP_GRACE = 5.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: object) -> None:
    """Warn about listening anywhere but loopback: the emulator has no real security.

    Args:
        host: The address to listen on.

    Raises:
        TypeError: ``host`` is not a string.
    """
    if not isinstance(host, str):
        msg = "host must be a string"
        raise TypeError(msg)
    if not is_loopback(host):
        msg = (
            f"the emulator listens on {host!r}, beyond loopback: anyone who can reach it"
            " may use its credentials and controls"
        )
        warnings.warn(msg, UserWarning, stacklevel=3)


class _RequestDeadline:
    """Mixed into uvicorn's HTTP protocol: close a connection whose next request is late.

    The deadline starts when the connection opens and after each response, and holds
    until the request (head and body) has fully arrived. Unlike uvicorn's keep-alive
    timer, bytes trickling in do not reset it, so neither an idle connection nor a
    half-sent request is kept forever.
    """

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    timeout_keep_alive: float
    _deadline: asyncio.TimerHandle | None = None

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.timeout_keep_alive, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        cycle = self.cycle
        waiting = cycle is None or cycle.response_complete or cycle.more_body
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)  # type: ignore[misc]


def _protocol() -> type[asyncio.Protocol]:
    """The fastest HTTP protocol of uvicorn (httptools, else h11), with a deadline."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - httptools comes with the emulator extra
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    return type("EmulatorHTTPProtocol", (_RequestDeadline, base), {})


class ServerThread:
    """One uvicorn server on a socket bound by the caller, served from a thread.

    Args:
        app: The ASGI application.
        host: The address (see :func:`check_host`).
        port: The port, or 0 for a free one.
        idle_timeout: Seconds a connection may wait for (the rest of) its next request.
    """

    def __init__(
        self, app: Any, host: str, port: int, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ) -> None:
        self._idle_timeout = idle_timeout
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
        import uvicorn  # the emulator extra, needed only once a server starts

        config = uvicorn.Config(
            self._app,
            http=_protocol(),
            ws="none",
            lifespan="off",
            log_level="warning",
            log_config=None,  # leave the host program's logging alone
            access_log=False,
            timeout_keep_alive=self._idle_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"mpt-async-emulator-{self.port}", daemon=True
        )
        with sigint_blocked():  # Ctrl-C is for the host program's main thread
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
