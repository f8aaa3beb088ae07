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
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["Fault", "FaultKind", "Phase", "Target"]


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


def _non_negative(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 0):
        msg = f"{name} must be a non-negative number"
        raise ValueError(msg)


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
        if not isinstance(code, int) or isinstance(code, bool):
            msg_ = "code must be an int"
            raise TypeError(msg_)
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
            ValueError: ``status`` is out of range.
        """
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            msg = "status must be an int in 100..599"
            raise ValueError(msg)
        return cls(
            kind=FaultKind.HTTP,
            target=_target(target),
            status=status,
            body=_HTML.format(status=status) if body is None else body,
            content_type=content_type,
            headers=tuple((str(k), str(v)) for k, v in (headers or {}).items()),
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
            ValueError: A negative number, or ``after`` with target ``"token"``.
        """
        _non_negative("seconds", seconds)
        _non_negative("after", after)
        fault = cls(
            kind=FaultKind.STALL, target=_target(target), seconds=float(seconds), after=after
        )
        if after is not None and fault.target is Target.TOKEN:
            msg = "a stall with 'after' needs a streaming chat request"
            raise ValueError(msg)
        return fault

    @classmethod
    def drop_after(cls, n: int) -> Fault:
        """Send ``n`` stream chunks, then abort the connection mid-stream.

        Args:
            n: Chunks sent before the connection is cut.

        Raises:
            ValueError: ``n`` is negative.
        """
        _non_negative("after", n)
        return cls(kind=FaultKind.DROP_AFTER, after=n)

    @classmethod
    def malformed(cls, after: int = 0) -> Fault:
        """Send a line that is not JSON: a ``data:`` line after ``after`` stream chunks.

        A non-streaming request gets a truncated JSON body with HTTP 200 instead.

        Args:
            after: Good chunks sent before the broken line.

        Raises:
            ValueError: ``after`` is negative.
        """
        _non_negative("after", after)
        return cls(kind=FaultKind.MALFORMED, after=after)

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
        if not isinstance(ban_round, int) or isinstance(ban_round, bool):
            msg = "ban_round must be an int"
            raise TypeError(msg)
        return cls(kind=FaultKind.FLAG, ban_round=ban_round)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. ``{"kind": "error", "code": 18}``.

        The keys besides ``kind`` are the keyword arguments of the matching class
        method (``drop_after`` takes ``after``).

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
        if kind == FaultKind.DROP_AFTER.value and "after" in args:
            args["n"] = args.pop("after")
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
