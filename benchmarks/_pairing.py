"""What the paired sections share: rounds of each client in turn, on one event loop.

A section that compares clients (``paired``, ``v2``, ``httpx_aiohttp``) opens them all in one
worker process, warms each up, then runs short rounds of each in turn, rotating which goes
first; a ratio is the median over the rounds of the ratio within a round, whose clients saw
the same machine. Each section keeps only what it measures per round and what it reports.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._worker import cpu_seconds

#: Chunks in each streamed answer.
CHUNKS = 50

#: ``measure(adapter, mode, concurrency, calls)``: one round's figure for one client.
Measure = Callable[[Any, str, int, int], Awaitable[Any]]
#: ``cell(adapters, mode, concurrency, spec)``: one cell's result.
Cell = Callable[[dict[str, Any], str, int, dict], Awaitable[dict]]


async def cpu_per_call(adapter: Any, mode: str, conc: int, calls: int) -> float:
    """Client CPU seconds per call of ``calls`` calls, ``conc`` at a time."""
    call = adapter.chat if mode == "chat" else adapter.stream
    return await cpu_seconds(call, conc, calls, CHUNKS if mode == "stream" else 0) / calls


async def paired_rounds(
    adapters: dict[str, Any],
    mode: str,
    conc: int,
    spec: dict,
    measure: Measure = cpu_per_call,
) -> list[dict[str, Any]]:
    """Warm every client up, then ``spec["rounds"]`` rounds of each in turn (rotated)."""
    names = list(adapters)
    calls = spec["calls_chat"] if mode == "chat" else spec["calls_stream"]
    for adapter in adapters.values():  # warm-up: connections, token, caches
        await measure(adapter, mode, conc, max(2 * conc, 30))
    rounds: list[dict[str, Any]] = []
    for i in range(spec["rounds"]):
        order = names[i % len(names) :] + names[: i % len(names)]
        rounds.append({name: await measure(adapters[name], mode, conc, calls) for name in order})
    return rounds


async def measure_cells(adapters: dict[str, Any], cell: Cell, spec: dict) -> dict:
    """Open the clients, measure every (mode, concurrency) cell, close them."""
    for adapter in adapters.values():
        await adapter.open(spec["base_url"], max(spec["concurrency"]))
    try:
        return {
            f"{mode} c={conc}": await cell(adapters, mode, conc, spec)
            for mode in ("chat", "stream")
            for conc in spec["concurrency"]
        }
    finally:
        for adapter in adapters.values():
            await adapter.close()


def cells_spec(task: str, args: argparse.Namespace, concurrency: list[int]) -> dict:
    """The worker's spec: half the main table's calls per round, three times its rounds."""
    return {
        "task": task,
        "calls_chat": max(50, args.calls_chat // 2),
        "calls_stream": max(20, args.calls_stream // 2),
        "rounds": max(3, 3 * args.rounds),
        "concurrency": concurrency,
    }
