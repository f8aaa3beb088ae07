"""The quota model and its in-process store, on a clock the tests move: no sockets, no sleeps."""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Callable

import pytest

from mpt_async import LearnedLimits, QuotaKind, RateLimitInfo, RateLimits
from mpt_async._quota_model import (
    BACKOFF,
    CREEP,
    FOUND_MORE,
    GROWTH,
    HOLD,
    INITIAL_BURST,
    INITIAL_RATE,
    MARGIN,
    MAX_TOKENS,
    REFINE_WITHIN,
    START_GROWTH,
    START_SHARE,
    QuotaModel,
    Usage,
)
from mpt_async._quota_store import MemoryQuotaStore


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model_and_store(
    limits: RateLimits | None = None, window: float = 60.0
) -> tuple[Clock, QuotaModel, MemoryQuotaStore]:
    clock = Clock()
    model = QuotaModel(limits or RateLimits(), clock=clock, window=window)
    return clock, model, MemoryQuotaStore(model)


def usage(last_second: int, calls: int = 0, tokens: int = 0) -> Usage:
    return Usage(last_second, calls, tokens)


# -- the learned rate ------------------------------------------------------------------


def test_a_fresh_model_starts_cautiously_and_lets_the_first_calls_go() -> None:
    """A fresh model lets INITIAL_BURST calls go at once, then INITIAL_RATE a second."""
    _, model, store = model_and_store()
    assert model.rate == INITIAL_RATE
    for _ in range(INITIAL_BURST):
        assert store.take_now(model.current(), 10).wait == 0
    assert store.take_now(model.current(), 10).wait == pytest.approx(1 / INITIAL_RATE)


def test_no_burst_once_a_quota_refused() -> None:
    """After a cut, calls are spaced from the first: the quota is known."""
    _, model, store = model_and_store()
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(10))
    assert store.take_now(model.current(), 10).wait == 0
    assert store.take_now(model.current(), 10).wait == pytest.approx(1 / model.rate)


def test_slow_start_grows_only_while_calls_are_held() -> None:
    """Each call the rate held back adds START_GROWTH; calls that never waited add nothing."""
    _, model, _ = model_and_store()
    model.admitted(held=False)
    assert model.rate == INITIAL_RATE
    for _ in range(5):
        model.admitted(held=True)
    assert model.rate == INITIAL_RATE + 5 * START_GROWTH


def test_slow_start_grows_by_a_share_of_a_high_rate() -> None:
    """Above START_GROWTH / START_SHARE a second, each held call adds START_SHARE of the rate."""
    _, model, _ = model_and_store()
    model.rate = 1000.0
    assert START_SHARE * model.rate > START_GROWTH  # (so that the fixed step is not the one)
    model.admitted(held=True)
    assert model.rate == pytest.approx(1000.0 * (1 + START_SHARE))
    held = 1
    while model.rate < 2000.0:
        model.admitted(held=True)
        held += 1
    # Doubling takes 23 held calls (the fixed step would take 250).
    assert held == math.ceil(math.log(2) / math.log(1 + START_SHARE))


def test_a_refusal_cuts_to_what_was_measured() -> None:
    """A per-second refusal sets the rate to MARGIN times the calls of the last second."""
    _, model, _ = model_and_store()
    model.rate = 40.0
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(12))
    assert model.rate == pytest.approx(MARGIN * 12)
    assert model.epoch == 1


def test_refusals_of_a_burst_in_flight_refine_the_cut() -> None:
    """A burst's later refusals lower the cut to what the count fell to, in one epoch."""
    clock, model, _ = model_and_store()
    model.rate = 40.0
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(15))
    for left in (14, 13, 12):
        clock.now += 0.01
        model.refused(QuotaKind.SECOND, epoch=0, usage=usage(left))
    assert model.rate == pytest.approx(MARGIN * 12)
    assert model.epoch == 1
    clock.now += REFINE_WITHIN + 0.1  # later stragglers say nothing new
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(5))
    assert model.rate == pytest.approx(MARGIN * 12)


def test_refusals_of_calls_admitted_before_a_cut_are_ignored() -> None:
    """One cut per epoch: the calls already sent when it came say nothing new."""
    _, model, _ = model_and_store()
    model.rate = 40.0
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(12))
    rate = model.rate
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(12))
    assert model.rate == rate


def test_a_cut_that_did_not_suffice_backs_off() -> None:
    """A refusal of a call admitted after a recent cut cuts by BACKOFF (a limit went down)."""
    clock, model, _ = model_and_store()
    model.rate = 12.0
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(12))
    first = model.rate
    clock.now += 0.5
    model.refused(QuotaKind.SECOND, epoch=1, usage=usage(12))
    assert model.rate == pytest.approx(BACKOFF * first)


def test_the_rate_holds_after_a_cut_then_probes() -> None:
    """No growth for HOLD seconds after a cut; growth again after."""
    clock, model, _ = model_and_store()
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(10))
    held = model.rate
    model.admitted(held=True)
    assert model.rate == held
    clock.now += HOLD
    model.admitted(held=True)
    assert model.rate == held + GROWTH


def probed_above(clock: Clock, model: QuotaModel, proven_last_second: int) -> float:
    """Cut once, let the hold pass without a refusal, probe: the proven rate."""
    model.rate = 40.0
    model.refused(QuotaKind.SECOND, epoch=0, usage=usage(proven_last_second))
    proven = model.rate
    clock.now += HOLD + 0.1
    for _ in range(30):
        model.admitted(held=True)
    assert model.rate > proven
    return proven


def test_a_refused_probe_goes_back_to_just_above_the_proven_rate() -> None:
    """A probe refused near the proven rate goes back to CREEP times it, not to the burst."""
    clock, model, _ = model_and_store()
    proven = probed_above(clock, model, 6)
    # The service's window let the probe's first calls through: 9 in the last second.
    model.refused(QuotaKind.SECOND, epoch=1, usage=usage(9))
    assert model.rate == pytest.approx(CREEP * proven)
    assert model.rate < MARGIN * 9


def test_a_probe_that_found_much_more_is_cut_by_measure() -> None:
    """A probe that got FOUND_MORE times the proven rate through found a quota gone up."""
    clock, model, _ = model_and_store()
    proven = probed_above(clock, model, 6)
    through = math.ceil(FOUND_MORE * proven) + 1
    model.refused(QuotaKind.SECOND, epoch=1, usage=usage(through))
    assert model.rate == pytest.approx(MARGIN * through)
    assert model.rate > 2 * proven


def test_a_refusal_in_the_hold_after_a_probe_cuts_by_measure_without_backoff() -> None:
    """The rate a probe went back to is refused in its hold: cut by measure, not BACKOFF."""
    clock, model, _ = model_and_store()
    probed_above(clock, model, 6)
    model.refused(QuotaKind.SECOND, epoch=1, usage=usage(9))
    back = model.rate
    clock.now += 1.0
    model.refused(QuotaKind.SECOND, epoch=2, usage=usage(6))
    assert model.rate == pytest.approx(min(MARGIN * 6, MARGIN * back))


def test_ceilings_cap_learning_and_adaptation_can_be_turned_off() -> None:
    """RateLimits.qps is a ceiling over the learned rate; adaptive=False learns nothing."""
    _, model, _ = model_and_store(RateLimits(qps=5))
    assert model.rate == 5
    for _ in range(10):
        model.admitted(held=True)
    assert model.rate == 5
    _, fixed, _ = model_and_store(RateLimits(adaptive=False))
    assert fixed.rate == math.inf
    assert fixed.current().interval == 0
    fixed.refused(QuotaKind.SECOND, epoch=0, usage=usage(3))
    assert fixed.rate == math.inf
    assert fixed.learned() == LearnedLimits(qps=None, rpm=None, tpm=None, adaptive=False)


def test_daily_and_total_quotas_teach_nothing() -> None:
    """A daily or total refusal (raised at once) leaves the rate alone."""
    _, model, _ = model_and_store()
    for kind in (QuotaKind.DAY, QuotaKind.TOTAL):
        model.refused(kind, epoch=0, usage=usage(1))
    assert model.rate == INITIAL_RATE
    assert model.epoch == 0


# -- minute quotas ---------------------------------------------------------------------


def test_announced_limits_are_adopted_under_the_ceilings() -> None:
    """X-Ratelimit-Limit-* set the minute limits, the user's stricter ceilings win."""
    _, model, _ = model_and_store(RateLimits(rpm=50))
    model.replied(RateLimitInfo(limit_requests=100, limit_tokens=9000))
    assert (model.rpm, model.tpm) == (50, 9000)
    _, ignoring, _ = model_and_store(RateLimits(adopt_server_limits=False))
    ignoring.replied(RateLimitInfo(limit_requests=100))
    assert ignoring.rpm is None


def test_a_minute_refusal_teaches_the_window_then_is_forgotten() -> None:
    """336501 sets rpm to the calls the window held; two windows later it is forgotten."""
    clock, model, _ = model_and_store(window=10.0)
    model.refused(QuotaKind.MINUTE, epoch=0, usage=usage(3, calls=7))
    assert model.rpm == 7
    assert model.rate == INITIAL_RATE  # a minute quota is not a per-second one
    model.refused(QuotaKind.TOKENS, epoch=0, usage=usage(3, calls=7, tokens=900))
    assert model.tpm == 900
    clock.now += 20.0
    assert (model.rpm, model.tpm) == (None, None)


def test_a_retry_after_pauses_every_call() -> None:
    """A refusal's Retry-After holds every call back (at most a window)."""
    clock, model, store = model_and_store()
    model.refused(None, epoch=0, usage=usage(1), retry_after=0.5)
    assert store.take_now(model.current(), 10).wait == pytest.approx(0.5)
    model.refused(None, epoch=5, usage=usage(1), retry_after=3600)
    assert model.current().not_before <= clock.now + 60


def test_a_huge_usage_is_clamped() -> None:
    """A reply claiming 10^9 tokens costs at most MAX_TOKENS (and at most the TPM)."""
    _, model, _ = model_and_store()
    assert model.charge(10**9) == MAX_TOKENS
    model.replied(RateLimitInfo(limit_tokens=5000))
    assert model.charge(10**9) == 5000
    assert not model.estimate.learn(100, 10, 10**9)
    cost, _ = model.estimate(100, model.tpm)
    assert cost < 5000


# -- the store -------------------------------------------------------------------------


def test_the_store_spaces_calls_and_keeps_to_a_second_after_a_cut() -> None:
    """Calls start 1/rate apart; after a cut, the last second's calls still count."""
    clock, model, store = model_and_store(RateLimits(qps=10, adaptive=False))
    starts = []
    while len(starts) < 10:
        grant = store.take_now(model.current(), 1)
        if grant.wait > 0:
            clock.now += grant.wait
        else:
            starts.append(clock.now)
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(starts))
    clock.now += 0.1  # the schedule's next start
    cut = QuotaModel(RateLimits(), clock=clock)
    cut.rate, cut.epoch = 3.0, 1  # cut once: no burst
    grant = store.take_now(cut.current(), 1)  # the same log: ten calls in the last second
    # Three a second, and the last second holds ten: wait until only two are left in it.
    assert grant.wait == pytest.approx(starts[-3] + 1.0 + 0.02 - clock.now)  # and its margin


def test_the_store_keeps_rpm_and_tpm_windows() -> None:
    """At rpm=2 a third call waits a window (and its margin) after the first's start."""
    _, model, store = model_and_store(
        RateLimits(rpm=2, tpm=100, adaptive=False, adopt_server_limits=False), window=10.0
    )
    first = store.take_now(model.current(), 30)
    store.take_now(model.current(), 30)
    assert store.take_now(model.current(), 30).wait == pytest.approx(10.0 * 1.02)
    store.settle(first.handle, -1)  # refused: it does not count
    assert store.usage() == Usage(1, 1, 30)
    big = store.take_now(model.current(), 90)  # 30 + 90 > 100: waits for the other
    assert big.wait == pytest.approx(10.0 * 1.02)


def test_a_refused_call_leaves_the_counts() -> None:
    """settle(-1) removes a call from every window; a later settle changes nothing."""
    _, model, store = model_and_store(RateLimits(adaptive=False))
    grant = store.take_now(model.current(), 50)
    assert store.usage() == Usage(1, 1, 50)
    store.settle(grant.handle, -1)
    store.settle(grant.handle, 70)
    assert store.usage() == Usage(0, 0, 0)


# -- against a strict quota, simulated -------------------------------------------------


def simulate(
    limit: Callable[[float], float], *, calls: int | None = None, seconds: float = 3600
) -> list[tuple[float, bool, float]]:
    """Saturated callers against a strict sliding-second quota; (start, accepted, rate)."""
    clock, model, store = model_and_store()
    accepted: collections.deque[float] = collections.deque()
    log: list[tuple[float, bool, float]] = []
    held = False
    while clock.now - 1000 < seconds and (calls is None or sum(ok for _, ok, _ in log) < calls):
        grant = store.take_now(model.current(), 10)
        if grant.wait > 0:
            held = held or grant.reason == "rate"
            clock.now += grant.wait
            continue
        model.admitted(held=held)
        epoch, held = model.epoch, False
        arrival = clock.now + 0.005
        while accepted and accepted[0] <= arrival - 1:
            accepted.popleft()
        ok = len(accepted) < limit(clock.now - 1000)
        if ok:
            accepted.append(arrival)
            model.replied(None)
            store.settle(grant.handle, 10)
        else:
            store.settle(grant.handle, -1)
            model.refused(QuotaKind.SECOND, epoch=epoch, usage=store.usage())
        log.append((clock.now - 1000, ok, model.rate))
    return log


def test_a_burst_learns_a_strict_quota_it_was_never_told() -> None:
    """100 calls against 12/s: few refusals (<= 15%), done within 1.15 x ideal + 2 s."""
    log = simulate(lambda _: 12, calls=100)
    refused = sum(not ok for _, ok, _ in log)
    assert refused <= 15
    assert log[-1][0] <= 1.15 * 100 / 12 + 2


def test_a_moving_quota_is_followed_down_and_up() -> None:
    """12 -> 6 -> 20 a second: within 5 s of each move, >= 90% of it with <= 5% refused."""

    def limit(t: float) -> float:
        return 12 if t < 12 else 6 if t < 24 else 20

    log = simulate(limit, seconds=36)
    for start, quota in ((0, 12), (12, 6), (24, 20)):
        settled = [(t, ok) for t, ok, _ in log if start + 5 <= t < start + 12]
        good = sum(ok for _, ok in settled)
        assert good / 7 >= 0.9 * quota
        assert (len(settled) - good) <= 0.05 * len(settled)
