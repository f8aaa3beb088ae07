"""The emulator's mutable state, shared by the server thread and the test thread.

Everything goes through one lock, held only for a few dictionary operations, so the
ASGI app (on the server's event loop) and the tests (on any thread) never see a
half-updated counter, token table or fault queue.
"""

from __future__ import annotations

import collections
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from mpt_async.testing import _errors
from mpt_async.testing._faults import Fault, Phase, Target
from mpt_async.testing._quota import Quota, RateHeaders

__all__ = ["Config", "EmulatorState", "EmulatorStats", "RecordedRequest"]

_SECRET_QUERY = frozenset({"access_token", "client_secret"})
_SECRET_HEADERS = frozenset({"authorization"})
_REDACTED = "<redacted>"


def _redact(pairs: Mapping[str, str], secret: frozenset[str]) -> dict[str, str]:
    return {k: _REDACTED if k.lower() in secret else v for k, v in pairs.items()}


@attrs.frozen
class EmulatorStats:
    """A snapshot of the emulator's counters (since start or the last reset).

    Attributes:
        token_requests: Requests to the token endpoint.
        chat_requests: Requests to the chat endpoint, whatever their outcome.
        stream_requests: Chat requests answered with a stream.
        error_responses: Requests answered with an API error (``error_code`` or
            ``error`` body), injected or not.
        faults_fired: Injected faults consumed.
        tokens_issued: Access tokens minted (by the endpoint or ``issue_token``).
        connections_seen: Distinct client connections that sent a request.
        open_connections: TCP connections open right now.
        pending_faults: Injected faults not yet consumed (counting ``times``).
    """

    token_requests: int = 0
    chat_requests: int = 0
    stream_requests: int = 0
    error_responses: int = 0
    faults_fired: int = 0
    tokens_issued: int = 0
    connections_seen: int = 0
    open_connections: int = 0
    pending_faults: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict."""
        return attrs.asdict(self)


def _redacted_repr(self: RecordedRequest) -> str:
    query = _redact(self.query, _SECRET_QUERY)
    headers = _redact(self.headers, _SECRET_HEADERS)
    return (
        f"RecordedRequest(kind={self.kind!r}, method={self.method!r}, path={self.path!r},"
        f" query={query!r}, headers={headers!r})"
    )


@attrs.frozen(repr=False)
class RecordedRequest:
    """One request as the emulator received it (the control endpoints are not recorded).

    Attributes:
        kind: ``"chat"``, ``"token"``, ``"console"`` or ``"other"``.
        method: HTTP method.
        path: The URL path, percent-decoded.
        query: The query parameters (the last value wins for repeated names).
        headers: The headers, names lower-case.
        body: The body decoded as JSON, or the raw bytes when it is not JSON.
        raw_body: The body as received.
        time: When it arrived, seconds since the epoch.
    """

    kind: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    time: float

    __repr__ = _redacted_repr

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, with secrets (tokens, client secrets, signatures) redacted."""
        body = self.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "query": _redact(self.query, _SECRET_QUERY),
            "headers": _redact(self.headers, _SECRET_HEADERS),
            "body": body,
            "time": self.time,
        }


#: The rate settings, as named in ``Emulator(...)`` and ``/_emulator/config``.
RATE_KEYS = ("qps", "rpm", "tpm", "rate_window")


@attrs.define
class Config:
    """The settings that tests may change while the emulator runs."""

    stream_chunks: int
    chunk_delay: float
    qps: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    rate_window: float = 60.0

    def __attrs_post_init__(self) -> None:
        check_stream_chunks(self.stream_chunks)
        check_chunk_delay(self.chunk_delay)
        check_rates({key: getattr(self, key) for key in RATE_KEYS})


def _positive_number(name: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"{name} must be a positive number"
        raise ValueError(msg)


def check_rates(rates: Mapping[str, object]) -> None:
    """Refuse rate settings out of range (``None`` lifts a limit; ``rate_window`` needs a value).

    Args:
        rates: Some of ``qps``, ``rpm``, ``tpm`` and ``rate_window``.

    Raises:
        ValueError: An unknown key, a non-positive limit, or a non-integer ``rpm``/``tpm``.
    """
    for key, value in rates.items():
        if key not in RATE_KEYS:
            msg = f"unknown rate setting {key!r}"
            raise ValueError(msg)
        if key == "rate_window" or value is not None:
            _positive_number(key, value)
        if key in ("rpm", "tpm") and value is not None and not isinstance(value, int):
            msg = f"{key} must be a positive integer"
            raise ValueError(msg)


def check_stream_chunks(value: int) -> None:
    """Refuse a chunk count that is not a positive int.

    Args:
        value: The proposed ``stream_chunks``.

    Raises:
        ValueError: It is not a positive int.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = "stream_chunks must be a positive int"
        raise ValueError(msg)


def check_chunk_delay(value: float) -> None:
    """Refuse a negative or non-numeric delay.

    Args:
        value: The proposed ``chunk_delay`` in seconds.

    Raises:
        ValueError: It is negative or not a number.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        msg = "chunk_delay must be a non-negative number of seconds"
        raise ValueError(msg)


class _Pending:
    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault, remaining: int) -> None:
        self.fault = fault
        self.remaining = remaining


class EmulatorState:
    """Tokens, faults, counters, records and runtime settings, behind one lock.

    Args:
        api_keys: API Key to Secret Key (token flow).
        access_keys: Access key to secret key (AK/SK signing).
        token_ttl: Lifetime of an issued token, in seconds.
        config: The initial runtime settings (restored by :meth:`reset`).
        endpoints: The accepted endpoint names, or ``None`` for any.
        max_records: How many requests to keep (the oldest are forgotten).
        open_connections: Reports the server's current TCP connection count.
    """

    def __init__(
        self,
        *,
        api_keys: Mapping[str, str],
        access_keys: Mapping[str, str],
        token_ttl: float,
        config: Config,
        endpoints: Iterable[str] | None,
        max_records: int,
        open_connections: Callable[[], int] = lambda: 0,
    ) -> None:
        self.api_keys = dict(api_keys)
        self.access_keys = dict(access_keys)
        self.token_ttl = token_ttl
        self.endpoints = None if endpoints is None else frozenset(endpoints)
        self.open_connections = open_connections
        self._initial = attrs.evolve(config)
        self.config = attrs.evolve(config)
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Pending] = []
        self._records: collections.deque[RecordedRequest] = collections.deque(maxlen=max_records)
        self._clients: set[object] = set()
        self._counts: collections.Counter[str] = collections.Counter()
        self._quota = Quota()

    # -- counters and records ------------------------------------------------------

    def count(self, name: str) -> None:
        """Add one to the counter ``name`` (a field of :class:`EmulatorStats`).

        Args:
            name: The counter.
        """
        with self._lock:
            self._counts[name] += 1

    def record(self, request: RecordedRequest, client: object) -> None:
        """Keep a received request, and count its kind and its connection.

        Args:
            request: The request.
            client: Identifies the connection (the peer's address).
        """
        with self._lock:
            self._records.append(request)
            self._clients.add(client)
            self._counts[f"{request.kind}_requests"] += 1

    def stats(self) -> EmulatorStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            counts = self._counts
            return EmulatorStats(
                token_requests=counts["token_requests"],
                chat_requests=counts["chat_requests"],
                stream_requests=counts["stream_requests"],
                error_responses=counts["error_responses"],
                faults_fired=counts["faults_fired"],
                tokens_issued=counts["tokens_issued"],
                connections_seen=len(self._clients),
                open_connections=self.open_connections(),
                pending_faults=sum(p.remaining for p in self._faults),
            )

    def requests(self) -> list[RecordedRequest]:
        """The recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    # -- tokens ----------------------------------------------------------------------

    def issue_token(self, ttl: float | None = None) -> str:
        """Mint an access token valid for ``ttl`` seconds (default: the token TTL).

        Args:
            ttl: Lifetime in seconds.
        """
        ttl = self.token_ttl if ttl is None else ttl
        now = time.time()
        # Shaped like Baidu's: 24.<hex>.<ttl>.<expiry>.<digits>-<app id>.
        token = (
            f"24.{secrets.token_hex(16)}.{int(ttl)}.{int(now + ttl)}"
            f".{secrets.randbelow(10**6):06d}-{secrets.randbelow(10**8):08d}"
        )
        with self._lock:
            self._tokens[token] = now + ttl
            self._counts["tokens_issued"] += 1
        return token

    def check_token(self, token: str) -> int | None:
        """``None`` if ``token`` is valid, else the error code: 110 unknown, 111 expired.

        Args:
            token: The ``access_token`` query parameter.
        """
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return _errors.ACCESS_TOKEN_INVALID
        if time.time() >= expiry:
            return _errors.ACCESS_TOKEN_EXPIRED
        return None

    def expire_tokens(self) -> None:
        """Make every current token answer 111 (expired)."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def revoke_tokens(self) -> None:
        """Forget every current token, so they answer 110 (invalid)."""
        with self._lock:
            self._tokens.clear()

    # -- faults ----------------------------------------------------------------------

    def inject(self, fault: object, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` matching requests.

        Args:
            fault: The fault.
            times: How many requests it hits.

        Raises:
            TypeError: ``fault`` is not a :class:`Fault`.
            ValueError: ``times`` is not a positive int.
        """
        if not isinstance(fault, Fault):
            msg = "fault must be a Fault; build one with Fault.error(), Fault.drop(), ..."
            raise TypeError(msg)
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            msg = "times must be a positive int"
            raise ValueError(msg)
        with self._lock:
            self._faults.append(_Pending(fault, times))

    def take_fault(self, target: Target, phases: tuple[Phase, ...]) -> Fault | None:
        """Consume the oldest queued fault for ``target`` acting in one of ``phases``.

        Args:
            target: The endpoint being answered.
            phases: The moments that apply to this request.
        """
        with self._lock:
            if not self._faults:
                return None
            for index, pending in enumerate(self._faults):
                fault = pending.fault
                if fault.target is target and fault.phase in phases:
                    pending.remaining -= 1
                    if not pending.remaining:
                        del self._faults[index]
                    self._counts["faults_fired"] += 1
                    return fault
        return None

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def configure(
        self,
        *,
        stream_chunks: int | None = None,
        chunk_delay: float | None = None,
        rates: Mapping[str, float | None] | None = None,
    ) -> None:
        """Change runtime settings; ``None`` leaves a setting as it is.

        Args:
            stream_chunks: Chunks per streamed answer.
            chunk_delay: Seconds between two chunks.
            rates: New values for some of ``qps``, ``rpm``, ``tpm`` (``None``: no limit) and
                ``rate_window``.

        Raises:
            ValueError: A value out of range (nothing is changed then).
        """
        if stream_chunks is not None:
            check_stream_chunks(stream_chunks)
        if chunk_delay is not None:
            check_chunk_delay(chunk_delay)
        rates = dict(rates or {})
        check_rates(rates)
        with self._lock:
            if stream_chunks is not None:
                self.config.stream_chunks = stream_chunks
            if chunk_delay is not None:
                self.config.chunk_delay = float(chunk_delay)
            for key, value in rates.items():
                setattr(self.config, key, value)

    # -- rate limits -------------------------------------------------------------------

    @property
    def rate_limited(self) -> bool:
        """Whether any rate limit is set (cheap: checked on every chat call)."""
        config = self.config
        return config.qps is not None or config.rpm is not None or config.tpm is not None

    def admit(self, tokens: int) -> tuple[int | None, RateHeaders]:
        """Count an accepted chat call against the rate limits, or refuse it.

        Args:
            tokens: The call's total tokens.

        Returns:
            The error code to answer (``None``: go ahead) and the ``X-Ratelimit-*`` headers.
        """
        with self._lock:
            config = self.config
            return self._quota.admit(
                qps=config.qps,
                rpm=config.rpm,
                tpm=config.tpm,
                window=config.rate_window,
                tokens=tokens,
                now=time.monotonic(),
            )

    # -- everything --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget faults, counters, records and tokens; restore the initial settings."""
        with self._lock:
            self._faults.clear()
            self._counts.clear()
            self._records.clear()
            self._clients.clear()
            self._tokens.clear()
            self._quota.clear()
            self.config = attrs.evolve(self._initial)
