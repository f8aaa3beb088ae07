"""The hand-written aiohttp transport against ``httpx-aiohttp``, paired in one process.

``httpx-aiohttp`` (on PyPI) is the httpx transport over aiohttp that httpx's users keep. It
could replace ``mpt_async/_aiohttp_transport.py``; this section measures what that would
cost. One worker process opens three ``mpt_async.Client``\\ s on one asyncio event loop,
each over an ``httpx.AsyncClient`` whose transport is:

- ``own``: mpt_async's hand-written adapter (what the client picks on asyncio);
- ``httpx-aiohttp``: ``httpx_aiohttp.AiohttpTransport`` as it comes;
- ``httpx-aiohttp+check``: the same, over the aiohttp connector of mpt_async's adapter,
  which refuses a connection holding bytes no request asked for (stock aiohttp hands those
  bytes to the next call as its answer, so only this variant could stand in for ``own``).

Then short rounds of each in turn (rotating which goes first), per mode and concurrency;
a ratio is the median over the rounds of the ratio within a round. Nothing here is a
target: the rows tell which transport to keep.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
from typing import Any

from benchmarks._clients import MptAsync
from benchmarks._pairing import cells_spec, measure_cells, paired_rounds
from benchmarks._section import Context, Row

#: The transports compared, the shipped one first.
NAMES = ("own", "httpx-aiohttp", "httpx-aiohttp+check")


def _transport(name: str, pool: int) -> Any:
    import httpx

    from mpt_async import _aiohttp_transport

    if name == "own":
        return _aiohttp_transport.AiohttpTransport(max_connections=pool)
    import aiohttp
    import httpx_aiohttp

    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    if name == "httpx-aiohttp":
        return httpx_aiohttp.AiohttpTransport(limits=limits)
    _aiohttp_transport._load_aiohttp()
    connector_class = getattr(_aiohttp_transport, "_Connector", None) or aiohttp.TCPConnector

    def session() -> Any:
        return aiohttp.ClientSession(connector=connector_class(limit=pool))

    return httpx_aiohttp.AiohttpTransport(limits=limits, client=session)


class _Over(MptAsync):
    """``mpt_async.Client`` over an ``httpx.AsyncClient`` with the named transport."""

    def __init__(self, transport: str) -> None:
        super().__init__("asyncio")
        self.transport = transport

    async def open(self, base_url: str, pool: int) -> None:
        import httpx

        import mpt_async

        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self.http = httpx.AsyncClient(
            limits=limits, transport=_transport(self.transport, pool), timeout=120
        )
        self.client = mpt_async.Client(
            auth=mpt_async.AccessTokenAuth("emulator-api-key", "emulator-secret-key"),
            base_url=base_url,
            http_client=self.http,
        )


async def _cell(adapters: dict[str, Any], mode: str, conc: int, spec: dict) -> dict:
    rounds = await paired_rounds(adapters, mode, conc, spec)
    return {
        "cpu_us": {n: statistics.median(r[n] for r in rounds) * 1e6 for n in NAMES},
        # Above 1: the other transport costs more CPU per call than the own one.
        "vs_own": {n: statistics.median(r[n] / r["own"] for r in rounds) for n in NAMES[1:]},
    }


async def _measure(spec: dict) -> dict:
    return await measure_cells({name: _Over(name) for name in NAMES}, _cell, spec)


def worker(spec: dict) -> dict:
    """The measuring side, in a fresh worker process."""
    return asyncio.run(_measure(spec))


def run(ctx: Context) -> dict:
    """One worker process for every cell (skipped without httpx-aiohttp)."""
    if importlib.util.find_spec("httpx_aiohttp") is None:
        raise RuntimeError("httpx-aiohttp is not installed (nox -s bench installs it)")
    spec = cells_spec("httpx_aiohttp", ctx.args, [1, 20, 100])
    return {"settings": spec, "cells": ctx.worker(spec, timeout=900)}


def targets(results: dict) -> list[Row]:
    """Each httpx-aiohttp variant's CPU per call over the own adapter's, per cell (info)."""
    return [
        [f"{at}: mpt_async over {name} / over own aiohttp adapter, paired", f"{v:.2f}", "", "info"]
        for at, cell in results["cells"].items()
        for name, v in cell["vs_own"].items()
    ]


def markdown(results: dict) -> list[str]:
    """The section of RESULTS.md."""
    s = results["settings"]
    out = [
        "## The own aiohttp adapter against httpx-aiohttp, paired in one process",
        "",
        "Client CPU per call (µs) of mpt_async.Client over httpx with three transports on one "
        f"asyncio event loop in one worker process: {s['rounds']} rounds of "
        f"{s['calls_chat']} chats / {s['calls_stream']} streams per transport and cell, "
        "rotating which goes first; the medians of the rounds, and the median of the ratios "
        "within a round (`benchmarks/_httpx_aiohttp.py`). `+check` is httpx-aiohttp over "
        "mpt_async's connector that refuses a connection holding unasked bytes.",
        "",
        "| cell | own | httpx-aiohttp | httpx-aiohttp+check | httpx-aiohttp / own "
        "| httpx-aiohttp+check / own |",
        "|---|---|---|---|---|---|",
    ]
    for at, cell in results["cells"].items():
        us, vs = cell["cpu_us"], cell["vs_own"]
        out.append(
            f"| {at} | {us['own']:.0f} | {us['httpx-aiohttp']:.0f} "
            f"| {us['httpx-aiohttp+check']:.0f} | {vs['httpx-aiohttp']:.2f} "
            f"| {vs['httpx-aiohttp+check']:.2f} |"
        )
    return out
