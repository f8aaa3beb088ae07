"""The emulator's mutable state, shared by the server thread and the test thread.

Everything goes through one lock, held only for a few dictionary operations, so the
ASGI app (on the server's event loop) and the tests (on any thread) never see a
half-updated counter, token table, fault queue or reply queue.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from mpt_async.testing import _errors
from mpt_async.testing._config import (
    Config,
    check_chunk_delay,
    check_int,
    check_rates,
    check_stream_chunks,
    check_token_ttl,
)
from mpt_async.testing._faults import Fault, Phase, Target
from mpt_async.testing._quota import Quota, RateHeaders
from mpt_async.testing._records import RECORD_BYTES, EmulatorStats, RecordedRequest, Records
from mpt_async.testing._script import ScriptedReply

__all__ = ["BEARER_PREFIX", "MAX_TIMES", "EmulatorState"]

#: The largest ``times`` of one fault or scripted reply.
MAX_TIMES = 1_000_000
#: How IAM bearer tokens (and v2 API keys) begin; v1 access tokens never do.
BEARER_PREFIX = "bce-v3/"
#: The most entries (faults, or scripted replies) waiting at once.
MAX_QUEUED = 10_000


class _Pending:
    __slots__ = ("item", "remaining")

    def __init__(self, item: Any, remaining: int) -> None:
        self.item = item
        self.remaining = remaining


def _check_times(times: object, queue: list[_Pending]) -> int:
    checked = check_int("times", times, 1, MAX_TIMES)
    if len(queue) >= MAX_QUEUED:
        msg = f"at most {MAX_QUEUED} entries may wait at once"
        raise ValueError(msg)
    return checked


class EmulatorState:
    """Tokens, faults, replies, counters, records and runtime settings, behind one lock.

    Args:
        api_keys: API Key to Secret Key (token flow).
        access_keys: Access key to secret key (AK/SK signing).
        token_ttl: Lifetime of an issued token, in seconds.
        config: The initial runtime settings (restored by :meth:`reset`).
        endpoints: The accepted endpoint names, or ``None`` for any.
        max_records: How many requests to keep (the oldest are forgotten).
        record_bytes: The memory budget of the kept requests.
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
        record_bytes: int = RECORD_BYTES,
        open_connections: Callable[[], int] = lambda: 0,
    ) -> None:
        self.api_keys = dict(api_keys)
        self.access_keys = dict(access_keys)
        #: The v2 API keys accepted as ``Authorization: Bearer``.
        self.bearer_keys: set[str] = set()
        self.token_ttl = check_token_ttl(token_ttl)
        self.endpoints = None if endpoints is None else frozenset(endpoints)
        self.open_connections = open_connections
        self._initial = attrs.evolve(config)
        self.config = attrs.evolve(config)
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Pending] = []
        self._replies: list[_Pending] = []
        self._records = Records(max_records, record_bytes)
        self._clients: set[object] = set()
        self._counts: collections.Counter[str] = collections.Counter()
        self._quota = Quota()

    # -- counters and records ------------------------------------------------------

    def count(self, name: str) -> None:
        """Add one to the counter ``name`` (a field of :class:`EmulatorStats`)."""
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
            return self._records.snapshot()

    # -- tokens ----------------------------------------------------------------------

    def issue_token(self, ttl: float | None = None, *, bearer: bool = False) -> str:
        """Mint an access token valid for ``ttl`` seconds (default: the token TTL).

        Args:
            ttl: Lifetime in seconds (negative: already expired).
            bearer: Mint an IAM bearer token for the v2 interface instead of a v1 access
                token: the two are not interchangeable.

        Raises:
            ValueError: ``ttl`` is not a number within ten years either way.
        """
        ttl = self.token_ttl if ttl is None else check_token_ttl(ttl, positive=False)
        now = time.time()
        if bearer:
            # Shaped like IAM's: bce-v3/ALTAK-<id>/<hex>, as a permanent API key is.
            token = f"{BEARER_PREFIX}ALTAK-{secrets.token_hex(10)}/{secrets.token_hex(20)}"
        else:
            # Shaped like Baidu's: 24.<hex>.<ttl>.<expiry>.<digits>-<app id>.
            token = (
                f"24.{secrets.token_hex(16)}.{int(ttl)}.{int(now + ttl)}"
                f".{secrets.randbelow(10**6):06d}-{secrets.randbelow(10**8):08d}"
            )
        with self._lock:
            self._tokens[token] = now + ttl
            self._counts["tokens_issued"] += 1
        return token

    def check_token(self, token: str, *, bearer: bool = False) -> int | None:
        """``None`` if ``token`` is valid, else the error code: 110 unknown, 111 expired.

        A v1 access token is unknown on the v2 interface (``bearer``), and an IAM bearer
        token on v1, as on Baidu's service.
        """
        if token.startswith(BEARER_PREFIX) is not bearer:
            return _errors.ACCESS_TOKEN_INVALID
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

    # -- faults and scripted replies ---------------------------------------------------

    def inject(self, fault: object, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` matching requests.

        Raises:
            TypeError: ``fault`` is not a :class:`Fault`.
            ValueError: ``times`` is not an int in ``[1, MAX_TIMES]``, or the queue is full.
        """
        if not isinstance(fault, Fault):
            msg = "fault must be a Fault; build one with Fault.error(), Fault.drop(), ..."
            raise TypeError(msg)
        with self._lock:
            self._faults.append(_Pending(fault, _check_times(times, self._faults)))

    def take_fault(self, target: Target, phases: tuple[Phase, ...]) -> Fault | None:
        """Consume the oldest queued fault for ``target`` acting in one of ``phases``."""
        if not self._faults:  # the common case, without the lock
            return None
        with self._lock:
            for index, pending in enumerate(self._faults):
                fault: Fault = pending.item
                if fault.target is target and fault.phase in phases:
                    pending.remaining -= 1
                    if not pending.remaining:
                        del self._faults[index]
                    self._counts["faults_fired"] += 1
                    return fault
        return None

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """The queued faults, oldest first, each with how many requests it still hits."""
        with self._lock:
            return [(p.item, p.remaining) for p in self._faults]

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def add_reply(self, reply: ScriptedReply, times: int = 1) -> None:
        """Queue ``reply`` for the next ``times`` accepted chat calls.

        Raises:
            ValueError: ``times`` is not an int in ``[1, MAX_TIMES]``, or the queue is full.
        """
        with self._lock:
            self._replies.append(_Pending(reply, _check_times(times, self._replies)))

    def take_reply(self) -> ScriptedReply | None:
        """Consume the oldest queued reply, if any."""
        if not self._replies:  # the common case, without the lock
            return None
        with self._lock:
            if not self._replies:
                return None
            pending = self._replies[0]
            pending.remaining -= 1
            if not pending.remaining:
                del self._replies[0]
            reply: ScriptedReply = pending.item
            return reply

    def pending_replies(self) -> list[tuple[ScriptedReply, int]]:
        """The queued replies, oldest first, each with how many calls it still answers."""
        with self._lock:
            return [(p.item, p.remaining) for p in self._replies]

    def clear_replies(self) -> None:
        """Drop every queued reply."""
        with self._lock:
            self._replies.clear()

    # -- settings ------------------------------------------------------------------------

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
            chunk_delay = check_chunk_delay(chunk_delay)
        rates = dict(rates or {})
        check_rates(rates)
        with self._lock:
            if stream_chunks is not None:
                self.config.stream_chunks = stream_chunks
            if chunk_delay is not None:
                self.config.chunk_delay = chunk_delay
            for key, value in rates.items():
                setattr(self.config, key, value)

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

    def reset(self) -> None:
        """Forget faults, replies, counters, records and tokens; restore the initial settings."""
        with self._lock:
            self._faults.clear()
            self._replies.clear()
            self._counts.clear()
            self._records.clear()
            self._clients.clear()
            self._tokens.clear()
            self._quota.clear()
            self.config = attrs.evolve(self._initial)
