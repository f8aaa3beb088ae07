"""The v2 interface against v1: client CPU per call, paired round by round in one process.

The target: speaking v2 (``/v2/chat/completions``, a Bearer key, OpenAI-shaped
chunks read into the same models) adds at most 5% client CPU per call over v1, on chat
and on a stream. One worker process opens a v1 client (an access token) and a v2 client (an
API key) on one event loop against one emulator, then runs short rounds of each in turn,
alternating which goes first; a ratio is the median over the rounds of the ratio within a
round, as in the paired section. The emulator's CPU per call on each route is shown too
(its v2 route must stay within the v1 route's cost), read from the server process.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from benchmarks._clients import CLIENTS
from benchmarks._pairing import CHUNKS, cells_spec, measure_cells, paired_rounds
from benchmarks._section import Context, Row, target
from benchmarks._server import process_cpu
from benchmarks._worker import cpu_seconds

#: The two clients compared: v1 first.
NAMES = ("mpt_async", "mpt_async/v2")
#: The target: v2 adds at most 5% client CPU per call.
MAX_V2_OVER_V1 = 1.05


async def _round(adapter: Any, mode: str, conc: int, calls: int, pid: int) -> tuple[float, float]:
    """Client and server CPU seconds per call of one round."""
    call = adapter.chat if mode == "chat" else adapter.stream
    before = process_cpu(pid) or 0.0
    client = await cpu_seconds(call, conc, calls, CHUNKS if mode == "stream" else 0)
    server = (process_cpu(pid) or 0.0) - before
    return client / calls, server / calls


async def _cell(adapters: dict[str, Any], mode: str, conc: int, spec: dict) -> dict:
    pid = spec["server_pid"]

    async def measure(adapter: Any, mode: str, conc: int, calls: int) -> tuple[float, float]:
        return await _round(adapter, mode, conc, calls, pid)

    rounds = await paired_rounds(adapters, mode, conc, spec, measure)
    v1, v2 = NAMES
    return {
        "cpu_us": {n: statistics.median(r[n][0] for r in rounds) * 1e6 for n in NAMES},
        "server_us": {n: statistics.median(r[n][1] for r in rounds) * 1e6 for n in NAMES},
        "v2_over_v1": statistics.median(r[v2][0] / r[v1][0] for r in rounds),
    }


async def _measure(spec: dict) -> dict:
    return await measure_cells({name: CLIENTS[name]() for name in NAMES}, _cell, spec)


def worker(spec: dict) -> dict:
    """The measuring side, in a fresh worker process."""
    return asyncio.run(_measure(spec))


def run(ctx: Context) -> dict:
    """One worker process for every cell."""
    spec = cells_spec("v2", ctx.args, [1, 20])
    return {"settings": spec, "cells": ctx.worker(spec, timeout=900)}


def targets(results: dict) -> list[Row]:
    """v2 / v1 client CPU per call, per cell (paired)."""
    return [
        target(f"{at}: v2 / v1 client CPU per call, paired", c["v2_over_v1"], MAX_V2_OVER_V1)
        for at, c in results["cells"].items()
    ]


def markdown(results: dict) -> list[str]:
    """The section of RESULTS.md."""
    s = results["settings"]
    out = [
        "## The v2 interface against v1, paired in one process",
        "",
        f"Client CPU per call (µs) of one `mpt_async.Client` on v1 (an access token) and one "
        f"on v2 (an API key), on one asyncio event loop in one worker process: {s['rounds']} "
        f"rounds of {s['calls_chat']} chats / {s['calls_stream']} streams of {CHUNKS} chunks "
        "per client and cell, alternating which goes first; the medians of the rounds, and the "
        "median of the ratios within a round (`benchmarks/_v2.py`). The emulator's CPU per call "
        "on each route is information.",
        "",
        "| cell | v1 | v2 | v2 / v1 | emulator v1 | emulator v2 |",
        "|---|---|---|---|---|---|",
    ]
    v1, v2 = NAMES
    for at, cell in results["cells"].items():
        us, srv = cell["cpu_us"], cell["server_us"]
        out.append(
            f"| {at} | {us[v1]:.0f} | {us[v2]:.0f} | {cell['v2_over_v1']:.3f} "
            f"| {srv[v1]:.0f} | {srv[v2]:.0f} |"
        )
    return out
