"""The ``quota`` section: a quota the client was never told, learned.

Each runtime (asyncio, trio) runs in a worker process of its own with its own emulator, whose
QPS limit the client is never given (``Emulator(qps=12)``: a bucket of one second's calls,
refilled continuously):

- **burst**: 100 concurrent ``chat()`` calls from a fresh client with no settings;
- **moving**: 24 callers for three phases while the limit moves 12 -> 6 -> 20 per second,
  sampled every 0.5 s (accepted calls, refusals, the learned rate): the chart's data.

- **cost**: client CPU per call, the adaptive default against no limiter, in paired rounds
  of calls no quota limits, and the first call of a fresh client.

On asyncio only, **announced**: 26 concurrent calls under 20 calls a minute that each reply
announces (the model is the same on trio; this one waits a minute). And once: the **batch**
command, 300 lines at ``--concurrency 32``, against a 12/s emulator; and the **fleet**: 4
processes (2 asyncio, 2 trio) on one Redis, 60 calls each, learning a 12/s quota together.

Run alone: ``python -m benchmarks --sections quota``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._section import Context, Row, child_env, target, verdict

BURST = 100
LIMIT = 12.0
PHASES = (12.0, 6.0, 20.0)
PHASE_SECONDS = 10.0
CALLERS = 24
SAMPLE = 0.5
BATCH_LINES = 300
FLEET = ("asyncio", "trio", "asyncio", "trio")
FLEET_CALLS = 60  # per process
ANNOUNCED_RPM = 20
ANNOUNCED_CALLS = 26
COST_CALLS = 200  # calls per round
COST_ROUNDS = 30  # paired rounds
COST_WARM_UP = 10_000  # calls, at most
FIRST_CALLS = 7  # fresh clients of each kind
FLOW_CALLERS = 50  # concurrent callers of a fresh client
FLOW_RAMP = 1_500  # its first calls, not measured (the slow start)
FLOW_CALLS = 4_000  # the calls measured after them
FLOW_RUNS = 3  # fresh clients of each kind
HI = [{"role": "user", "content": "hi"}]
RESULT = "QUOTA-RESULT "


# -- the worker (one runtime) --------------------------------------------------------------


async def _concurrent(client: Any, calls: int) -> tuple[int, int]:
    """``calls`` chat calls at once: (answered, failed)."""
    import anyio

    import mpt_async

    answered = failed = 0

    async def one() -> None:
        nonlocal answered, failed
        try:
            await client.chat([{"role": "user", "content": "hi"}])
            answered += 1
        except mpt_async.MPTError:
            failed += 1

    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(one)
    return answered, failed


async def _burst(emu: Any) -> dict[str, Any]:
    import anyio

    import mpt_async

    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    async with mpt_async.Client(auth=auth, base_url=emu.base_url) as client:
        await client.chat([{"role": "user", "content": "warm the token"}])
        await anyio.sleep(1.5)  # the bucket refills: the burst meets a full quota
        before = emu.stats.error_responses
        started = time.monotonic()
        answered, failed = await _concurrent(client, BURST)
    elapsed = time.monotonic() - started
    return {
        "answered": answered,
        "failed": failed,
        "refusals": emu.stats.error_responses - before,
        "seconds": elapsed,
        "ideal": BURST / LIMIT,
    }


async def _moving(emu: Any) -> dict[str, Any]:
    import anyio

    import mpt_async

    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    answered = failed = 0
    samples: list[dict[str, float]] = []
    emu.set_rate_limits(qps=PHASES[0])
    async with mpt_async.Client(auth=auth, base_url=emu.base_url) as client:
        stop = anyio.Event()

        async def caller() -> None:
            nonlocal answered, failed
            while not stop.is_set():
                try:
                    await client.chat([{"role": "user", "content": "hi"}])
                    answered += 1
                except mpt_async.MPTError:  # noqa: PERF203 - each call's outcome counts
                    failed += 1

        async def sampler() -> None:
            started = time.monotonic()
            last_ok, last_refused = 0, emu.stats.error_responses
            for phase, limit in enumerate(PHASES):
                emu.set_rate_limits(qps=limit)
                end = started + (phase + 1) * PHASE_SECONDS
                while time.monotonic() < end:
                    await anyio.sleep(SAMPLE)
                    refused = emu.stats.error_responses
                    learned = client.learned_limits().qps
                    samples.append(
                        {
                            "t": time.monotonic() - started,
                            "limit": limit,
                            "accepted": (answered - last_ok) / SAMPLE,
                            "refused": (refused - last_refused) / SAMPLE,
                            "learned": learned if learned is not None else float("nan"),
                        }
                    )
                    last_ok, last_refused = answered, refused
            stop.set()

        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(caller)
            tg.start_soon(sampler)
    return {"answered": answered, "failed": failed, "samples": samples}


async def _announced(emu: Any) -> dict[str, Any]:
    """26 concurrent calls under a per-minute quota that each reply announces."""
    import mpt_async

    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    # The last calls wait for the minute to pass: past the default bound of a live call's
    # wait (60 s), so the bound is raised, as a caller who expects that wait would.
    timeout = mpt_async.Timeouts(quota=120)
    async with mpt_async.Client(auth=auth, base_url=emu.base_url, timeout=timeout) as client:
        started = time.monotonic()
        answered, failed = await _concurrent(client, ANNOUNCED_CALLS)
    return {
        "answered": answered,
        "failed": failed,
        "refusals": emu.stats.error_responses,
        "seconds": time.monotonic() - started,
    }


class _Waits(logging.Handler):
    """Counts the calls the limiter held back, while attached.

    From the limiter's debug line (``quota: a ... call waited``): the package's debug lines
    cost CPU, so it is attached only outside the timed rounds.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("quota: a "):
            self.count += 1

    def __enter__(self) -> _Waits:
        logger = logging.getLogger("mpt_async")
        self._level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("mpt_async")
        logger.removeHandler(self)
        logger.setLevel(self._level)


async def _calls(client: Any, calls: int) -> float:
    """This thread's CPU seconds per call over ``calls`` sequential calls.

    The thread's, not the process's: the emulator serves from a thread of this process, and
    its CPU (the same in both arms) would water the ratio down.
    """
    start = time.thread_time()
    for _ in range(calls):
        await client.chat(HI)
    return (time.thread_time() - start) / calls


async def _warm_up(client: Any) -> int:
    """Rounds of calls until one is not held back at all (the learned rate stayed): calls made.

    Sequential calls to the emulator come faster than a fresh model's rate, which grows
    while they are held (a real service answers in about a second).
    """
    made = 0
    while made < COST_WARM_UP:
        before = client.learned_limits().qps
        await _calls(client, COST_CALLS)
        made += COST_CALLS
        if client.learned_limits().qps == before:
            break
    return made


async def _first_calls(emu: Any, limits: dict[str, Any]) -> dict[str, Any]:
    """The first call of fresh clients of each kind, in alternating order: ms, and waits."""
    import statistics

    import mpt_async

    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    ms: dict[str, list[float]] = {name: [] for name in limits}
    with _Waits() as waits:
        for i in range(FIRST_CALLS):
            for name in list(limits)[:: 1 if i % 2 else -1]:
                fresh = mpt_async.Client(auth=auth, base_url=emu.base_url, rate_limits=limits[name])
                async with fresh:
                    start = time.perf_counter()
                    await fresh.chat(HI)
                    ms[name].append((time.perf_counter() - start) * 1e3)
    return {"ms": {n: statistics.median(v) for n, v in ms.items()}, "held": waits.count}


async def _paired(clients: dict[str, Any]) -> list[dict[str, float]]:
    """COST_ROUNDS rounds of each client in turn (the order rotates), CPU per call."""
    rounds = []
    names = list(clients)
    for i in range(COST_ROUNDS):
        rate = clients["default"].learned_limits().qps
        order = names[i % len(names) :] + names[: i % len(names)]
        cpu = {name: await _calls(clients[name], COST_CALLS) for name in order}
        cpu["held"] = float(clients["default"].learned_limits().qps != rate)
        rounds.append(cpu)
    return rounds


async def _flow(emu: Any, limits: Any) -> tuple[float, float]:
    """A fresh client's FLOW_CALLERS callers, non-stop: CPU per call and calls a second,
    over the calls after the first FLOW_RAMP (its slow start)."""
    import anyio

    import mpt_async

    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    done, mark = 0, [0.0, 0.0]
    async with mpt_async.Client(auth=auth, base_url=emu.base_url, rate_limits=limits) as client:

        async def caller() -> None:
            nonlocal done
            while done < FLOW_RAMP + FLOW_CALLS:
                await client.chat(HI)
                done += 1
                if done == FLOW_RAMP:
                    mark[:] = time.thread_time(), time.perf_counter()

        async with anyio.create_task_group() as tg:
            for _ in range(FLOW_CALLERS):
                tg.start_soon(caller)
        calls = done - FLOW_RAMP
        return (time.thread_time() - mark[0]) / calls, calls / (time.perf_counter() - mark[1])


async def _flows(emu: Any, limits: dict[str, Any]) -> dict[str, Any]:
    """FLOW_RUNS runs of :func:`_flow` for each kind of client, in alternating order."""
    import statistics

    runs = [
        {n: await _flow(emu, limits[n]) for n in list(limits)[:: 1 if i % 2 else -1]}
        for i in range(FLOW_RUNS)
    ]
    return {
        "cpu_us": {n: statistics.median(r[n][0] for r in runs) * 1e6 for n in limits},
        "ratio": statistics.median(r["default"][0] / r["off"][0] for r in runs),
        "pace": {n: statistics.median(r[n][1] for r in runs) for n in limits},
    }


def _spread(ratios: list[float]) -> list[float]:
    """The lowest, the quartiles and the highest."""
    import statistics

    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return [min(ratios), q1, q3, max(ratios)]


async def _cost(emu: Any) -> dict[str, Any]:
    """Client CPU per call, the adaptive default against no limiter, in paired rounds."""
    import statistics

    import mpt_async

    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    off = mpt_async.RateLimits(adaptive=False, adopt_server_limits=False)
    # "off again", a second client like "off", is the control: its ratio to "off" shows how
    # far the machine's noise alone moves a ratio.
    limits = {"default": None, "off": off, "off again": off}
    async with mpt_async.Client(auth=auth, base_url=emu.base_url) as process_warm_up:
        await process_warm_up.chat(HI)  # imports, the emulator's token: not the first call's
    first = await _first_calls(emu, {"default": None, "off": off})
    flow = await _flows(emu, {"default": None, "off": off})
    clients = {
        name: mpt_async.Client(auth=auth, base_url=emu.base_url, rate_limits=value)
        for name, value in limits.items()
    }
    with _Waits() as waits:
        warm = {name: await _warm_up(client) for name, client in clients.items()}
    rounds = await _paired(clients)
    for client in clients.values():
        await client.aclose()
    return {
        "cpu_us": {n: statistics.median(r[n] for r in rounds) * 1e6 for n in clients},
        "ratio": statistics.median(r["default"] / r["off"] for r in rounds),
        "spread": _spread([r["default"] / r["off"] for r in rounds]),
        "control": statistics.median(r["off again"] / r["off"] for r in rounds),
        "control_spread": _spread([r["off again"] / r["off"] for r in rounds]),
        "held_rounds": int(sum(r["held"] for r in rounds)),
        "warm_up": {"calls": warm, "held": waits.count},
        "flow": flow,
        "first_ms": first["ms"],
        "first_held": first["held"],
    }


def worker(runtime: str) -> dict[str, Any]:
    import anyio

    from mpt_async.testing import Emulator

    with Emulator(qps=LIMIT) as emu:
        burst = anyio.run(_burst, emu, backend=runtime)
    with Emulator(qps=PHASES[0]) as emu:
        moving = anyio.run(_moving, emu, backend=runtime)
    with Emulator() as emu:
        cost = anyio.run(_cost, emu, backend=runtime)
    result = {"burst": burst, "moving": moving, "cost": cost}
    if runtime == "asyncio":  # the model is the same on trio; this one takes a minute
        with Emulator(rpm=ANNOUNCED_RPM) as emu:
            result["announced"] = anyio.run(_announced, emu, backend=runtime)
    return result


def _batch(scratch: Path) -> dict[str, Any]:
    from mpt_async.testing import Emulator

    prompts = scratch / "quota-prompts.jsonl"
    prompts.write_text("".join(f'"question {i}"\n' for i in range(BATCH_LINES)))
    out = scratch / "quota-out.jsonl"
    out.unlink(missing_ok=True)
    with Emulator(qps=LIMIT) as emu:
        env = {**child_env(scratch), **emu.env()}
        started = time.monotonic()
        done = subprocess.run(
            [
                *(sys.executable, "-m", "mpt_async", "batch", str(prompts), "-o", str(out)),
                *("--concurrency", "32", "--no-token-cache"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        seconds = time.monotonic() - started
        refusals = emu.stats.error_responses
    answered = sum(1 for line in out.read_text().splitlines() if '"result"' in line)
    return {
        "exit": done.returncode,
        "answered": answered,
        "refusals": refusals,
        "seconds": seconds,
        "ideal": BATCH_LINES / LIMIT,
    }


def _fleet(scratch: Path) -> dict[str, Any]:
    """4 processes (asyncio, trio) on one Redis, learning a 12/s quota no one gave them."""
    from benchmarks._processes import NO_REDIS, redis_server, result, spawn, start_together, stop
    from benchmarks._worker import RESULT_PREFIX
    from mpt_async.testing import Emulator

    with redis_server() as url, Emulator(qps=LIMIT) as emu:
        if url is None:
            return {"skipped": NO_REDIS}
        spec = {
            "mode": "learn",
            "url": url,
            "prefix": "quota",
            "base_url": emu.base_url,
            "api_key": emu.api_key,
            "secret_key": emu.secret_key,
            "calls": FLEET_CALLS,
            "concurrency": 8,
        }
        module = "benchmarks._redis_worker"
        procs = [spawn(module, {**spec, "backend": b}, scratch) for b in FLEET]
        try:
            start_together(procs)
            results = [result(proc, 300, RESULT_PREFIX) for proc in procs]
        finally:
            stop(procs)
        refusals = emu.stats.error_responses
    calls = FLEET_CALLS * len(FLEET)
    return {
        "answered": sum(r["answered"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "refusals": refusals,
        "seconds": max(r["seconds"] for r in results),
        "ideal": calls / LIMIT,
        "learned": [r["learned"] for r in results],
    }


# -- the section -----------------------------------------------------------------------------


def _phase_stats(samples: list[dict[str, float]]) -> list[dict[str, float | None]]:
    """Per phase: the time to reach 90% of the new limit, the steady state after it."""
    stats: list[dict[str, float | None]] = []
    for phase, limit in enumerate(PHASES):
        start = phase * PHASE_SECONDS
        mine = [s for s in samples if start < s["t"] <= start + PHASE_SECONDS]
        reached = next((s["t"] - start for s in mine if s["accepted"] >= 0.9 * limit), None)
        steady = [s for s in mine if s["t"] - start > PHASE_SECONDS / 2]
        accepted = sum(s["accepted"] for s in steady)
        refused = sum(s["refused"] for s in steady)
        stats.append(
            {
                "limit": limit,
                "reach_90": reached,
                "steady_rate": accepted / len(steady) if steady else None,
                "steady_refusals": refused / (accepted + refused) if accepted + refused else 0.0,
            }
        )
    return stats


def _chart(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    samples = result["asyncio"]["moving"]["samples"]
    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.step(t, [s["limit"] for s in samples], where="pre", label="the service's limit", color="k")
    ax.plot(t, [s["accepted"] for s in samples], label="accepted calls/s")
    ax.plot(t, [s["learned"] for s in samples], label="learned rate", linestyle="--")
    ax.bar(t, [s["refused"] for s in samples], width=SAMPLE * 0.8, label="refusals/s", alpha=0.4)
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls per second")
    ax.set_title("24 callers, a quota never given to the client, moving 12 -> 6 -> 20 /s")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run(ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for runtime in ("asyncio", "trio"):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks._quota", runtime],
            capture_output=True,
            text=True,
            env=child_env(ctx.scratch),
            cwd=ctx.scratch,
            timeout=600,
            check=False,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT)), None)
        if line is None:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"quota worker ({runtime}) failed: {tail}")
        result[runtime] = json.loads(line[len(RESULT) :])
        result[runtime]["phases"] = _phase_stats(result[runtime]["moving"]["samples"])
    result["batch"] = _batch(ctx.scratch)
    result["fleet"] = _fleet(ctx.scratch)
    _chart(result, Path(__file__).resolve().parent.parent / "docs" / "images" / "quota.png")
    return result


def _time_row(what: str, part: dict[str, Any]) -> Row:
    limit = 1.15 * part["ideal"] + 2
    return target(f"{what}: time (s), <= 1.15 x ideal + 2", part["seconds"], limit, "{:.1f}")


def targets(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for runtime in ("asyncio", "trio"):
        burst, moving = result[runtime]["burst"], result[runtime]["moving"]
        ok = burst["failed"] == 0 and burst["answered"] == BURST
        rows.append(
            [
                f"quota {runtime}: burst answered",
                f"{burst['answered']}/{BURST}",
                f"{BURST}/{BURST}",
                verdict(ok),
            ]
        )
        rows.append(_time_row(f"quota {runtime}: burst", burst))
        rows.append(
            target(f"quota {runtime}: burst refusals / calls", burst["refusals"] / BURST, 0.15)
        )
        rows.append(
            [
                f"quota {runtime}: moving, calls failed",
                str(moving["failed"]),
                "0",
                verdict(moving["failed"] == 0),
            ]
        )
        for phase in result[runtime]["phases"][1:]:
            limit = phase["limit"]
            rows.append(
                target(
                    f"quota {runtime}: to 90% of {limit:g}/s (s)", phase["reach_90"], 5.0, "{:.1f}"
                )
            )
            rows.append(
                target(
                    f"quota {runtime}: refusals at {limit:g}/s, steady",
                    phase["steady_refusals"],
                    0.05,
                    "{:.3f}",
                )
            )
        first = result[runtime]["phases"][0]
        rows.append(
            target(
                f"quota {runtime}: refusals at 12/s, steady",
                first["steady_refusals"],
                0.03,
                "{:.3f}",
            )
        )
        rows += _cost_targets(runtime, result[runtime]["cost"])
    rows += _more_targets(result)
    batch = result["batch"]
    rows.append(
        [
            "quota batch CLI: lines answered",
            f"{batch['answered']}/{BATCH_LINES}",
            f"{BATCH_LINES}/{BATCH_LINES}",
            verdict(batch["answered"] == BATCH_LINES and batch["exit"] == 0),
        ]
    )
    rows.append(_time_row("quota batch CLI", batch))
    return rows


def _cost_targets(runtime: str, cost: dict[str, Any]) -> list[Row]:
    held = cost["first_held"]
    return [
        target(
            f"quota {runtime}: CPU per call, adaptive / none (median of paired rounds)",
            cost["ratio"],
            1.03,
            "{:.3f}",
        ),
        [
            f"quota {runtime}: fresh clients' first calls held back by the limiter",
            f"{held}/{2 * FIRST_CALLS}",
            "0",
            verdict(held == 0),
        ],
    ]


def _more_targets(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    announced = result["asyncio"].get("announced")
    if announced is not None:
        answered = announced["answered"] == ANNOUNCED_CALLS
        rows.append(
            [
                f"quota: {ANNOUNCED_CALLS} calls under an announced {ANNOUNCED_RPM}/min, answered",
                f"{announced['answered']}/{ANNOUNCED_CALLS}",
                f"{ANNOUNCED_CALLS}/{ANNOUNCED_CALLS}",
                verdict(answered),
            ]
        )
        rows.append(target("quota: announced per-minute, refusals", announced["refusals"], 1, "{}"))
    fleet = result["fleet"]
    if "skipped" not in fleet:
        calls = FLEET_CALLS * len(FLEET)
        rows.append(
            [
                f"quota: {len(FLEET)} processes on one Redis, answered",
                f"{fleet['answered']}/{calls}",
                f"{calls}/{calls}",
                verdict(fleet["answered"] == calls and fleet["failed"] == 0),
            ]
        )
        rows.append(_time_row(f"quota: {len(FLEET)} processes on one Redis", fleet))
        rows.append(target("quota: 4 processes, refusals / calls", fleet["refusals"] / calls, 0.15))
    return rows


def markdown(result: dict[str, Any]) -> list[str]:
    """The section of RESULTS.md, title included."""
    lines = [
        "## A quota never told (`quota`)",
        "",
        f"The emulator refuses calls over {LIMIT:g}/s (a bucket of one second's calls); the "
        "client is given no limit. Chart: `docs/images/quota.png`.",
        "",
        "| runtime | burst answered | burst refusals | burst time (ideal) | moving: failed |",
        "|---|---|---|---|---|",
    ]
    for runtime in ("asyncio", "trio"):
        burst, moving = result[runtime]["burst"], result[runtime]["moving"]
        lines.append(
            f"| {runtime} | {burst['answered']}/{BURST} | {burst['refusals']} | "
            f"{burst['seconds']:.1f} s ({burst['ideal']:.1f} s) | {moving['failed']} |"
        )
    lines += [
        "",
        "| runtime | limit | to 90% | steady rate | steady refusals |",
        "|---|---|---|---|---|",
    ]
    for runtime in ("asyncio", "trio"):
        for phase in result[runtime]["phases"]:
            reach = "n/a" if phase["reach_90"] is None else f"{phase['reach_90']:.1f} s"
            rate = "n/a" if phase["steady_rate"] is None else f"{phase['steady_rate']:.1f}/s"
            lines.append(
                f"| {runtime} | {phase['limit']:g}/s | {reach} | {rate} | "
                f"{phase['steady_refusals']:.1%} |"
            )
    batch = result["batch"]
    lines += [
        "",
        f"Batch CLI, {BATCH_LINES} lines at concurrency 32: {batch['answered']} answered, exit "
        f"{batch['exit']}, {batch['refusals']} refusals, {batch['seconds']:.1f} s (ideal "
        f"{batch['ideal']:.1f} s).",
        "",
        *_more_lines(result),
    ]
    return lines


def _more_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    fleet = result["fleet"]
    if "skipped" in fleet:
        lines.append(f"{len(FLEET)} processes on one Redis: skipped, {fleet['skipped']}.")
    else:
        learned = ", ".join(f"{q:.1f}" for q in fleet["learned"] if q is not None)
        lines.append(
            f"{len(FLEET)} processes (2 asyncio, 2 trio) on one Redis, {FLEET_CALLS} calls each "
            f"at concurrency 8, no limit given: {fleet['answered']} answered, {fleet['failed']} "
            f"failed, {fleet['refusals']} refusals, {fleet['seconds']:.1f} s (ideal "
            f"{fleet['ideal']:.1f} s); the rate each learned: {learned} /s."
        )
    announced = result["asyncio"].get("announced")
    if announced is not None:
        lines += [
            "",
            f"{ANNOUNCED_CALLS} concurrent calls under {ANNOUNCED_RPM} calls a minute that "
            f"replies announce (`X-Ratelimit-*`): {announced['answered']} answered, "
            f"{announced['refusals']} refusals, {announced['seconds']:.1f} s (the last "
            f"{ANNOUNCED_CALLS - ANNOUNCED_RPM} wait for the minute to pass).",
        ]
    return lines + _cost_lines(result)


def _cost_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| runtime | CPU per call, adaptive | none | ratio | its quartiles (min - max) "
        "| control: none / none | its quartiles | rounds held | first call, adaptive | none |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime in ("asyncio", "trio"):
        cost = result[runtime]["cost"]
        low, q1, q3, high = cost["spread"]
        _, c1, c3, _ = cost["control_spread"]
        lines.append(
            f"| {runtime} | {cost['cpu_us']['default']:.0f} µs | {cost['cpu_us']['off']:.0f} µs "
            f"| {cost['ratio']:.3f} | {q1:.3f} - {q3:.3f} ({low:.3f} - {high:.3f}) "
            f"| {cost['control']:.3f} | {c1:.3f} - {c3:.3f} | {cost['held_rounds']}/{COST_ROUNDS} "
            f"| {cost['first_ms']['default']:.1f} ms | {cost['first_ms']['off']:.1f} ms |"
        )
    warm = result["asyncio"]["cost"]["warm_up"]
    lines += [
        "",
        f"CPU per call: the client thread's CPU (the emulator serves from another thread of "
        f"the process) over {COST_ROUNDS} rounds of {COST_CALLS} sequential calls that no "
        "quota limits, from the default client, one with "
        "`RateLimits(adaptive=False, adopt_server_limits=False)` (none) and a second such "
        "client (the control), in rotating order; a ratio is the median of the rounds' "
        "ratios. The control shows how far the machine's noise alone moves a ratio. "
        '"Rounds held": rounds in which the default client\'s rate still grew (some call '
        "was held back: its cost is counted). Before the rounds, each client was warmed up "
        "until a round of calls was not held back at all (asyncio: "
        f"{warm['calls']['default']} calls, {warm['held']} of them held, while the learned "
        "rate caught up with calls far faster than a real service answers). First call: "
        f"the median of {FIRST_CALLS} fresh clients of each kind (their token fetch "
        "included); held back by the limiter: "
        f"{result['asyncio']['cost']['first_held']} (asyncio), "
        f"{result['trio']['cost']['first_held']} (trio).",
        "",
        *_flow_lines(result),
    ]
    return lines


def _flow_lines(result: dict[str, Any]) -> list[str]:
    parts = []
    for runtime in ("asyncio", "trio"):
        flow = result[runtime]["cost"]["flow"]
        cpu, pace = flow["cpu_us"], flow["pace"]
        parts.append(
            f"{runtime}: {cpu['default']:.0f} against {cpu['off']:.0f} µs a call (ratio "
            f"{flow['ratio']:.3f}), {pace['default']:.0f} against {pace['off']:.0f} calls a "
            "second"
        )
    return [
        f"Concurrent callers, for information: a fresh client's {FLOW_CALLERS} callers call "
        f"non-stop; measured over the {FLOW_CALLS} calls after its first {FLOW_RAMP} (the "
        f"slow start), the median of {FLOW_RUNS} fresh clients of each kind, in alternating "
        f"order (noisier than the rounds above): {'; '.join(parts)}.",
        "",
    ]


if __name__ == "__main__":
    os.environ.pop("MPT_ASYNC_TRANSPORT", None)
    measured = worker(sys.argv[1])
    print(RESULT + json.dumps(measured), flush=True)
