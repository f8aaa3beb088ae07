"""A worker process of the Redis section (``python -m benchmarks._redis_worker '{json}'``).

``"mode": "budget"``: print ``ready``, wait for a line on stdin, call for ``seconds`` with
``concurrency`` callers under one shared QPS budget; report each answer's wall-clock time
and the refusals. ``"mode": "overhead"``: sequential calls with no limiter (nothing learned,
no announced limit adopted), the in-process limiter and the shared one (limits far above the
rate, so nothing waits); report client CPU per call and latency percentiles for each.
``"mode": "learn"`` (the quota section): ``calls`` calls under a quota no one gave, learned
with the other workers through Redis.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import anyio

import mpt_async
from benchmarks._worker import RESULT_PREFIX

HI = [{"role": "user", "content": "Hi"}]
WARM_UP = 800


def _client(spec: dict[str, Any], limits: mpt_async.RateLimits | None, **kw: Any) -> Any:
    return mpt_async.Client(
        auth=mpt_async.AccessTokenAuth(spec["api_key"], spec["secret_key"]),
        base_url=spec["base_url"],
        rate_limits=limits,
        max_retries=0,
        **kw,
    )


async def _budget(spec: dict[str, Any]) -> dict[str, Any]:
    answered: list[float] = []
    refused = failed = 0
    async with mpt_async.RedisStore(spec["url"], prefix=spec["prefix"]) as store:
        limits = mpt_async.RateLimits(qps=spec["qps"], adopt_server_limits=False, shared=store)
        async with _client(spec, limits, token_store=store) as client:
            await store.load("warm-up")
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)

            async def caller() -> None:
                nonlocal refused, failed
                while True:
                    try:
                        await client.chat(HI)
                    except mpt_async.RateLimitError:  # noqa: PERF203 - each outcome
                        refused += 1
                    except mpt_async.MPTError:
                        failed += 1
                    else:
                        answered.append(time.time())

            with anyio.move_on_after(spec["seconds"]):
                async with anyio.create_task_group() as tg:
                    for _ in range(spec["concurrency"]):
                        tg.start_soon(caller)
    return {"answered": answered, "refused": refused, "failed": failed}


async def _learn(spec: dict[str, Any]) -> dict[str, Any]:
    """``calls`` calls, ``concurrency`` at a time, under a quota learned by the whole fleet."""
    answered = failed = 0
    async with mpt_async.RedisStore(spec["url"], prefix=spec["prefix"]) as store:
        limits = mpt_async.RateLimits(shared=store)  # no limit given: learned, shared
        auth = mpt_async.AccessTokenAuth(spec["api_key"], spec["secret_key"])
        async with mpt_async.Client(
            auth=auth, base_url=spec["base_url"], rate_limits=limits, token_store=store
        ) as client:
            await store.load("warm-up")
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            started = time.monotonic()
            left = spec["calls"]

            async def caller() -> None:
                nonlocal answered, failed, left
                while left > 0:
                    left -= 1
                    try:
                        await client.chat(HI)
                        answered += 1
                    except mpt_async.MPTError:
                        failed += 1

            async with anyio.create_task_group() as tg:
                for _ in range(spec["concurrency"]):
                    tg.start_soon(caller)
            seconds = time.monotonic() - started
            learned = client.learned_limits().qps
    return {"answered": answered, "failed": failed, "seconds": seconds, "learned": learned}


async def _timed(client: Any, calls: int, store: Any = None) -> dict[str, float]:
    # Warm: the token, the connection, the script loaded, and a fresh model's rate (50/s)
    # grown past these back-to-back calls (a real service answers in about a second).
    for _ in range(WARM_UP):
        await client.chat(HI)
    trips = _count_trips(store) if store is not None else None
    latencies = []
    cpu = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await client.chat(HI)
        latencies.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    q = statistics.quantiles(latencies, n=100)
    out = {"cpu_us": cpu / calls * 1e6, "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3}
    if trips is not None:
        out["round_trips"] = trips[0] / calls
    return out


def _count_trips(store: Any) -> list[int]:
    """Count the store's round trips to Redis from now on (its ``run``, wrapped)."""
    count = [0]
    run = store.run

    async def counted(operation: Any) -> Any:
        count[0] += 1
        return await run(operation)

    store.run = counted
    return count


async def _overhead(spec: dict[str, Any]) -> dict[str, Any]:
    fast = 100_000.0
    out: dict[str, Any] = {}
    no_limiter = mpt_async.RateLimits(adaptive=False, adopt_server_limits=False)
    async with _client(spec, no_limiter) as client:
        out["none"] = await _timed(client, spec["calls"])
    async with _client(spec, mpt_async.RateLimits(qps=fast)) as client:
        out["in-process"] = await _timed(client, spec["calls"])
    async with mpt_async.RedisStore(spec["url"], prefix=spec["prefix"] + "-o") as store:
        limits = mpt_async.RateLimits(qps=fast, shared=store)
        async with _client(spec, limits) as client:
            out["redis"] = await _timed(client, spec["calls"], store)
    return out


def main() -> None:
    """Run the worker described by the JSON spec in argv[1]; print its result line."""
    spec = json.loads(sys.argv[1])
    work = {"budget": _budget, "learn": _learn}.get(spec["mode"], _overhead)
    result = anyio.run(work, spec, backend=spec.get("backend", "asyncio"))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
