"""The quota model: how fast calls may start, learned from what the service says.

This is the policy, and all of it: no I/O, no event loop, a clock passed in. The limiter
(``mpt_async._limiter``) asks it for the limits in force before each call, and the request
loop tells it, through the limiter, about every admission, reply and refusal. The counters
the limits are checked against (the schedule, the minute windows) live in a quota store
(``mpt_async._quota_store``): in this process, or in Redis for a fleet.

The rate per second is learned (unless adaptation is off):

- **Slow start.** A fresh model allows :data:`INITIAL_BURST` calls at once and
  :data:`INITIAL_RATE` calls a second, and each call
  the rate held back adds :data:`START_GROWTH` calls a second: while callers queue, the rate
  grows by ``e`` every ``1/START_GROWTH`` seconds (TCP's slow start, in calls rather than
  packets). Above ``START_GROWTH / START_SHARE`` calls a second, a held call adds
  :data:`START_SHARE` of the rate instead (it doubles every 23 held calls): fast callers are
  caught up with in about a hundred held calls rather than several hundred, and a rate
  that has caught up with them lies a step above their pace rather than a hair under it. A
  client that is never held back never grows it, and never waits.
- **Cut to what was measured.** A per-second refusal sets the rate to :data:`MARGIN` times
  the calls admitted in the last second (the quota, as the service just showed it), or
  :data:`BACKOFF` times the rate if such a cut in the last :data:`HOLD` seconds did not
  suffice. One cut per "epoch": a refusal of a call admitted before the last cut says
  nothing new.
- **Hold, then probe.** After a cut the rate stays put for :data:`HOLD` seconds, then grows
  again, more gently (:data:`GROWTH`), so that a quota that went up is found within seconds.
- **A refused probe goes back.** A rate that held for a whole hold is proven. When the probe
  above it is refused without having found much more (less than :data:`FOUND_MORE` times
  it), the rate goes back to :data:`CREEP` times the proven one, not to what the last second
  measured: the service's window let the probe's first calls through, so that measure
  overstates the quota, and cutting to it costs a second refusal and a deeper cut. A probe
  costs one refusal per hold, and the rate creeps up on the quota.

Per-minute quotas are not probed for: they are announced (``X-Ratelimit-Limit-*``), or
learned from a refusal as the calls (tokens) the window held when it came, and forgotten
:data:`FORGET_AFTER` windows later. The user's :class:`~mpt_async.RateLimits` are ceilings
over all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from mpt_async._quota_kind import QuotaKind
from mpt_async._ratelimit import LearnedLimits, RateLimitInfo, RateLimits

__all__ = [
    "BACKOFF",
    "CREEP",
    "FOUND_MORE",
    "GROWTH",
    "HOLD",
    "INITIAL_RATE",
    "MARGIN",
    "REFINE_WITHIN",
    "START_GROWTH",
    "START_SHARE",
    "Limits",
    "QuotaModel",
    "TokenEstimate",
    "Usage",
]

#: Calls a second a fresh model allows.
INITIAL_RATE = 50.0
#: Calls a fresh model lets start at once, before any refusal (then only the rate counts).
INITIAL_BURST = 16
#: Calls a second added by each call the rate held back, until the first refusal (slow
#: start: the rate grows e-fold every quarter second while callers queue).
START_GROWTH = 4.0
#: Above ``START_GROWTH / START_SHARE`` calls a second, each held call adds this share of the
#: rate instead. A held call costs a timer and a wake-up (40-90 µs of CPU): at the fixed
#: step, sequential calls to a local emulator (1,500-1,800 a second) were held 360-380 times
#: before the rate caught up (now about 105), and a rate grown by 4/s at a time lay just under
#: their pace, so that each time they went a little faster, calls were held again.
START_SHARE = 1 / 32
#: The same after a cut and its hold (probing: e-fold every second).
GROWTH = 1.0
#: After a refusal: this share of the rate measured when it came.
MARGIN = 0.95
#: Seconds after a cut in which the refusals of calls already in flight refine it.
REFINE_WITHIN = 1.0
#: After a refusal that a recent cut by measure did not prevent: this share of the rate.
BACKOFF = 0.8
#: After a probe is refused: this share of the rate that held before it (creeping up on
#: the quota, one hold at a time).
CREEP = 1.04
#: A probe that got this many times the proven rate through in its last second found a
#: quota that went up (measured 16-22 calls/s for 12/s, over 25 for 6 -> 20/s): it is cut
#: from that measure instead of going back.
FOUND_MORE = 2.25
#: Seconds the rate stays put after a cut.
HOLD = 4.0
#: The longest the other calls wait for the first call's reply (and its announced limits).
FIRST_REPLY_WAIT = 2.0
#: The lowest rate the model falls to (one call a minute).
FLOOR = 1 / 60
#: Learned minute limits are forgotten this many windows after their refusal.
FORGET_AFTER = 2.0
#: The most tokens one call is taken to cost (a reply claiming more is not believed).
MAX_TOKENS = 1 << 17
#: How much one new observation moves the learned token estimates.
_LEARNING_RATE = 0.25
#: The answer's tokens guessed before any answer has been seen (at most a quarter of the
#: TPM budget), so that a first call never holds the whole budget.
_FIRST_ANSWER_GUESS = 512


@attrs.frozen
class Limits:
    """The limits in force for the next admission.

    Attributes:
        interval: Seconds between two starts (``0``: none).
        burst: Calls that may start at once (with spacing after them).
        per_second: Calls in any second (``None``: no such bound). Spacing alone keeps
            to it, but not just after the rate was cut: the calls sent before still fill
            the service's last second.
        rpm: Calls per window, or ``None``.
        tpm: Tokens per window, or ``None``.
        not_before: No call starts before this time (a ``Retry-After``).
    """

    interval: float
    burst: int
    per_second: int | None
    rpm: int | None
    tpm: int | None
    not_before: float


@attrs.frozen
class Usage:
    """What a quota store counted when a refusal came (the fleet's, with Redis).

    Attributes:
        last_second: Calls admitted in the last second (refused ones excluded).
        calls: Calls in the minute window.
        tokens: Tokens in the minute window.
    """

    last_second: int
    calls: int
    tokens: int


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
        prompt = min(math.ceil(size * self._prompt_ratio), MAX_TOKENS)
        if self._completion is None:
            guess = _FIRST_ANSWER_GUESS if tpm is None else min(_FIRST_ANSWER_GUESS, tpm // 4)
            return prompt + guess, prompt
        return prompt + math.ceil(self._completion), prompt

    def learn(self, size: int, prompt_tokens: int, completion_tokens: int) -> bool:
        """Improve the estimate from a settled call; ``False`` when it taught nothing."""
        if size <= 0 or not 0 <= prompt_tokens <= MAX_TOKENS:
            return False
        if not 0 <= completion_tokens <= MAX_TOKENS:
            return False
        ratio = min(prompt_tokens / size, 4.0)  # a token is never less than a quarter byte
        if self._completion is None:
            self._prompt_ratio, self._completion = ratio, float(completion_tokens)
        else:
            self._prompt_ratio += _LEARNING_RATE * (ratio - self._prompt_ratio)
            self._completion += _LEARNING_RATE * (completion_tokens - self._completion)
        return True


class QuotaModel:
    """The learned and configured limits of one client (and its copies).

    Args:
        limits: The user's limits: ceilings, and whether to adapt.
        clock: The time source (the event loop's, in a client).
        window: The length of the minute windows in seconds (shorter in tests).
    """

    def __init__(
        self, limits: RateLimits, *, clock: Callable[[], float], window: float = 60.0
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.window = window
        self.adaptive: bool = limits.adaptive
        ceiling = limits.qps
        start = INITIAL_RATE if ceiling is None else min(INITIAL_RATE, ceiling)
        #: The learned calls per second (``inf``: nothing to learn, no ceiling).
        self.rate: float = (start if self.adaptive else ceiling) or math.inf
        #: Counts the cuts; a refusal of a call admitted before the last one is ignored.
        self.epoch: int = 0
        self._hold_until = -math.inf
        self._cut_at = -math.inf
        #: The rate set by the last cut: proven good if its hold passed without a refusal.
        self._proven: float | None = None
        #: Whether the last cut came during a hold (the quota is below what it measured).
        self._held_cut = False
        self._announced_rpm: int | None = None
        self._announced_tpm: int | None = None
        self._learned_rpm: int | None = None
        self._learned_tpm: int | None = None
        self._forget_rpm = math.inf
        self._forget_tpm = math.inf
        self._not_before = -math.inf
        self._seen_reply = not (limits.adopt_server_limits or self.adaptive)
        self._first_at = math.inf  # when the first call was admitted
        self.estimate: TokenEstimate = TokenEstimate()
        #: What the fleet has yet to hear (a shared store sends and clears these).
        self.grown: float = 0.0
        self.cut: float | None = None
        #: Whether that cut only lowers the last one (no new epoch).
        self.cut_refines: bool = False

    def __repr__(self) -> str:
        return f"<QuotaModel rate={self.rate:.3g}/s rpm={self.rpm} tpm={self.tpm}>"

    # -- what is in force ------------------------------------------------------------------

    @property
    def rpm(self) -> int | None:
        """The calls-per-window limit in force: the strictest of ceiling, announced, learned."""
        if self._learned_rpm is not None and self.clock() >= self._forget_rpm:
            self._learned_rpm = None
        return _strictest(self.limits.rpm, self._announced_rpm, self._learned_rpm)

    @property
    def tpm(self) -> int | None:
        """The tokens-per-window limit in force."""
        if self._learned_tpm is not None and self.clock() >= self._forget_tpm:
            self._learned_tpm = None
        return _strictest(self.limits.tpm, self._announced_tpm, self._learned_tpm)

    @property
    def not_before(self) -> float:
        """No call starts before this time (a ``Retry-After``), as in :meth:`current`."""
        return self._not_before

    def first_reply_wait(self) -> float:
        """How long a call waits for the first reply (which may announce the real limits).

        Calls go one at a time until the first reply, for at most :data:`FIRST_REPLY_WAIT`
        seconds (a first call that hangs does not hold the others for longer).
        """
        if self._seen_reply:
            return 0.0
        left = self._first_at + FIRST_REPLY_WAIT - self.clock()
        if left <= 0:
            self._seen_reply = True
            return 0.0
        return left

    def current(self) -> Limits:
        """The limits the next admission must respect."""
        rate = self.rate
        finite = not math.isinf(rate)
        # A burst only while nothing was ever refused and no ceiling was given: the quota is
        # unknown, and may be none (a ceiling's calls are evenly spaced).
        unknown = self.adaptive and not self.epoch and self.limits.qps is None
        burst = INITIAL_BURST if unknown else 1
        return Limits(
            1.0 / rate if finite else 0.0,
            burst,
            max(burst, math.ceil(rate)) if finite else None,
            self.rpm,
            self.tpm,
            self._not_before,
        )

    def learned(self) -> LearnedLimits:
        """What is in force now, for users to read."""
        rate = self.rate
        return LearnedLimits(
            qps=None if math.isinf(rate) else rate,
            rpm=self.rpm,
            tpm=self.tpm,
            adaptive=self.adaptive,
        )

    # -- what happened ---------------------------------------------------------------------

    def admitted(self, *, held: bool) -> None:
        """A call was admitted; ``held``: the rate had held it back (demand exceeds it)."""
        if self._first_at == math.inf:
            self._first_at = self.clock()
        if not held or not self.adaptive or self.clock() < self._hold_until:
            return
        step = GROWTH if self.epoch else max(START_GROWTH, START_SHARE * self.rate)
        grown = min(self.rate + step, self.limits.qps or math.inf)
        self.grown += grown - self.rate
        self.rate = grown

    def replied(self, info: RateLimitInfo | None) -> None:
        """A reply came (not a refusal); adopt the limits it announced, if allowed."""
        self._seen_reply = True
        if info is not None:
            self.adopt_announced(info.limit_requests, info.limit_tokens)

    @property
    def announced(self) -> tuple[int | None, int | None]:
        """The per-minute limits (calls, tokens) the service announced, if adopted."""
        return self._announced_rpm, self._announced_tpm

    def adopt_announced(self, rpm: int | None, tpm: int | None) -> None:
        """Adopt announced per-minute limits (if the user allows it)."""
        if not self.limits.adopt_server_limits:
            return
        if rpm:
            self._announced_rpm = rpm
        if tpm:
            self._announced_tpm = tpm

    def refused(
        self,
        kind: QuotaKind | None,
        *,
        epoch: int,
        usage: Usage,
        retry_after: float | None = None,
    ) -> None:
        """A quota refused a call admitted in ``epoch``; learn what it means.

        Args:
            kind: The quota that refused (``None``: unknown, taken as per second).
            epoch: The model's epoch when the call was admitted.
            usage: What the store counted (the refused call left out).
            retry_after: The service's ``Retry-After``, if it sent one.
        """
        now = self.clock()
        self._seen_reply = True
        if retry_after is not None and retry_after > 0:
            self._not_before = max(self._not_before, now + min(retry_after, self.window))
        if kind is QuotaKind.DAY or kind is QuotaKind.TOTAL:
            return  # raised at once: nothing to learn about rates
        if not self.adaptive:
            # Nothing learned per second; without a Retry-After, the service's second
            # passes first (and its minute's share, for a minute quota).
            pause = 1.0 if kind is None or kind is QuotaKind.SECOND else self.window / 12
            self._not_before = max(self._not_before, now + pause)
        if kind is QuotaKind.MINUTE:
            if self.limits.adopt_server_limits:
                self._learned_rpm = max(1, usage.calls)
                self._forget_rpm = now + FORGET_AFTER * self.window
            return
        if kind is QuotaKind.TOKENS:
            if self.limits.adopt_server_limits:
                self._learned_tpm = max(1, usage.tokens)
                self._forget_tpm = now + FORGET_AFTER * self.window
            return
        if not self.adaptive:
            return
        if epoch != self.epoch:
            self._refine(now, epoch, usage.last_second)
            return
        self._cut(now, usage.last_second)

    def _refine(self, now: float, epoch: int, measured: int) -> None:
        """A call in flight at the last cut was refused too: lower that cut, if need be.

        No new cut (the cut answered it), but the call has left the last second's count, so
        the count is closer to the quota. A burst's refusals come this way: 16 calls sent at
        once to a 12/s quota count 15, then 14, 13, 12 as their refusals arrive.
        """
        if epoch != self.epoch - 1 or now - self._cut_at > REFINE_WITHIN or measured < 1:
            return
        refined = max(FLOOR, MARGIN * measured)
        if refined < self.rate:
            if self.cut is None:  # (a cut the fleet has yet to hear stays one)
                self.cut_refines = True
            self.rate = self._proven = self.cut = refined

    def _cut(self, now: float, measured: int) -> None:
        """Lower the rate after a per-second refusal, and hold it there."""
        rate, proven = self.rate, self._proven
        probed = (
            now >= self._hold_until
            and proven is not None
            and proven < rate
            and measured <= FOUND_MORE * proven
        )
        if probed and proven is not None:
            # A probe above a rate that held for a whole hold was refused: go back to just
            # above that rate (the service's window let the probe's first calls through, so
            # the calls counted in the last second overstate the quota).
            target = CREEP * proven
        else:
            target = rate
            if self._held_cut and now - self._cut_at < HOLD:
                target = BACKOFF * rate  # the last cut, by measure, did not suffice
        if measured >= 1:
            target = min(target, MARGIN * measured)
        self.rate = max(FLOOR, min(target, MARGIN * rate))
        self._proven = self.rate  # proven once its hold passes without a refusal
        self._held_cut = not probed
        self.cut, self.cut_refines = self.rate, False
        self.epoch += 1
        self._cut_at = now
        self._hold_until = now + HOLD

    def adopt(self, rate: float, epoch: int) -> None:
        """Take the fleet's rate and epoch (from a shared store)."""
        if not self.adaptive or not rate > 0 or math.isinf(rate):
            return
        fleet_cut = epoch != self.epoch
        if fleet_cut:
            self._hold_until = self.clock() + HOLD  # another process cut it
            self._cut_at = self.clock()
            self.epoch = epoch
        self.rate = min(max(FLOOR, rate), self.limits.qps or math.inf)
        if fleet_cut:
            self._proven = self.rate

    def learn(self, size: int, prompt_tokens: int, completion_tokens: int) -> None:
        """Improve the token estimate from a settled call."""
        self.estimate.learn(size, prompt_tokens, completion_tokens)

    def charge(self, tokens: int) -> int:
        """The tokens a settled call is charged: never more than one call can cost."""
        return max(0, min(tokens, MAX_TOKENS, self.tpm or MAX_TOKENS))


def _strictest(*limits: int | None) -> int | None:
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None
