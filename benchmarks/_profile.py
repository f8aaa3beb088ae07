"""Where a client's CPU goes: its calls run under cProfile, per call and per library.

Run inside a worker process (``task: "profile"``): after a warm-up, ``calls`` calls are
made at the cell's concurrency with the profiler on. The report gets, per cell, the
functions with the most own time (with their call counts per request) and the share of
own time spent in each library, httpx split into its model (requests, responses, URLs,
headers) and its client, so that the floor a library sets can be read off.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: Own-time entries kept per cell.
TOP = 12

#: httpx modules that make up its Request/Response/URL/Headers model.
_HTTPX_MODEL = ("_models.py", "_urls.py", "_urlparse.py", "_content.py", "_utils.py")

#: Top-level packages reported by name; the rest of site-packages is "other".
_KNOWN = (
    "httpx",
    "httpcore",
    "h11",
    "httptools",
    "anyio",
    "trio",
    "aiohttp",
    "multidict",
    "yarl",
    "orjson",
    "attrs",
    "cattrs",
    "sniffio",
    "outcome",
)


def library(filename: str, name: str = "") -> str:
    """The library a profiled function belongs to (``httpx`` split in model / client)."""
    if filename.startswith(("~", "<")):
        return "httptools" if "httptools" in name else "builtins"
    parts = filename.replace(os.sep, "/").split("/")
    if "mpt_async" in parts:
        return "mpt_async"
    if "benchmarks" in parts:
        return "benchmark loop"
    for i, part in enumerate(parts):
        if part == "httpx":
            return "httpx model" if parts[i + 1 : i + 2][0] in _HTTPX_MODEL else "httpx client"
        if part in _KNOWN:
            return part
        if part in ("asyncio", "selectors.py", "socket.py", "ssl.py", "json"):
            return "asyncio/stdlib" if part != "json" else "json"
    return "stdlib/other" if "site-packages" not in parts else "other packages"


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename.startswith("~"):
        return name
    parts = filename.replace(os.sep, "/").split("/")
    short = "/".join(parts[-2:])
    return f"{short}:{line}({name})"


def summarize(profile: cProfile.Profile, calls: int, top: int = TOP) -> dict[str, Any]:
    """Top own-time functions (per call) and the share of own time per library."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-12
    shares: dict[str, float] = {}
    for func, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        name = library(func[0], func[2])
        shares[name] = shares.get(name, 0.0) + tottime
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "profiled_us_per_call": total / calls * 1e6,
        "libraries": {
            k: v / total for k, v in sorted(shares.items(), key=lambda kv: kv[1], reverse=True)
        },
        "top": [
            {
                "function": _label(func),
                "library": library(func[0], func[2]),
                "calls_per_request": nc / calls,
                "own_us_per_request": tottime / calls * 1e6,
                "cum_us_per_request": cumtime / calls * 1e6,
            }
            for func, (_cc, nc, tottime, cumtime, _callers) in ranked
        ],
    }


async def profile_cells(
    adapter: Any,
    drive: Callable[..., Awaitable[int]],
    spec: dict[str, Any],
    gather: Any,
) -> dict[str, Any]:
    """Each cell of ``spec`` once, under the profiler."""
    await adapter.open(spec["base_url"], 100)
    results = []
    try:
        for cell in spec["cells"]:
            call = adapter.chat if cell["mode"] == "chat" else adapter.stream
            await drive(gather, call, cell["conc"], cell["warmup"])
            profile = cProfile.Profile(time.process_time)  # CPU, not time spent waiting
            profile.enable()
            await drive(gather, call, cell["conc"], cell["calls"])
            profile.disable()
            results.append({**cell, **summarize(profile, cell["calls"])})
    finally:
        await adapter.close()
    return {"cells": results}
