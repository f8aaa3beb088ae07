"""The :class:`Emulator`: a local stand-in for Baidu's Qianfan servers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from mpt_async.testing._app import CHAT_PREFIX, TOKEN_PATH, EmulatorApp
from mpt_async.testing._config import Config, check_int, check_number
from mpt_async.testing._faults import Fault
from mpt_async.testing._records import RECORD_BYTES, EmulatorStats, RecordedRequest
from mpt_async.testing._script import ScriptedReply
from mpt_async.testing._server import DEFAULT_IDLE_TIMEOUT, ServerThread, check_host
from mpt_async.testing._state import EmulatorState

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "DEFAULT_V2_API_KEY",
    "Emulator",
]

#: API Key accepted by the token endpoint when none is given or set in ``QIANFAN_AK``.
DEFAULT_API_KEY = "emulator-api-key"
#: The v2 API key the emulator accepts (else ``QIANFAN_API_KEY``), shaped like Baidu's.
DEFAULT_V2_API_KEY = "bce-v3/ALTAK-emulator/0123456789abcdef0123456789abcdef01234567"
#: Secret Key paired with :data:`DEFAULT_API_KEY` (else ``QIANFAN_SK``).
DEFAULT_SECRET_KEY = "emulator-secret-key"
#: IAM access key accepted in signatures (else ``QIANFAN_ACCESS_KEY``).
DEFAULT_ACCESS_KEY = "emulator-access-key"
#: IAM secret key paired with :data:`DEFAULT_ACCESS_KEY` (else ``QIANFAN_SECRET_KEY``).
DEFAULT_SECRET_ACCESS_KEY = "emulator-secret-access-key"


def _pick(explicit: str | None, env_name: str, default: str) -> str:
    if explicit is not None:
        return explicit
    return os.environ.get(env_name) or default


class Emulator:
    """A local HTTP server that answers like Qianfan's MPT-30B-instruct chat API.

    It serves the token endpoint, the chat endpoint (token or AK/SK auth, strict body
    validation, deterministic answers, streaming) and ``/_emulator/`` controls, on
    loopback, from a daemon thread with its own event loop. Use it as a context
    manager, or call :meth:`start` and :meth:`stop`.

    Credentials come from the arguments, else from ``QIANFAN_AK``/``QIANFAN_SK`` and
    ``QIANFAN_ACCESS_KEY``/``QIANFAN_SECRET_KEY`` when set, else from the
    ``DEFAULT_*`` constants.

    Attributes:
        host: The address listened on.
        api_key: The API Key the token endpoint accepts.
        secret_key: Its Secret Key.
        access_key: The IAM access key accepted in ``bce-auth-v1`` signatures.
        secret_access_key: Its secret key.
        v2_api_key: The v2 API key accepted as ``Authorization: Bearer`` on
            ``/v2/chat/completions`` (bearer tokens from the IAM route are accepted too).

    Args:
        host: The address to listen on: loopback by default; any other address (for a
            container, say) works with a warning, since the emulator has no security.
        port: The port; 0 picks a free one.
        api_key: The API Key the token endpoint accepts.
        secret_key: Its Secret Key.
        access_key: The IAM access key accepted in ``bce-auth-v1`` signatures.
        secret_access_key: Its secret key.
        v2_api_key: The v2 API key accepted on ``/v2/chat/completions`` (else
            ``QIANFAN_API_KEY``, else :data:`DEFAULT_V2_API_KEY`).
        token_ttl: Lifetime of issued access tokens, in seconds (real clock).
        stream_chunks: Chunks per streamed answer (changeable while running).
        chunk_delay: Seconds between two stream chunks (changeable while running).
        endpoints: The endpoint names served; ``None`` serves any name, others get
            error 336005.
        max_records: How many recent requests :attr:`requests` keeps (at most 1,000,000).
        max_record_bytes: The memory budget of those requests: their bodies count twice
            (the bytes and the decoded JSON) plus their headers; the oldest go first.
        idle_timeout: Seconds a connection may wait for (the rest of) its next request
            before the emulator closes it: idle keep-alive connections and half-sent
            requests alike.
        qps: Chat calls accepted per second (a bucket of one second's worth, refilled
            continuously); beyond it, error 18. ``None``: no limit.
        rpm: Chat calls accepted per ``rate_window``; beyond it, error 336501.
        tpm: Tokens (question and answer) accepted per ``rate_window``; beyond it, 336502.
        rate_window: The RPM/TPM window in seconds (a minute; shorter in tests).

    With ``rpm`` or ``tpm`` set, chat replies (and rate-limit refusals) carry
    ``X-Ratelimit-Limit-Requests``/``-Tokens`` and ``X-Ratelimit-Remaining-Requests``/
    ``-Tokens``, like Qianfan's. Limits change at run time with :meth:`set_rate_limits`.

    Raises:
        ValueError: A setting out of range.
    """

    host: str
    api_key: str
    secret_key: str
    access_key: str
    secret_access_key: str
    v2_api_key: str

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        secret_key: str | None = None,
        access_key: str | None = None,
        secret_access_key: str | None = None,
        v2_api_key: str | None = None,
        token_ttl: float = 2592000,
        stream_chunks: int = 3,
        chunk_delay: float = 0.0,
        endpoints: Iterable[str] | None = None,
        max_records: int = 10_000,
        max_record_bytes: int = RECORD_BYTES,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        qps: float | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        rate_window: float = 60.0,
    ) -> None:
        check_host(host)
        self.host = host
        self.api_key = _pick(api_key, "QIANFAN_AK", DEFAULT_API_KEY)
        self.secret_key = _pick(secret_key, "QIANFAN_SK", DEFAULT_SECRET_KEY)
        self.access_key = _pick(access_key, "QIANFAN_ACCESS_KEY", DEFAULT_ACCESS_KEY)
        self.secret_access_key = _pick(
            secret_access_key, "QIANFAN_SECRET_KEY", DEFAULT_SECRET_ACCESS_KEY
        )
        self.v2_api_key = _pick(v2_api_key, "QIANFAN_API_KEY", DEFAULT_V2_API_KEY)
        self._requested_port = check_int("port", port, 0, 65535)
        self._idle_timeout = check_number("idle_timeout", idle_timeout, 0.001, 86400)
        self._port: int | None = None
        self._state = EmulatorState(
            api_keys={self.api_key: self.secret_key},
            access_keys={self.access_key: self.secret_access_key},
            token_ttl=token_ttl,
            # In Config's order: stream_chunks, chunk_delay, qps, rpm, tpm, rate_window.
            config=Config(stream_chunks, chunk_delay, qps, rpm, tpm, rate_window),
            endpoints=endpoints,
            max_records=check_int("max_records", max_records, 0, 1_000_000),
            record_bytes=check_int("max_record_bytes", max_record_bytes, 0, 2**40),
        )
        self._state.bearer_keys.add(self.v2_api_key)
        self._server: ServerThread | None = None

    def __repr__(self) -> str:
        # No credentials here: reprs end up in logs and test reports.
        where = self.base_url if self._port is not None else "not running"
        return f"<Emulator {where}>"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving; returns once the server accepts connections.

        Returns:
            The emulator itself.

        Raises:
            RuntimeError: Already running, or the server did not start.
            OSError: The port could not be bound.
        """
        if self._server is not None:
            msg = "the emulator is already running"
            raise RuntimeError(msg)
        server = ServerThread(
            EmulatorApp(self._state), self.host, self._requested_port, self._idle_timeout
        )
        server.start()
        self._state.open_connections = server.open_connections
        self._server = server
        self._port = server.port
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        self._state.open_connections = lambda: 0
        self._port = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the emulator is serving."""
        return self._server is not None and self._server.running

    @property
    def port(self) -> int:
        """The port listened on.

        Raises:
            RuntimeError: The emulator is not running.
        """
        if self._port is None:
            msg = "the emulator is not running; call start() or use 'with Emulator()'"
            raise RuntimeError(msg)
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, the value for ``QIANFAN_BASE_URL``.

        Raises:
            RuntimeError: The emulator is not running.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def chat_url(self, endpoint: str = "mpt-30b-instruct") -> str:
        """The full URL of the chat endpoint ``endpoint``.

        Args:
            endpoint: The endpoint (service) name.

        Raises:
            RuntimeError: The emulator is not running.
        """
        return self.base_url + CHAT_PREFIX + endpoint

    @property
    def token_url(self) -> str:
        """The full URL of the token endpoint (parameters not included).

        Raises:
            RuntimeError: The emulator is not running.
        """
        return self.base_url + TOKEN_PATH

    def env(self) -> dict[str, str]:
        """Environment variables that point the qianfan SDK (or mpt_async) here.

        Returns:
            ``QIANFAN_BASE_URL``, ``QIANFAN_CONSOLE_API_BASE_URL`` and both credential
            pairs. The values include the secret keys: pass them to a child process,
            do not log them.

        Raises:
            RuntimeError: The emulator is not running.
        """
        return {
            "QIANFAN_BASE_URL": self.base_url,
            "QIANFAN_CONSOLE_API_BASE_URL": self.base_url,
            "QIANFAN_AK": self.api_key,
            "QIANFAN_SK": self.secret_key,
            "QIANFAN_ACCESS_KEY": self.access_key,
            "QIANFAN_SECRET_KEY": self.secret_access_key,
        }

    # -- observing -------------------------------------------------------------------

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters since start or the last :meth:`reset`."""
        return self._state.stats()

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received (oldest first, at most ``max_records``)."""
        return self._state.requests()

    @property
    def stream_chunks(self) -> int:
        """Chunks per streamed answer."""
        return self._state.config.stream_chunks

    @property
    def chunk_delay(self) -> float:
        """Seconds between two stream chunks."""
        return self._state.config.chunk_delay

    @property
    def qps(self) -> float | None:
        """Chat calls accepted per second, or ``None``."""
        return self._state.config.qps

    @property
    def rpm(self) -> int | None:
        """Chat calls accepted per rate window, or ``None``."""
        return self._state.config.rpm

    @property
    def tpm(self) -> int | None:
        """Tokens accepted per rate window, or ``None``."""
        return self._state.config.tpm

    @property
    def token_ttl(self) -> float:
        """Lifetime of issued access tokens, in seconds."""
        return self._state.token_ttl

    # -- steering --------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Queue a fault for the next ``times`` requests it matches (FIFO).

        Args:
            fault: Built with ``Fault.error()``, ``Fault.drop()``, ...
            times: How many matching requests it hits.

        Raises:
            TypeError: ``fault`` is not a :class:`Fault`.
            ValueError: ``times`` is not a positive int.
        """
        self._state.inject(fault, times)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._state.clear_faults()

    @property
    def pending_faults(self) -> list[tuple[Fault, int]]:
        """The queued faults, oldest first, each with how many requests it still hits."""
        return self._state.pending_faults()

    def add_reply(
        self,
        reply: str | Sequence[str],
        *,
        usage: Mapping[str, int] | None = None,
        need_clear_history: bool = False,
        ban_round: int | None = None,
        times: int = 1,
    ) -> None:
        """Queue the answer of the next ``times`` accepted chat calls (FIFO).

        A call is accepted once it passes auth, the body rules and the rate limits;
        faults still apply (a ``flag`` fault wins over the reply). Without a scripted
        reply, the answer is derived from the question.

        Args:
            reply: The answer. One string is the whole answer (a stream cuts it into
                ``stream_chunks`` pieces); a list of strings is streamed one per chunk,
                and joined for a non-stream call.
            usage: ``prompt_tokens`` and/or ``completion_tokens`` to report instead of
                the counted ones.
            need_clear_history: Flag the answer, like Baidu's moderation does.
            ban_round: The flagged round (with ``need_clear_history``; default -1).
            times: How many calls get this answer.

        Raises:
            ValueError: A bad or oversized argument (nothing is queued then).
        """
        built = ScriptedReply.build(
            reply, usage=usage, need_clear_history=need_clear_history, ban_round=ban_round
        )
        self._state.add_reply(built, times)

    def clear_replies(self) -> None:
        """Drop every queued scripted reply."""
        self._state.clear_replies()

    def issue_token(self, ttl: float | None = None, *, bearer: bool = False) -> str:
        """Mint a valid access token without calling the token endpoint.

        Args:
            ttl: Lifetime in seconds (negative: already expired); ``None`` uses
                ``token_ttl``.
            bearer: Mint an IAM bearer token (``bce-v3/...``) for the v2 interface rather
                than a v1 access token; each is refused on the other interface.

        Raises:
            ValueError: ``ttl`` is not a number within ten years either way.
        """
        return self._state.issue_token(ttl, bearer=bearer)

    def revoke_tokens(self) -> None:
        """Invalidate every current token: chat answers error 110 for them."""
        self._state.revoke_tokens()

    def expire_tokens(self) -> None:
        """Expire every current token: chat answers error 111 for them."""
        self._state.expire_tokens()

    def set_stream_chunks(self, n: int) -> None:
        """Change how many chunks a streamed answer has.

        Args:
            n: A positive number of chunks.

        Raises:
            ValueError: ``n`` is not a positive int.
        """
        self._state.configure(stream_chunks=n)

    def set_chunk_delay(self, seconds: float) -> None:
        """Change the pause between two stream chunks.

        Args:
            seconds: A non-negative delay.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        self._state.configure(chunk_delay=seconds)

    def set_rate_limits(
        self,
        *,
        qps: float | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        rate_window: float = 60.0,
    ) -> None:
        """Replace the rate limits (no arguments lifts them all); calls counted so far stay.

        Args:
            qps: Chat calls per second, or ``None``.
            rpm: Chat calls per ``rate_window``, or ``None``.
            tpm: Tokens per ``rate_window``, or ``None``.
            rate_window: The RPM/TPM window in seconds.

        Raises:
            ValueError: A limit that is not positive (``rpm``, ``tpm``: not a positive int).
        """
        rates = {"qps": qps, "rpm": rpm, "tpm": tpm, "rate_window": rate_window}
        self._state.configure(rates=rates)

    def reset(self) -> None:
        """Forget faults, replies, counters, records and tokens; restore the start settings."""
        self._state.reset()
