"""The ``priority`` section: live calls before a batch, in one process and across two.

The emulator refuses chat calls over ``LIMIT`` a second (a bucket of one second's calls,
refilled continuously), a limit the clients are never given. A batch of ``BATCH`` calls
(``client.batch(..., concurrency=32)``) runs while one live ``chat()`` starts every
``EVERY`` seconds, until the batch ends:

- **one process**: the batch and the live calls through one ``Client`` (default settings);
- **two processes**: the batch in one, the live calls in the other, each a ``Client`` with
  ``RateLimits(shared=RedisStore(...))`` on one ``redis-server`` this section starts;

each on asyncio and on trio (both processes on the same one). Reported: every call
answered, the live calls' latency (p95 target: two places at the limit plus 50 ms), and the
batch's share of the capacity the live calls leave: batch calls answered / (``LIMIT`` x (the
batch's time + 1 s, the bucket full at its start) - live calls answered), target 90%.

Run alone: ``python -m benchmarks --sections priority``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from benchmarks._processes import NO_REDIS, redis_server, result, say, spawn, start_together, stop
from benchmarks._section import Context, Row, target, verdict

LIMIT = 12.0
BATCH = 400
CONCURRENCY = 32
EVERY = 1.5
#: The live latency p95 target, in seconds: two places at the limit, and 50 ms.
P95_TARGET = 2 / LIMIT + 0.05
SHARE_TARGET = 0.9
RESULT = "PRIORITY-RESULT "
RUNTIMES = ("asyncio", "trio")
HI = [{"role": "user", "content": "Hi"}]


# -- the worker (``python -m benchmarks._priority '{json}'``) ------------------------------


async def _batch(client: Any, calls: int) -> dict[str, Any]:
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(calls)]
    answered = failed = 0
    started = time.monotonic()
    async with client.batch(prompts, concurrency=CONCURRENCY) as results:
        async for result in results:
            if result.error is None:
                answered += 1
            else:
                failed += 1
    return {"answered": answered, "failed": failed, "seconds": time.monotonic() - started}


async def _live(client: Any, stop: Any) -> dict[str, Any]:
    import anyio

    import mpt_async

    latencies: list[float] = []
    failed: list[str] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            await client.chat(HI)
        except mpt_async.MPTError as exc:
            failed.append(type(exc).__name__)
        else:
            latencies.append(time.perf_counter() - started)

    async with anyio.create_task_group() as tg:
        while not stop.is_set():
            tg.start_soon(one)
            with anyio.move_on_after(EVERY):
                await stop.wait()
    return {"latencies": latencies, "failed": failed}


async def _role(client: Any, role: str, calls: int) -> dict[str, Any]:
    """Run ``role`` ("both", "batch" or "live") once the parent says go."""
    import anyio

    stop = anyio.Event()
    out: dict[str, Any] = {}

    async def batch() -> None:
        out["batch"] = await _batch(client, calls)
        stop.set()

    async def live() -> None:
        out["live"] = await _live(client, stop)

    async def stop_on_a_line() -> None:
        await anyio.to_thread.run_sync(sys.stdin.readline)
        stop.set()

    await anyio.to_thread.run_sync(sys.stdin.readline)  # go
    async with anyio.create_task_group() as tg:
        if role in ("both", "batch"):
            tg.start_soon(batch)
        if role in ("both", "live"):
            tg.start_soon(live)
        if role == "live":
            tg.start_soon(stop_on_a_line)
    return out


async def _work(spec: dict[str, Any]) -> dict[str, Any]:
    import mpt_async

    async with AsyncExitStack() as stack:
        limits = None
        if spec.get("url"):
            store = mpt_async.RedisStore(spec["url"], prefix=spec["prefix"])
            await stack.enter_async_context(store)
            limits = mpt_async.RateLimits(shared=store)
        client = mpt_async.Client(
            auth=mpt_async.AccessTokenAuth(spec["api_key"], spec["secret_key"]),
            base_url=spec["base_url"],
            rate_limits=limits,
        )
        await stack.enter_async_context(client)
        await client.chat(HI)  # the token, the connection, the script loaded
        print("ready", flush=True)
        return await _role(client, spec["role"], spec["calls"])


# -- the section ---------------------------------------------------------------------------


def _spawn(spec: dict[str, Any], ctx: Context) -> subprocess.Popen[str]:
    return spawn("benchmarks._priority", spec, ctx.scratch)


def _one_run(ctx: Context, base: dict[str, Any], runtime: str, url: str | None) -> dict[str, Any]:
    """One run: both roles in one process (no ``url``), or two processes on Redis."""
    ctx.emu.reset()
    ctx.emu.control("POST", "config", {"qps": LIMIT})
    spec = {**base, "backend": runtime, "url": url, "prefix": f"prio-{runtime}"}
    spec["calls"] = BATCH // 4 if ctx.args.quick else BATCH
    roles = ["batch", "live"] if url else ["both"]
    procs = [_spawn({**spec, "role": role}, ctx) for role in roles]
    try:
        start_together(procs)
        out = result(procs[0], 600, RESULT)
        if url:
            say(procs[1], "stop")  # the batch is over
            out |= result(procs[1], 60, RESULT)
        out["refusals"] = ctx.emu.stats().get("error_responses")
    finally:
        stop(procs)
        ctx.emu.control("POST", "config", {"qps": None})
    return _summary(out, spec["calls"])


def _summary(out: dict[str, Any], calls: int) -> dict[str, Any]:
    batch, live = out["batch"], out["live"]
    latencies = sorted(live["latencies"])
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []
    leftover = LIMIT * (batch["seconds"] + 1) - len(latencies)
    return {
        "batch_calls": calls,
        "batch_answered": batch["answered"],
        "batch_failed": batch["failed"],
        "batch_seconds": batch["seconds"],
        "live_answered": len(latencies),
        "live_calls": len(latencies) + len(live["failed"]),
        "live_failed": live["failed"],
        "live_p50": q[49] if q else None,
        "live_p95": q[94] if q else None,
        "live_max": latencies[-1] if latencies else None,
        "share": batch["answered"] / leftover if leftover > 0 else None,
        "refusals": out["refusals"],
    }


def run(ctx: Context) -> dict[str, Any]:
    """Each runtime in one process, then in two on one Redis (skipped without Redis)."""
    base = {"base_url": ctx.emu.base_url}
    base |= {"api_key": "emulator-api-key", "secret_key": "emulator-secret-key"}
    outcome: dict[str, Any] = {}
    for runtime in RUNTIMES:
        outcome[f"one process, {runtime}"] = _one_run(ctx, base, runtime, None)
        ctx.log(f"priority: one process, {runtime}: done")
    with redis_server() as url:
        if url is None:
            outcome["skipped"] = f"two processes: {NO_REDIS}"
            return outcome
        for runtime in RUNTIMES:
            outcome[f"two processes, {runtime}"] = _one_run(ctx, base, runtime, url)
            ctx.log(f"priority: two processes on one Redis, {runtime}: done")
    return outcome


def _runs(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, run) for name, run in result.items() if isinstance(run, dict)]


def targets(result: dict[str, Any]) -> list[Row]:
    """Per run: live p95, the batch's share, every call answered."""
    rows: list[Row] = []
    for name, r in _runs(result):
        p95 = None if r["live_p95"] is None else r["live_p95"] * 1000
        limit = round(P95_TARGET * 1000)
        rows.append(target(f"priority {name}: live p95 (ms)", p95, limit, "{:.0f}"))
        share = r["share"]
        rows.append(
            [
                f"priority {name}: batch's share of what live calls leave",
                "n/a" if share is None else f"{share:.2f}",
                f">= {SHARE_TARGET:g}",
                verdict(share is not None and share >= SHARE_TARGET),
            ]
        )
        got, calls = r["batch_answered"] + r["live_answered"], r["batch_calls"] + r["live_calls"]
        every = got == calls and not r["batch_failed"]
        rows.append([f"priority {name}: calls answered", f"{got}/{calls}", "all", verdict(every)])
    return rows


def markdown(result: dict[str, Any]) -> list[str]:
    """A table of the runs."""
    ms = lambda v: "n/a" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    lines = [
        "## Live calls before a batch (`priority`)",
        "",
        f"The emulator refuses calls over {LIMIT:g}/s; the clients are never told. A batch of "
        f"{BATCH} at concurrency {CONCURRENCY} runs while a live `chat()` starts every "
        f"{EVERY:g} s. Two processes: the batch in one, the live calls in the other, on one "
        "Redis. The batch's share: its calls over the capacity the live calls leave "
        f"({LIMIT:g}/s x (its time + 1 s) - live calls). Target: live p95 <= "
        f"{P95_TARGET * 1000:.0f} ms, share >= {SHARE_TARGET:.0%}.",
        "",
        "| setup | batch answered | batch time | live answered | live p50 / p95 / max "
        "| batch's share | refusals |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in _runs(result):
        share = "n/a" if r["share"] is None else f"{r['share']:.0%}"
        lines.append(
            f"| {name} | {r['batch_answered']}/{r['batch_calls']} | {r['batch_seconds']:.1f} s | "
            f"{r['live_answered']}/{r['live_calls']} | {ms(r['live_p50'])} / "
            f"{ms(r['live_p95'])} / {ms(r['live_max'])} | {share} | {r['refusals']} |"
        )
    if "skipped" in result:
        lines += ["", result["skipped"]]
    return lines


if __name__ == "__main__":
    import anyio

    os.environ.pop("MPT_ASYNC_TRANSPORT", None)
    spec = json.loads(sys.argv[1])
    measured = anyio.run(_work, spec, backend=spec["backend"])
    print(RESULT + json.dumps(measured), flush=True)
