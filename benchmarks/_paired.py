"""mpt_async against its asyncio floors, paired round by round in one process.

The main table runs each client in a fresh process, one after the other, so a ratio between
two rows also measures how the machine drifted in between: on the VM these figures come
from, the same raw row moved by up to 40% between quiet runs. Here one worker process opens
``mpt_async``, raw httpx over mpt_async's aiohttp transport and raw aiohttp on one event
loop, then runs short rounds of each in turn (rotating which goes first); a ratio is the
median over the rounds of the ratio within a round, whose clients saw the same machine.

trio and asyncio cannot share an event loop, so the trio targets stay with the main table.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from benchmarks._clients import CLIENTS
from benchmarks._pairing import cells_spec, measure_cells, paired_rounds
from benchmarks._section import Context, Row, target

#: The clients compared, mpt_async first.
NAMES = ("mpt_async", "httpx+aiohttp", "aiohttp")
#: The limits: against the raw httpx floor, and against raw aiohttp.
MAX_VS_HTTPX = 1.3
MAX_VS_AIOHTTP = {"chat": 2.0, "stream": 1.2}


async def _cell(adapters: dict[str, Any], mode: str, conc: int, spec: dict) -> dict:
    rounds = await paired_rounds(adapters, mode, conc, spec)
    return {
        "cpu_us": {n: statistics.median(r[n] for r in rounds) * 1e6 for n in NAMES},
        "vs": {n: statistics.median(r["mpt_async"] / r[n] for r in rounds) for n in NAMES[1:]},
        # The floor httpx sets: no mpt_async code in it.
        "floor": statistics.median(r["httpx+aiohttp"] / r["aiohttp"] for r in rounds),
    }


async def _measure(spec: dict) -> dict:
    return await measure_cells({name: CLIENTS[name]() for name in NAMES}, _cell, spec)


def worker(spec: dict) -> dict:
    """The measuring side, in a fresh worker process."""
    return asyncio.run(_measure(spec))


def run(ctx: Context) -> dict:
    """One worker process for every cell."""
    spec = cells_spec("paired", ctx.args, [1, 20, 100])
    return {"settings": spec, "cells": ctx.worker(spec, timeout=900)}


def targets(results: dict) -> list[Row]:
    """mpt_async / raw httpx over aiohttp, and / raw aiohttp, per cell (paired)."""
    rows = []
    for at, cell in results["cells"].items():
        mode = at.split()[0]
        vs = cell["vs"]
        what = f"{at}: mpt_async / raw httpx+aiohttp, paired"
        rows.append(target(what, vs["httpx+aiohttp"], MAX_VS_HTTPX))
        what = f"{at}: mpt_async / raw aiohttp, paired"
        rows.append(target(what, vs["aiohttp"], MAX_VS_AIOHTTP[mode]))
        floor = f"{cell['floor']:.2f}"
        rows.append([f"{at}: raw httpx+aiohttp / raw aiohttp, paired", floor, "(floor)", "info"])
    return rows


def markdown(results: dict) -> list[str]:
    """The section of RESULTS.md."""
    s = results["settings"]
    out = [
        "## mpt_async against its floors, paired in one process",
        "",
        f"Client CPU per call (µs) of mpt_async, raw httpx over mpt_async's aiohttp transport "
        f"and raw aiohttp, on one asyncio event loop in one worker process: {s['rounds']} "
        f"rounds of {s['calls_chat']} chats / {s['calls_stream']} streams per client and "
        "cell, rotating which client goes first; the medians of the rounds, and the median of "
        "the ratios within a round (`benchmarks/_paired.py`). These rows decide the asyncio "
        "targets against the floors; the main table's ratios (separate processes, minutes "
        "apart) are shown beside them as information.",
        "",
        "| cell | mpt_async | httpx+aiohttp | aiohttp | mpt_async / httpx+aiohttp "
        "| mpt_async / aiohttp | floor: httpx+aiohttp / aiohttp |",
        "|---|---|---|---|---|---|---|",
    ]
    for at, cell in results["cells"].items():
        us, vs = cell["cpu_us"], cell["vs"]
        out.append(
            f"| {at} | {us['mpt_async']:.0f} | {us['httpx+aiohttp']:.0f} | {us['aiohttp']:.0f} "
            f"| {vs['httpx+aiohttp']:.2f} | {vs['aiohttp']:.2f} | {cell['floor']:.2f} |"
        )
    return out
