"""The measuring side: ``python -m benchmarks._worker SPEC_JSON``, one fresh process each.

It prints one line, ``BENCH-RESULT {json}``, with what it measured. CPU is
``time.process_time()`` of this process (all its threads); the server's CPU over the same
interval comes from ``/proc`` so the parent can tell when the server was the bottleneck.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable

from benchmarks._clients import API_KEY, CLIENTS, MESSAGES, SECRET_KEY, Adapter
from benchmarks._server import CLK_TCK, machine_busy, process_cpu

RESULT_PREFIX = "BENCH-RESULT "

#: Rounds done at most beyond the requested ones, to replace rounds disturbed by others.
EXTRA_ROUNDS = 2
#: Other processes using less than this share of a core leave a round "quiet".
QUIET = 0.15

Gather = Callable[[int, Callable[[], Awaitable[None]]], Awaitable[None]]


async def _gather_asyncio(n: int, worker: Callable[[], Awaitable[None]]) -> None:
    await asyncio.gather(*(worker() for _ in range(n)))


async def _gather_trio(n: int, worker: Callable[[], Awaitable[None]]) -> None:
    import trio

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(worker)


async def _drive(
    gather: Gather, call: Callable[[], Awaitable[int | None]], conc: int, calls: int
) -> int:
    """Make ``calls`` calls from ``conc`` worker tasks; return the chunks received."""
    remaining = calls
    chunks = 0

    async def worker() -> None:
        nonlocal remaining, chunks
        while remaining > 0:
            remaining -= 1
            got = await call()  # awaited first: "chunks += await ..." would lose updates
            chunks += got or 0

    await gather(min(conc, calls), worker)
    return chunks


async def cpu_seconds(
    call: Callable[[], Awaitable[int | None]], conc: int, calls: int, chunks_each: int
) -> float:
    """Client CPU seconds of ``calls`` calls from ``conc`` asyncio tasks (chunks checked)."""
    gc.collect()
    cpu0 = time.process_time()
    chunks = await _drive(_gather_asyncio, call, conc, calls)
    cpu = time.process_time() - cpu0
    if chunks != calls * chunks_each:
        raise RuntimeError(f"{chunks} chunks arrived in {calls} calls")
    return cpu


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _round(
    cpu: float, wall: float, server: float | None, busy: float | None, calls: int, chunks: int
) -> dict:
    # What the rest of the machine used meanwhile: others' work on our cores skews timings.
    # /proc/stat counts in clock ticks, so a couple of ticks of slack are not "others".
    slack = 2 / CLK_TCK
    other = None if busy is None or server is None else max(0.0, busy - cpu - server - slack)
    return {
        "cpu_ms": cpu / calls * 1e3,
        "wall_ms": wall / calls * 1e3,
        "rate": calls / wall,
        "client_util": cpu / wall,
        "server_util": None if server is None else server / wall,
        "other_util": None if other is None else other / wall,
        "chunks_per_call": chunks / calls,
        "cpu_us_per_chunk": cpu / chunks * 1e6 if chunks else None,
    }


async def _cells(adapter: Adapter, spec: dict, gather: Gather) -> dict:
    server_pid = spec["server_pid"]
    pool = max(cell["conc"] for cell in spec["cells"])
    await adapter.open(spec["base_url"], max(pool, 100))
    results = []
    try:
        for cell in spec["cells"]:
            call = adapter.chat if cell["mode"] == "chat" else adapter.stream
            conc, calls = cell["conc"], cell["calls"]
            await _drive(gather, call, conc, cell["warmup"])
            rounds, quiet = [], []
            # A round during which other processes were busy is done again, a bounded
            # number of times; the median is taken over the quiet rounds when there are any.
            for _ in range(spec["rounds"] + EXTRA_ROUNDS):
                gc.collect()
                server0, busy0 = process_cpu(server_pid), machine_busy()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                chunks = await _drive(gather, call, conc, calls)
                wall = time.perf_counter() - wall0
                cpu = time.process_time() - cpu0
                server = _delta(server0, process_cpu(server_pid))
                busy = _delta(busy0, machine_busy())
                expected = calls * spec["chunks"] if cell["mode"] == "stream" else 0
                if chunks != expected:
                    raise RuntimeError(f"{chunks} chunks arrived, expected {expected}")
                measured = _round(cpu, wall, server, busy, calls, chunks)
                rounds.append(measured)
                if measured["other_util"] is None or measured["other_util"] < QUIET:
                    quiet.append(measured)
                if len(quiet) >= spec["rounds"]:
                    break
            chosen = sorted(quiet or rounds, key=lambda r: r["cpu_ms"])
            median = dict(chosen[len(chosen) // 2])
            median["rounds_cpu_ms"] = [r["cpu_ms"] for r in rounds]
            median["quiet_rounds"] = len(quiet)
            results.append({**cell, **median})
        transport = adapter.describe()
    finally:
        await adapter.close()
    return {"cells": results, "transport": transport}


async def _many_streams(spec: dict, gather: Gather) -> dict:
    """``n`` streams started at once through one client; how many completed, peak RSS."""
    import mpt_async

    n, expected = spec["streams"], spec["chunks"]
    client = mpt_async.Client(
        auth=mpt_async.AccessTokenAuth(API_KEY, SECRET_KEY),
        base_url=spec["base_url"],
        max_connections=spec["pool"],
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open_now = peak = complete = 0
    errors: list[str] = []

    async def one() -> None:
        nonlocal open_now, peak, complete
        count, last = 0, None
        try:
            async with client.chat_stream(MESSAGES) as stream:
                open_now += 1
                peak = max(peak, open_now)
                try:
                    async for chunk in stream:
                        count += 1
                        last = chunk
                finally:
                    open_now -= 1
        except Exception as exc:
            errors.append(repr(exc)[:200])
            return
        if count == expected and last is not None and last.is_end:
            complete += 1
        else:
            errors.append(f"{count} chunks, is_end={getattr(last, 'is_end', None)}")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with client:
        await gather(n, one)
    return {
        "runtime": spec.get("runtime", "asyncio"),
        "streams": n,
        "complete": complete,
        "peak_open": peak,
        "errors": len(errors),
        "first_errors": sorted(set(errors))[:5],
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pool": spec["pool"],
    }


def raise_open_files_limit() -> None:
    """As many open files as allowed: 10,000 streams need 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_async(runtime: str, job: Callable[[Gather], Awaitable[dict]]) -> dict:
    if runtime == "trio":
        import trio

        return trio.run(job, _gather_trio)
    return asyncio.run(job(_gather_asyncio))


def run(spec: dict) -> dict:
    """Do what ``spec["task"]`` says and return the measurements."""
    if spec["task"] == "many_streams":
        raise_open_files_limit()
        return _run_async(spec.get("runtime", "asyncio"), functools.partial(_many_streams, spec))
    if spec["task"] == "telemetry":
        from benchmarks import _telemetry

        return _telemetry.worker(spec)
    if spec["task"] == "paired":
        from benchmarks import _paired

        return _paired.worker(spec)
    if spec["task"] == "v2":
        from benchmarks import _v2

        return _v2.worker(spec)
    if spec["task"] == "httpx_aiohttp":
        from benchmarks import _httpx_aiohttp

        return _httpx_aiohttp.worker(spec)
    if spec["task"] == "decode_replay":
        from benchmarks import _decode

        return _decode.main(spec)
    adapter: Adapter = CLIENTS[spec["client"]]()
    if spec["task"] == "profile":
        from benchmarks._profile import profile_cells

        return _run_async(adapter.runtime, functools.partial(profile_cells, adapter, _drive, spec))
    return _run_async(adapter.runtime, functools.partial(_cells, adapter, spec))


def main() -> None:
    """Entry point: the spec is the first argument, as JSON."""
    spec = json.loads(sys.argv[1])
    result = run(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
