"""The ``redis`` section: N processes on one shared budget, and what Redis adds to a call.

Starts its own ``redis-server`` on a free loopback port (skipped when it is not installed),
sets the emulator to enforce ``QPS`` calls a second, and runs ``PROCESSES`` worker
processes (asyncio and trio alternately) that call as fast as the shared
``RateLimits(qps=QPS, shared=RedisStore(...))`` lets them. Then one worker times
sequential calls with no limiter, the in-process limiter and the shared one.
"""

from __future__ import annotations

import subprocess
from typing import Any

from benchmarks._processes import NO_REDIS, redis_server, result, spawn, start_together, stop
from benchmarks._section import Context, Row, target, verdict
from benchmarks._worker import RESULT_PREFIX

PROCESSES = 4
QPS = 50
SECONDS = 10.0
CONCURRENCY = 8
CALLS = 500


def _spawn(spec: dict[str, Any], ctx: Context) -> subprocess.Popen[str]:
    return spawn("benchmarks._redis_worker", spec, ctx.scratch)


def _budget(ctx: Context, base: dict[str, Any]) -> dict[str, Any]:
    ctx.emu.control("POST", "config", {"qps": QPS})
    backends = ["asyncio", "trio"] * (PROCESSES // 2)
    spec = {**base, "mode": "budget", "qps": QPS, "seconds": SECONDS, "concurrency": CONCURRENCY}
    procs = [_spawn({**spec, "backend": b}, ctx) for b in backends]
    try:
        start_together(procs)
        results = [result(proc, SECONDS + 60, RESULT_PREFIX) for proc in procs]
    finally:
        stop(procs)
        ctx.emu.control("POST", "config", {"qps": None})
    times = sorted(t for r in results for t in r["answered"])
    # The steady rate: the first and last second (start-up, the token fetch) left out.
    middle = [t for t in times if times[0] + 1 <= t <= times[-1] - 1] if times else []
    span = times[-1] - times[0] - 2 if times else 0.0
    rate = len(middle) / span if span > 0 else 0.0
    shares = [len(r["answered"]) / max(1, len(times)) for r in results]
    return {
        "processes": PROCESSES,
        "qps": QPS,
        "seconds": SECONDS,
        "calls": len(times),
        "rate": rate,
        "use": rate / QPS,
        "refused": sum(r["refused"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "min_share": min(shares),
    }


def run(ctx: Context) -> dict[str, Any]:
    """Measure the shared budget and the per-call overhead (``skipped`` without Redis)."""
    with redis_server() as url:
        if url is None:
            return {"skipped": NO_REDIS}
        base = {"url": url, "prefix": "bench", "base_url": ctx.emu.base_url}
        base |= {"api_key": "emulator-api-key", "secret_key": "emulator-secret-key"}
        budget = _budget(ctx, base)
        ctx.log(f"redis: {PROCESSES} processes on one budget: done")
        spec = {**base, "mode": "overhead", "calls": CALLS}
        overhead = result(_spawn(spec, ctx), 300, RESULT_PREFIX)
        ctx.log("redis: overhead: done")
    return {"budget": budget, "overhead": overhead}


def targets(result: dict[str, Any]) -> list[Row]:
    """Shared budget used >= 0.9, with 0 refusals."""
    if "budget" not in result:
        return []
    b = result["budget"]
    return [
        [f"redis: {b['processes']} processes, qps={b['qps']}: rate / limit", f"{b['use']:.2f}",
         ">= 0.9", verdict(b["use"] >= 0.9)],
        ["redis: refusals under the shared budget", str(b["refused"]), "0",
         verdict(b["refused"] == 0)],
        *_overhead_targets(result["overhead"]),
    ]  # fmt: skip


def _overhead_targets(o: dict[str, Any]) -> list[Row]:
    """One round trip per call; client CPU per call <= 1.3 x the in-process limiter's."""
    rows: list[Row] = []
    trips = o["redis"].get("round_trips")
    if trips is not None:
        # One per call, and one flush of the owed token counts per 128 calls.
        rows.append(target("redis: round trips to Redis per call", trips, 1.01, "{:.3f}"))
    ratio = o["redis"]["cpu_us"] / o["in-process"]["cpu_us"]
    rows.append(target("redis: client CPU per call / in-process limiter's", ratio, 1.3))
    return rows


def lines(result: dict[str, Any]) -> list[str]:
    """One line on the budget, one per limiter on the overhead."""
    if "skipped" in result:
        return [f"redis: {result['skipped']}"]
    b, o = result["budget"], result["overhead"]
    out = [
        f"redis: {b['processes']} processes (asyncio, trio) on qps={b['qps']} for "
        f"{b['seconds']:.0f} s: {b['calls']} calls, {b['rate']:.1f}/s ({b['use']:.0%} of the "
        f"limit), {b['refused']} refused, smallest share {b['min_share']:.0%}"
    ]
    base = o["none"]
    for name in ("in-process", "redis"):
        m = o[name]
        out.append(
            f"redis: {name} limiter adds {m['cpu_us'] - base['cpu_us']:+.0f} µs client CPU per "
            f"call, {m['p50_ms'] - base['p50_ms']:+.2f} ms p50, "
            f"{m['p99_ms'] - base['p99_ms']:+.2f} ms p99 latency (no limiter: "
            f"{base['cpu_us']:.0f} µs, {base['p50_ms']:.2f} / {base['p99_ms']:.2f} ms)"
        )
    return out
