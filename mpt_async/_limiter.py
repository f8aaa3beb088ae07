"""Rate limits in one process: hold calls back so that the service's quotas hold.

One :class:`Limiter` belongs to a client and every copy made by ``with_options``. The
request loop asks it for a place before each attempt (retries included) and tells it
about each reply. It keeps three limits:

- QPS: calls are spaced ``1/qps`` seconds apart (GCRA without burst), so no window of one
  second ever holds more than ``qps`` of them, however many are started at once;
- RPM: at most ``rpm`` calls in any window of a minute;
- TPM: at most ``tpm`` tokens in any window of a minute. A call is charged an estimate
  when it starts and its real ``usage.total_tokens`` when the answer ends.

A call in flight counts in the minute windows until its reply arrives, and leaves them a
minute after that: the service saw it before the reply left, so by then it has surely
left the service's window too. Waiters queue in FIFO order; a cancelled waiter gives back
its place, and nothing is charged for it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from mpt_async._ratelimit import RateLimitInfo, RateLimits

if TYPE_CHECKING:
    from mpt_async._auth import Auth

__all__ = ["Limiter", "Ticket", "TokenEstimate", "new_limiter", "stricter"]

#: How much one new observation moves the learned token estimates.
_LEARNING_RATE = 0.25
#: The answer's tokens guessed before any answer has been seen (at most a quarter of
#: the TPM budget), so that a first call never holds the whole budget.
_FIRST_ANSWER_GUESS = 512


def stricter(mine: int | None, theirs: int | None) -> int | None:
    """The stricter of two limits (``None``: no limit)."""
    if mine is None:
        return theirs
    return mine if theirs is None else min(mine, theirs)


def new_limiter(limits: RateLimits, base_url: str, auth: Auth, endpoint: str) -> Limiter:
    """The limiter of a new client: in this process, or shared through ``limits.shared``."""
    if limits.shared is None:
        return Limiter(limits)
    from mpt_async._shared_limiter import SharedLimiter  # only with a shared store

    return SharedLimiter(limits, limits.shared, base_url=base_url, auth=auth, endpoint=endpoint)


class TokenEstimate:
    """What a call will cost in tokens, learned from the calls that reported their usage."""

    __slots__ = ("_completion", "_prompt_ratio")

    def __init__(self) -> None:
        self._prompt_ratio = 1.0  # prompt tokens per request body byte
        self._completion: float | None = None  # answer tokens

    def __call__(self, size: int, tpm: int | None) -> tuple[int, int]:
        """The tokens to charge a call now, and those to charge if it never reports usage.

        Args:
            size: The request body's length in bytes.
            tpm: The TPM limit in force, if any.
        """
        prompt = math.ceil(size * self._prompt_ratio)
        if self._completion is None:
            guess = _FIRST_ANSWER_GUESS if tpm is None else min(_FIRST_ANSWER_GUESS, tpm // 4)
            return prompt + guess, prompt
        return prompt + math.ceil(self._completion), prompt

    def learn(self, size: int, prompt_tokens: int, completion_tokens: int) -> bool:
        """Improve the estimate from a settled call; ``False`` when it taught nothing."""
        if size <= 0 or prompt_tokens < 0 or completion_tokens < 0:
            return False
        ratio = prompt_tokens / size
        if self._completion is None:
            self._prompt_ratio, self._completion = ratio, float(completion_tokens)
        else:
            self._prompt_ratio += _LEARNING_RATE * (ratio - self._prompt_ratio)
            self._completion += _LEARNING_RATE * (completion_tokens - self._completion)
        return True


class _Entry:
    """One admitted call's charge: in flight, in the window, or expired."""

    __slots__ = ("expires", "flying", "tokens")

    def __init__(self, tokens: int) -> None:
        self.tokens: int = tokens
        self.flying: bool = True
        self.expires: float | None = None


class Ticket:
    """One admitted attempt's place in the limiter's windows.

    The request loop calls :meth:`reply` when an answer starts arriving, :meth:`settle`
    with the real token count, and :meth:`finish` when the attempt ends without one.
    """

    __slots__ = ("_entry", "_fallback", "_limiter", "_settled", "_size")

    def __init__(self, limiter: Limiter, entry: _Entry, size: int, fallback: int) -> None:
        self._limiter = limiter
        self._entry = entry
        self._size = size
        self._fallback = fallback
        self._settled = False

    def __repr__(self) -> str:
        state = "in flight" if self._entry.flying else "answered"
        return f"<Ticket {state}, {self._entry.tokens} tokens>"

    def reply(self, info: RateLimitInfo | None) -> None:
        """A reply arrived (with this quota in its headers, if any)."""
        self._limiter.observe(info)
        self._answered()

    def answered(self) -> None:
        """The attempt is over on the wire: start the minute after which it is forgotten."""
        self._answered()

    def settle(self, total_tokens: int, prompt_tokens: int | None = None) -> None:
        """Charge the real token count (``0`` for a call the service refused).

        Args:
            total_tokens: The call's ``usage.total_tokens``.
            prompt_tokens: Its ``usage.prompt_tokens``, to improve later estimates.
        """
        self._settled = True
        self._charge(total_tokens)
        if prompt_tokens is not None:
            self._limiter.learn(self._size, prompt_tokens, total_tokens - prompt_tokens)

    def finish(self) -> None:
        """The attempt ended; without a real count, charge what its prompt likely cost."""
        self._answered()
        if not self._settled:
            self._settled = True
            self._charge(self._fallback)

    # What a ticket of another kind of limiter does differently:

    def _answered(self) -> None:
        self._limiter.answered(self._entry)

    def _charge(self, tokens: int) -> None:
        self._limiter.charge(self._entry, tokens)


class Limiter:
    """Holds calls back to a client's :class:`RateLimits` (and those the service announces).

    Args:
        limits: The user's limits.
        window: The length of the RPM and TPM windows in seconds (shorter in tests).
        clock: The time source; the event loop's clock by default.
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.limits = limits
        self._window = window
        self._clock = clock
        self._interval = 1.0 / limits.qps if limits.qps is not None else None
        self._server_rpm: int | None = None
        self._server_tpm: int | None = None
        self._seen_reply = not limits.adopt_server_limits
        self._next_slot = -math.inf  # the GCRA's theoretical arrival time
        self._paused_until = -math.inf
        self._flying = 0
        self._flying_tokens = 0
        self._recent: collections.deque[_Entry] = collections.deque()
        self._recent_tokens = 0
        self.estimate: TokenEstimate = TokenEstimate()
        self._lock: anyio.Lock | None = None
        self._wake: anyio.Event | None = None

    def __repr__(self) -> str:
        return (
            f"<Limiter qps={self.limits.qps} rpm={self.rpm} tpm={self.tpm},"
            f" {self._flying} in flight>"
        )

    @property
    def rpm(self) -> int | None:
        """The calls-per-minute limit in force: the stricter of the user's and the server's."""
        return stricter(self.limits.rpm, self._server_rpm)

    @property
    def tpm(self) -> int | None:
        """The tokens-per-minute limit in force."""
        return stricter(self.limits.tpm, self._server_tpm)

    # -- waiting ----------------------------------------------------------------------

    async def acquire(self, size: int) -> Ticket:
        """Wait for a place for one attempt, in FIFO order.

        Args:
            size: The request body's length in bytes (the basis of the token estimate).
        """
        if self._lock is None:
            self._lock = anyio.Lock()  # made here, inside the event loop that uses it
        # Only the head of the queue holds the lock; it sleeps until its place is free or
        # something changes. A cancelled waiter simply leaves the lock's queue.
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._wait(size, now)
                if wait <= 0:
                    return self._admit(size, now)
                wake = self._wake = anyio.Event()
                with anyio.move_on_after(wait):
                    await wake.wait()

    def _wait(self, size: int, now: float) -> float:
        """Seconds until a call may start; ``inf``: until something changes."""
        if not self._seen_reply and self._flying:
            return math.inf  # the first call is still out: it may bring the real limits
        wait = self._paused_until - now
        if self._interval is not None:
            wait = max(wait, self._next_slot - now)
        recent = self._recent
        while recent and recent[0].expires is not None and recent[0].expires <= now:
            self._forget(recent.popleft())
        rpm = self.rpm
        if rpm is not None:
            excess = self._flying + len(recent) - rpm + 1
            if excess > 0:
                if excess > len(recent):
                    return math.inf
                wait = max(wait, self._expiry(recent[excess - 1]) - now)
        tpm = self.tpm
        if tpm is not None:
            wait = max(wait, self._tokens_wait(self.estimate(size, tpm)[0], tpm, now))
        return wait

    def _tokens_wait(self, estimate: int, tpm: int, now: float) -> float:
        live = self._flying_tokens + self._recent_tokens
        if live + estimate <= tpm or (not self._flying and not self._recent):
            return 0.0
        for entry in self._recent:
            live -= entry.tokens
            if live + estimate <= tpm or (not self._flying and entry is self._recent[-1]):
                return self._expiry(entry) - now
        return math.inf

    @staticmethod
    def _expiry(entry: _Entry) -> float:
        assert entry.expires is not None  # entries in the window have answered
        return entry.expires

    def _admit(self, size: int, now: float) -> Ticket:
        if self._interval is not None:
            self._next_slot = max(self._next_slot, now) + self._interval
        estimate, fallback = self.estimate(size, self.tpm)
        entry = _Entry(estimate)
        self._flying += 1
        self._flying_tokens += estimate
        return Ticket(self, entry, size, fallback)

    def _poke(self) -> None:
        """Wake the head of the queue: its wait may be over sooner than it planned."""
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    # -- what replies tell -------------------------------------------------------------

    def answered(self, entry: _Entry) -> None:
        """Move an entry from in flight to the window (idempotent)."""
        if not entry.flying:
            return
        entry.flying = False
        entry.expires = self._clock() + self._window
        self._flying -= 1
        self._flying_tokens -= entry.tokens
        self._recent.append(entry)
        self._recent_tokens += entry.tokens
        self._poke()

    def charge(self, entry: _Entry, tokens: int) -> None:
        """Replace an entry's token charge."""
        tokens = max(0, tokens)
        delta = tokens - entry.tokens
        entry.tokens = tokens
        if entry.flying:
            self._flying_tokens += delta
        elif entry.expires is not None:
            self._recent_tokens += delta
        if delta < 0:
            self._poke()

    def _forget(self, entry: _Entry) -> None:
        self._recent_tokens -= entry.tokens
        entry.expires = None  # out of every window: later charges change nothing

    def learn(self, size: int, prompt_tokens: int, completion_tokens: int) -> None:
        """Improve the token estimate from a settled call."""
        if self.estimate.learn(size, prompt_tokens, completion_tokens):
            self._poke()

    def observe(self, info: RateLimitInfo | None) -> None:
        """Adopt the per-minute limits a reply announced (if the user allows it)."""
        self._seen_reply = True
        if info is not None and self.limits.adopt_server_limits:
            if info.limit_requests:
                self._server_rpm = info.limit_requests
            if info.limit_tokens:
                self._server_tpm = info.limit_tokens
        self._poke()

    def pause(self, seconds: float) -> None:
        """Hold every new call back for ``seconds`` (the service said it was over a limit)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
