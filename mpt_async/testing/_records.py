"""What the emulator observed: counters, and the requests it received.

Both are plain values handed to tests. :class:`Records` keeps the requests within two
bounds, a count and a memory budget, forgetting the oldest first.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import attrs

from mpt_async._redact import redact_pairs

__all__ = ["RECORD_BYTES", "EmulatorStats", "RecordedRequest", "Records"]

#: The default memory budget of the kept requests, in bytes (see :meth:`Records.cost`).
RECORD_BYTES = 64 * 1024 * 1024

_REDACTED = "<redacted>"
# What a record costs besides its body and headers (the objects themselves), roughly.
_OVERHEAD = 512


def _redact(pairs: Mapping[str, str]) -> dict[str, str]:
    # The client's one redactor decides what is secret (tokens, client secrets, signatures).
    return redact_pairs(pairs, _REDACTED)


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
    query = _redact(self.query)
    headers = _redact(self.headers)
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
        raw_body: The body as received (its first 4 MiB).
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
            "query": _redact(self.query),
            "headers": _redact(self.headers),
            "body": body,
            "time": self.time,
        }


class Records:
    """The most recent requests, within ``max_records`` and ``max_bytes`` (not thread-safe).

    Args:
        max_records: How many requests to keep at most.
        max_bytes: Their total :meth:`cost` at most; the oldest go first, and one request
            that costs more than the whole budget is not kept at all.
    """

    __slots__ = ("_items", "_size", "max_bytes", "max_records")

    def __init__(self, max_records: int, max_bytes: int = RECORD_BYTES) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: collections.deque[tuple[RecordedRequest, int]] = collections.deque()
        self._size = 0

    @staticmethod
    def cost(request: RecordedRequest) -> int:
        """What keeping ``request`` costs, in bytes, roughly.

        Twice its raw body (the bytes and their decoded form), plus its headers and query.
        """
        pairs = (*request.headers.items(), *request.query.items())
        return 2 * len(request.raw_body) + sum(len(k) + len(v) for k, v in pairs) + _OVERHEAD

    def append(self, request: RecordedRequest) -> None:
        """Keep ``request``, forgetting the oldest ones beyond the bounds."""
        cost = self.cost(request)
        if cost > self.max_bytes or not self.max_records:
            return
        items = self._items
        items.append((request, cost))
        self._size += cost
        while len(items) > self.max_records or self._size > self.max_bytes:
            self._size -= items.popleft()[1]

    def clear(self) -> None:
        """Forget every request."""
        self._items.clear()
        self._size = 0

    def snapshot(self) -> list[RecordedRequest]:
        """The kept requests, oldest first."""
        return [request for request, _ in self._items]

    @property
    def size(self) -> int:
        """The total cost of the kept requests."""
        return self._size
