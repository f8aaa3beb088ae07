"""Injectable faults: what can go wrong between a client and Baidu's servers.

A :class:`Fault` is a plain value. The emulator queues it (see ``Emulator.inject``) and
the next matching request consumes it. Faults act at one of two moments:

* on *arrival*, before authentication and validation (``error``, ``http``, ``drop``,
  ``stall`` without ``after``): what a gateway or an overloaded backend does;
* on the *answer* to a valid chat request (``flag``, ``malformed``) or to a valid
  streaming chat request only (``drop_after``, ``stall`` with ``after``, ``no_end``,
  ``skip_id``, ``repeat_id``): what a broken model server does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from mpt_async._validate import is_int
from mpt_async.testing._config import MAX_STREAM_CHUNKS, check_int, check_number

__all__ = ["MAX_STALL", "Fault", "FaultKind", "Phase", "Target"]

#: The longest stall, in seconds (a stall also ends when its client hangs up).
MAX_STALL = 3600.0
#: The longest message or body of a fault, in characters.
MAX_TEXT = 1_000_000
#: The most extra headers of an ``http`` fault, and the longest header value.
MAX_HEADERS = 100
MAX_HEADER = 8192
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
_INT32 = 2**31 - 1


class FaultKind(str, enum.Enum):
    """The kinds of fault, as spelt in the HTTP control API."""

    ERROR = "error"
    HTTP = "http"
    DROP = "drop"
    STALL = "stall"
    DROP_AFTER = "drop_after"
    MALFORMED = "malformed"
    NO_END = "no_end"
    SKIP_ID = "skip_id"
    REPEAT_ID = "repeat_id"
    FLAG = "flag"


class Target(str, enum.Enum):
    """Which endpoint a fault waits for."""

    CHAT = "chat"
    TOKEN = "token"


class Phase(enum.Enum):
    """When a fault acts (see the module docstring)."""

    ARRIVAL = "arrival"
    ANSWER = "answer"
    STREAM = "stream"


_STREAM_ONLY = frozenset(
    {FaultKind.DROP_AFTER, FaultKind.NO_END, FaultKind.SKIP_ID, FaultKind.REPEAT_ID}
)
_HTML = (
    "<html><head><title>{status}</title></head>"
    "<body><center><h1>{status}</h1></center></body></html>"
)


def _target(value: Target | str) -> Target:
    try:
        return Target(value)
    except ValueError:
        msg = f"target must be 'chat' or 'token', not {value!r}"
        raise ValueError(msg) from None


def _seconds(value: object) -> float:
    return check_number("seconds", value, 0, MAX_STALL)


def _after(value: object) -> int:
    return check_int("after", value, 0, MAX_STREAM_CHUNKS)


def _text(name: str, value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
        msg = f"{name} must be a string of at most {MAX_TEXT} characters"
        raise ValueError(msg)


def _header_value(name: str, value: object) -> str:
    """A header value as it can go on the wire: latin-1 text without CR, LF or NUL."""
    text = str(value)
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        msg = f"{name} must be latin-1 text"
        raise ValueError(msg) from None
    if any(c in text for c in "\r\n\0") or len(text) > MAX_HEADER:
        msg = f"{name} must be one line of at most {MAX_HEADER} characters"
        raise ValueError(msg)
    return text


def _headers(headers: object) -> tuple[tuple[str, str], ...]:
    if headers is not None and not isinstance(headers, Mapping):
        msg = 'headers must be a mapping of names to values, e.g. {"Retry-After": "1"}'
        raise TypeError(msg)
    items = tuple((headers or {}).items())
    if len(items) > MAX_HEADERS:
        msg = f"at most {MAX_HEADERS} headers"
        raise ValueError(msg)
    pairs = []
    for name, value in items:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            msg = f"header name {name!r:.40} is not an HTTP token"
            raise ValueError(msg)
        pairs.append((name, _header_value(f"header {name}", value)))
    return tuple(pairs)


@attrs.frozen(kw_only=True, repr=False)
class Fault:
    """One injected fault. Build it with the class methods, not the initialiser.

    Attributes:
        kind: What goes wrong.
        target: ``"chat"`` or ``"token"``: the endpoint whose next request it hits.
        code: ``error_code`` (kind ``error``).
        msg: ``error_msg`` (kind ``error``; ``None`` means Baidu's default message).
        status: HTTP status (kind ``http``).
        body: Response body (kind ``http``).
        content_type: Response ``Content-Type`` (kind ``http``).
        headers: Extra response headers (kind ``http``).
        seconds: How long to stall (kind ``stall``).
        after: How many good stream chunks come first (kinds ``drop_after``,
            ``malformed``, and ``stall`` during a stream).
        ban_round: The flagged round (kind ``flag``).
    """

    kind: FaultKind
    target: Target = Target.CHAT
    code: int | None = None
    msg: str | None = None
    status: int | None = None
    body: str | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float | None = None
    after: int | None = None
    ban_round: int | None = None

    def __repr__(self) -> str:
        # Only what was set, e.g. Fault(kind='error', target='chat', code=18).
        fields = [f"kind={self.kind.value!r}", f"target={self.target.value!r}"]
        for field in attrs.fields(Fault)[2:]:
            value = getattr(self, field.name)
            if value is not None and value != ():
                fields.append(f"{field.name}={value!r}")
        return f"Fault({', '.join(fields)})"

    @property
    def phase(self) -> Phase:
        """When this fault acts on a request."""
        if self.kind in (FaultKind.ERROR, FaultKind.HTTP, FaultKind.DROP):
            return Phase.ARRIVAL
        if self.kind is FaultKind.STALL:
            return Phase.ARRIVAL if self.after is None else Phase.STREAM
        if self.kind in _STREAM_ONLY:
            return Phase.STREAM
        return Phase.ANSWER

    @classmethod
    def error(
        cls, code: int, msg: str | None = None, *, target: Target | str = Target.CHAT
    ) -> Fault:
        """Answer HTTP 200 with ``{"error_code": code, "error_msg": msg, "id": ...}``.

        Args:
            code: The error code, e.g. 18 (QPS limit) or 336100 (overloaded).
            msg: The message; ``None`` uses Baidu's message for ``code``.
            target: The endpoint to hit.

        Raises:
            TypeError: ``code`` is not an int.
        """
        if not is_int(code):
            msg_ = "code must be an int"
            raise TypeError(msg_)
        check_int("code", code, -_INT32, _INT32)
        _text("msg", msg)
        return cls(kind=FaultKind.ERROR, target=_target(target), code=code, msg=msg)

    @classmethod
    def http(
        cls,
        status: int,
        body: str | None = None,
        content_type: str = "text/html",
        headers: Mapping[str, str] | None = None,
        *,
        target: Target | str = Target.CHAT,
    ) -> Fault:
        """Answer with an arbitrary HTTP status, e.g. a gateway's 502 HTML page.

        Args:
            status: HTTP status code (100-599).
            body: The body; ``None`` gives a small nginx-like HTML page naming ``status``.
            content_type: The ``Content-Type`` header.
            headers: Extra headers, e.g. ``{"Retry-After": "1"}`` with a 429.
            target: The endpoint to hit.

        Raises:
            ValueError: ``status`` is out of range, a header that cannot go on the wire
                (not latin-1, or with CR or LF), or an oversized body.
        """
        if not is_int(status) or not 100 <= status <= 599:
            msg = "status must be an int in 100..599"
            raise ValueError(msg)
        _text("body", body)
        return cls(
            kind=FaultKind.HTTP,
            target=_target(target),
            status=status,
            body=_HTML.format(status=status) if body is None else body,
            content_type=_header_value("content_type", content_type),
            headers=_headers(headers),
        )

    @classmethod
    def drop(cls, *, target: Target | str = Target.CHAT) -> Fault:
        """Close the TCP connection without sending any response.

        Args:
            target: The endpoint to hit.
        """
        return cls(kind=FaultKind.DROP, target=_target(target))

    @classmethod
    def stall(
        cls, seconds: float, after: int | None = None, *, target: Target | str = Target.CHAT
    ) -> Fault:
        """Sleep before answering, or after ``after`` chunks of a stream.

        Args:
            seconds: How long to sleep.
            after: ``None`` stalls before anything is sent; a number stalls a stream
                after that many chunks (the fault then waits for a streaming request).
            target: The endpoint to hit (``after`` needs ``"chat"``).

        Raises:
            ValueError: ``seconds`` not in ``[0, MAX_STALL]``, ``after`` not an int in
                ``[0, 10000]``, or ``after`` with target ``"token"``.
        """
        fault = cls(
            kind=FaultKind.STALL,
            target=_target(target),
            seconds=_seconds(seconds),
            after=None if after is None else _after(after),
        )
        if after is not None and fault.target is Target.TOKEN:
            msg = "a stall with 'after' needs a streaming chat request"
            raise ValueError(msg)
        return fault

    @classmethod
    def drop_after(cls, after: int | None = None, *, n: int | None = None) -> Fault:
        """Send ``after`` stream chunks, then abort the connection mid-stream.

        Args:
            after: Chunks sent before the connection is cut.
            n: The former name of ``after`` (kept as an alias).

        Raises:
            ValueError: Neither or both of ``after`` and ``n``, or not an int in
                ``[0, 10000]``.
        """
        if (after is None) == (n is None):
            msg = "drop_after needs after= (or its old name n=), once"
            raise ValueError(msg)
        return cls(kind=FaultKind.DROP_AFTER, after=_after(after if n is None else n))

    @classmethod
    def malformed(cls, after: int = 0) -> Fault:
        """Send a line that is not JSON: a ``data:`` line after ``after`` stream chunks.

        A non-streaming request gets a truncated JSON body with HTTP 200 instead.

        Args:
            after: Good chunks sent before the broken line.

        Raises:
            ValueError: ``after`` is not an int in ``[0, 10000]``.
        """
        return cls(kind=FaultKind.MALFORMED, after=_after(after))

    @classmethod
    def no_end(cls) -> Fault:
        """End a stream normally at the HTTP level, but with no chunk marked ``is_end``."""
        return cls(kind=FaultKind.NO_END)

    @classmethod
    def skip_id(cls) -> Fault:
        """Skip a ``sentence_id`` in a stream (0, 2, 3, ...)."""
        return cls(kind=FaultKind.SKIP_ID)

    @classmethod
    def repeat_id(cls) -> Fault:
        """Repeat a ``sentence_id`` in a stream (0, 0, 1, ...)."""
        return cls(kind=FaultKind.REPEAT_ID)

    @classmethod
    def flag(cls, ban_round: int = -1) -> Fault:
        """Flag the input: ``need_clear_history`` true, ``ban_round`` set, empty result.

        Args:
            ban_round: The flagged round; ``-1`` means the current question.

        Raises:
            TypeError: ``ban_round`` is not an int.
        """
        if not is_int(ban_round):
            msg = "ban_round must be an int"
            raise TypeError(msg)
        check_int("ban_round", ban_round, -1, _INT32)
        return cls(kind=FaultKind.FLAG, ban_round=ban_round)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as :meth:`from_dict` reads it (only what was set)."""
        data: dict[str, Any] = {"kind": self.kind.value}
        if self.target is not Target.CHAT:  # only the faults that take a target can differ
            data["target"] = self.target.value
        for field in attrs.fields(Fault)[2:]:
            value = getattr(self, field.name)
            if value is not None and value != ():
                data[field.name] = dict(value) if field.name == "headers" else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. ``{"kind": "error", "code": 18}``.

        The keys besides ``kind`` are the keyword arguments of the matching class
        method; :meth:`to_dict` gives this form back.

        Args:
            data: The decoded JSON object.

        Raises:
            ValueError: Unknown kind, unknown or ill-typed arguments.
        """
        args = dict(data)
        kind = args.pop("kind", None)
        maker = _MAKERS.get(str(kind))
        if maker is None:
            msg = f"unknown fault kind {kind!r}; expected one of {sorted(_MAKERS)}"
            raise ValueError(msg)
        try:
            return maker(**args)
        except TypeError as exc:
            msg = f"bad arguments for fault {kind!r}: {exc}"
            raise ValueError(msg) from None


_MAKERS: dict[str, Callable[..., Fault]] = {
    FaultKind.ERROR.value: Fault.error,
    FaultKind.HTTP.value: Fault.http,
    FaultKind.DROP.value: Fault.drop,
    FaultKind.STALL.value: Fault.stall,
    FaultKind.DROP_AFTER.value: Fault.drop_after,
    FaultKind.MALFORMED.value: Fault.malformed,
    FaultKind.NO_END.value: Fault.no_end,
    FaultKind.SKIP_ID.value: Fault.skip_id,
    FaultKind.REPEAT_ID.value: Fault.repeat_id,
    FaultKind.FLAG.value: Fault.flag,
}
