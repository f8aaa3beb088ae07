"""The ``quota`` section: a quota the client was never told, learned (issue: adaptive quota).

Each runtime (asyncio, trio) runs in a worker process of its own with its own emulator, whose
QPS limit the client is never given (``Emulator(qps=12)``: a bucket of one second's calls,
refilled continuously):

- **burst**: 100 concurrent ``chat()`` calls from a fresh client with no settings;
- **moving**: 24 callers for three phases while the limit moves 12 -> 6 -> 20 per second,
  sampled every 0.5 s (accepted calls, refusals, the learned rate): the chart's data.

And once, on asyncio: the **batch** command, 300 lines at ``--concurrency 32``, against a
12/s emulator.

Run alone: ``python -m benchmarks --sections quota``.
"""

from __future__ import annotations

import json
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
RESULT = "QUOTA-RESULT "


# -- the worker (one runtime) --------------------------------------------------------------


async def _burst(emu: Any) -> dict[str, Any]:
    import anyio

    import mpt_async

    answered = failed = 0
    auth = mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key)
    async with mpt_async.Client(auth=auth, base_url=emu.base_url) as client:
        await client.chat([{"role": "user", "content": "warm the token"}])
        await anyio.sleep(1.5)  # the bucket refills: the burst meets a full quota
        before = emu.stats.error_responses
        started = time.monotonic()

        async def one() -> None:
            nonlocal answered, failed
            try:
                await client.chat([{"role": "user", "content": "hi"}])
                answered += 1
            except mpt_async.MPTError:
                failed += 1

        async with anyio.create_task_group() as tg:
            for _ in range(BURST):
                tg.start_soon(one)
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


def worker(runtime: str) -> dict[str, Any]:
    import anyio

    from mpt_async.testing import Emulator

    with Emulator(qps=LIMIT) as emu:
        burst = anyio.run(_burst, emu, backend=runtime)
    with Emulator(qps=PHASES[0]) as emu:
        moving = anyio.run(_moving, emu, backend=runtime)
    return {"burst": burst, "moving": moving}


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
    ]
    return lines


if __name__ == "__main__":
    os.environ.pop("MPT_ASYNC_TRANSPORT", None)
    measured = worker(sys.argv[1])
    print(RESULT + json.dumps(measured), flush=True)
