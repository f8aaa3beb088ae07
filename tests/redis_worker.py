"""One process of the shared-budget tests and benchmark: calls in a loop, on one RedisStore.

Run as ``python -m tests.redis_worker CONFIG_JSON`` (:func:`spawn` starts one). It prints ``ready`` once connected,
waits for a line on stdin, calls for ``seconds`` with ``concurrency`` callers, and prints
a JSON summary: calls answered (and when, by the host's monotonic clock), calls refused,
other errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import mpt_async

if TYPE_CHECKING:
    from mpt_async.testing import Emulator


def _skew(seconds: float) -> None:
    """Make this process's wall clock wrong by ``seconds`` (Redis's clock must rule)."""
    real = time.time
    time.time = lambda: real() + seconds


async def _work(config: dict[str, Any]) -> dict[str, Any]:
    store = mpt_async.RedisStore(config["url"], prefix=config["prefix"])
    limits = mpt_async.RateLimits(qps=config["qps"], adopt_server_limits=False, shared=store)
    counts: dict[str, Any] = {"answered": 0, "refused": 0, "failed": 0, "times": []}
    async with (
        store,
        mpt_async.Client(
            auth=mpt_async.AccessTokenAuth(config["api_key"], config["secret_key"]),
            base_url=config["base_url"],
            token_store=store,
            rate_limits=limits,
            max_retries=0,
        ) as client,
    ):
        await store.load("warm-up")  # connected before the start signal
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

        async def caller() -> None:
            while True:
                try:
                    await client.chat([{"role": "user", "content": "Hi"}])
                except mpt_async.RateLimitError:  # noqa: PERF203 - counting each outcome
                    counts["refused"] += 1
                except mpt_async.MPTError:
                    counts["failed"] += 1
                else:
                    counts["answered"] += 1
                    counts["times"].append(time.monotonic())

        with anyio.move_on_after(config["seconds"]):
            async with anyio.create_task_group() as tg:
                for _ in range(config["concurrency"]):
                    tg.start_soon(caller)
    return counts


def spawn(emu: Emulator, url: str, prefix: str, **config: Any) -> subprocess.Popen[str]:
    """Start a worker calling ``emu``, its budget in the Redis at ``url`` under ``prefix``."""
    config = {"url": url, "prefix": prefix, "base_url": emu.base_url, **config}
    config |= {"api_key": emu.api_key, "secret_key": emu.secret_key}
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.redis_worker", json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
    )


def main() -> None:
    """Run one worker with the JSON configuration given as the first argument."""
    config = json.loads(sys.argv[1])
    if config.get("skew"):
        _skew(config["skew"])
    counts = anyio.run(_work, config, backend=config["backend"])
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
