"""``python -m benchmarks``: run every measurement, print a table, write RESULTS.md and a chart.

The parent process only orchestrates: it starts the emulator (pinned to one core), then
one fresh worker process per client (pinned to the other core) that does the timing, and
stops the emulator at the end whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    _httpx_aiohttp,
    _paired,
    _priority,
    _quota,
    _redis_bench,
    _report,
    _telemetry,
    _v2,
)
from benchmarks._clients import find_aiohttp_transport
from benchmarks._section import Context, Section, child_env
from benchmarks._server import EmulatorProcess, cores, pin_self
from benchmarks._worker import raise_open_files_limit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENCY = (1, 20, 100)
STREAM_CHUNKS = 50
DECODE_CHUNKS = 500
#: Concurrent streams through one client, on each runtime.
MANY_STREAMS = 10_000
RUNTIMES = ("asyncio", "trio")
#: 10,000 streams take about a minute on a quiet machine; much longer on a busy one.
MANY_STREAMS_TIMEOUT = 900
IMPORT_RUNS = 7
PACKAGES = (
    "mpt-async",
    "httpx",
    "httpcore",
    "anyio",
    "attrs",
    "cattrs",
    "aiohttp",
    "orjson",
    "qianfan",
    "trio",
    "uvicorn",
    "httptools",
    "uvloop",
)
IMPORTS = {
    "mpt_async": "import mpt_async",
    "httpx+anyio+attrs+cattrs": "import httpx, anyio, attrs, cattrs",
    "qianfan": "import qianfan",
}


def _log(start: float, message: str) -> None:
    print(f"[{time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--calls-chat", type=int, default=1000, help="timed chat calls per round")
    parser.add_argument("--calls-stream", type=int, default=400, help="timed streams per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per cell (median)")
    parser.add_argument(
        "--streams", type=int, default=MANY_STREAMS, help="concurrent streams test size"
    )
    parser.add_argument(
        "--clients", help="comma-separated subset of the clients (default: all available)"
    )
    parser.add_argument(
        "--server-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the emulator's event loop (default: %(default)s; uvloop was slower in our runs)",
    )
    parser.add_argument(
        "--sections", help=f"comma-separated subset of: {', '.join(s.name for s in SECTIONS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: few calls, one round, 200 streams"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md and the chart go")
    parser.add_argument("--json", type=Path, help="also dump the raw measurements here")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls_chat, args.calls_stream, args.rounds, args.streams = 100, 50, 1, 200
    return args


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, OS, Python and package versions, for the report."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {name: _version(name) for name in PACKAGES}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {k: v for k, v in packages.items() if v},
    }


def time_import(statement: str, scratch: Path, runs: int) -> float | None:
    """Fewest seconds ``statement`` took in ``runs`` fresh interpreters (timed inside)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = []
    for i in range(runs + 1):  # the first run only warms the bytecode cache and the disk
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=child_env(scratch),
            cwd=scratch,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            return None
        if i:
            samples.append(float(done.stdout.strip().splitlines()[-1]))
    return min(samples)


def _available_clients(selected: str | None) -> dict[str, str | None]:
    """Each client in the table -> ``None`` if it can run, else why it is skipped."""
    found = importlib.util.find_spec
    no_trio = None if found("trio") else "trio is not installed"
    why: dict[str, str | None] = {
        "mpt_async": None,
        "mpt_async/trio": no_trio,
        "mpt_async[httpx]": None,
        "mpt_async[pool]": None,
        "httpx": None,
        "httpx+aiohttp": None
        if find_aiohttp_transport()
        else "mpt_async has no aiohttp-backed httpx transport (the speed extra) here",
        "httpx+pool/trio": no_trio,
        "aiohttp": None if found("aiohttp") else "aiohttp is not installed",
        "qianfan": None if found("qianfan") else "qianfan is not installed",
    }
    if selected:
        wanted = [name.strip() for name in selected.split(",")]
        unknown = set(wanted) - set(why)
        if unknown:
            raise SystemExit(f"unknown clients: {', '.join(sorted(unknown))}")
        why = {name: why[name] for name in wanted}
    return why


def _cells(args: argparse.Namespace, calls_chat: int, calls_stream: int) -> list[dict[str, Any]]:
    cells = []
    for mode in ("chat", "stream"):
        calls = calls_chat if mode == "chat" else calls_stream
        for conc in CONCURRENCY:
            warmup = max(2 * conc, 30)
            cells.append({"mode": mode, "conc": conc, "calls": calls, "warmup": warmup})
    return cells


def measure_clients(ctx: Context) -> dict[str, Any]:
    """The main table: every client, each in a fresh process, every mode and concurrency."""
    args, clients = ctx.args, {}
    for client, skipped in _available_clients(args.clients).items():
        if skipped:
            clients[client] = {"skipped": f"skipped: {skipped}"}
            ctx.log(f"{client}: {skipped}")
            continue
        spec = {
            "task": "cells",
            "client": client,
            "rounds": args.rounds,
            "chunks": STREAM_CHUNKS,
            "cells": _cells(args, args.calls_chat, args.calls_stream),
        }
        try:
            clients[client] = ctx.worker(spec)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            clients[client] = {"error": f"failed: {exc}"}
        ctx.log(f"{client}: done")
    return clients


def measure_profile(ctx: Context) -> dict[str, Any]:
    """mpt_async on both runtimes (and the floors it is held to) under cProfile."""
    args, profiles = ctx.args, {}
    chat, stream = max(50, args.calls_chat // 3), max(20, args.calls_stream // 5)
    for client in _report.PROFILED:
        if client not in ctx.results.get("clients", {}) or "cells" not in ctx.results[
            "clients"
        ].get(client, {}):
            continue  # not measured in this run (skipped, failed or not selected)
        cells = _cells(args, chat, stream)
        if client in _report.PROFILED_AT_TOP_ONLY:
            cells = [c for c in cells if c["conc"] == max(CONCURRENCY)]
        try:
            profiles[client] = ctx.worker({"task": "profile", "client": client, "cells": cells})
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            profiles[client] = {"error": f"failed: {exc}"}
    ctx.log("profiles: done")
    return profiles


def measure_decode(ctx: Context) -> dict[str, Any]:
    """mpt_async's stream vs a bare aiter_lines + json.loads loop, on 500-chunk answers.

    First replayed from memory (parsing alone, see ``_decode.py``), then over loopback.
    """
    args, emu = ctx.args, ctx.emu
    pairs = [("httpx", "mpt_async[httpx]", "httpx")]
    if find_aiohttp_transport():  # what mpt_async uses by default on asyncio: measure first
        pairs.insert(0, ("aiohttp transport", "mpt_async[aiohttp]", "httpx+aiohttp"))
    calls = max(10, args.calls_stream // 10)
    cells = [{"mode": "stream", "conc": 1, "calls": calls, "warmup": 5}]
    emu.configure(stream_chunks=DECODE_CHUNKS)
    us: dict[str, float | None] = {}
    ratios: dict[str, float] = {}
    try:
        replay = ctx.worker(
            {"task": "decode_replay", "streams": calls * 2, "rounds": max(args.rounds, 3)}
        )
        for transport, ours, bare in pairs:
            got = {}
            for name in (ours, bare):
                spec = {
                    "task": "cells",
                    "client": name,
                    "rounds": args.rounds,
                    "chunks": DECODE_CHUNKS,
                    "cells": cells,
                }
                got[name] = ctx.worker(spec)["cells"][0]["cpu_us_per_chunk"]
            us[ours] = got[ours]
            us[f"bare loop on {bare}"] = got[bare]
            ratios[transport] = got[ours] / got[bare]
    finally:
        emu.configure(stream_chunks=STREAM_CHUNKS)
    ctx.log("decode: done")
    return {
        "chunks": replay["chunks"],
        "replay_us": replay["us"],
        "ratio": replay["us"]["mpt_async"] / replay["us"]["bare"],
        "loopback_us": us,
        "loopback_ratios": ratios,
    }


def measure_many_streams(ctx: Context) -> dict[str, Any]:
    """``--streams`` streams at once through one mpt_async client, on each runtime."""
    found, out = importlib.util.find_spec, {}
    for runtime in RUNTIMES:
        if runtime == "trio" and not found("trio"):
            out[runtime] = {"error": "trio is not installed"}
            continue
        ctx.emu.reset()  # counters and tokens from zero: the client must fetch one token
        # A little pause between chunks so that the streams really are open at the same time.
        ctx.emu.configure(chunk_delay=0.02)
        try:
            spec = {
                "task": "many_streams",
                "runtime": runtime,
                "streams": ctx.args.streams,
                "chunks": STREAM_CHUNKS,
                "pool": ctx.args.streams,
            }
            result = ctx.worker(spec, timeout=MANY_STREAMS_TIMEOUT)
            stats = ctx.emu.stats()
            result["token_requests"] = stats.get("token_requests")
            result["stream_requests"] = stats.get("stream_requests")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result = {"error": f"failed: {exc}"}
        finally:
            ctx.emu.reset()
        out[runtime] = result
        ctx.log(f"{ctx.args.streams} streams on {runtime}: done")
    return out


def measure_imports(ctx: Context) -> dict[str, Any]:
    """``import mpt_async`` against its four dependencies, fewest of 7 fresh processes."""
    times = {name: time_import(stmt, ctx.scratch, IMPORT_RUNS) for name, stmt in IMPORTS.items()}
    ctx.log("imports: done")
    ours, theirs = times["mpt_async"], times["httpx+anyio+attrs+cattrs"]
    return {
        "runs": IMPORT_RUNS,
        "times": {k: v for k, v in times.items() if v is not None},
        "ratio": ours / theirs if ours and theirs else None,
    }


#: Every measurement, in the order run. Others append theirs (see ``_section.py``).
SECTIONS: list[Section] = [
    Section("clients", measure_clients),
    Section("profile", measure_profile, markdown=_report.profile_markdown),
    Section("decode", measure_decode, _report.decode_targets, _report.decode_lines),
    Section("many_streams", measure_many_streams, _report.many_targets, _report.many_lines),
    Section("imports", measure_imports, _report.import_targets, _report.import_lines),
    Section("paired", _paired.run, _paired.targets, markdown=_paired.markdown),
    Section("v2", _v2.run, _v2.targets, markdown=_v2.markdown),
    Section("telemetry", _telemetry.run, _telemetry.targets, markdown=_telemetry.markdown),
    Section("redis", _redis_bench.run, _redis_bench.targets, _redis_bench.lines),
    Section("quota", _quota.run, _quota.targets, markdown=_quota.markdown),
    Section("priority", _priority.run, _priority.targets, markdown=_priority.markdown),
    Section(
        "httpx_aiohttp",
        _httpx_aiohttp.run,
        _httpx_aiohttp.targets,
        markdown=_httpx_aiohttp.markdown,
    ),
]


def _selected(args: argparse.Namespace) -> list[Section]:
    if not args.sections:
        return SECTIONS
    wanted = {name.strip() for name in args.sections.split(",")}
    unknown = wanted - {s.name for s in SECTIONS}
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    return [s for s in SECTIONS if s.name in wanted]


def _settings(args: argparse.Namespace, uvloop: bool) -> dict[str, Any]:
    return {
        "concurrency": list(CONCURRENCY),
        "stream_chunks": STREAM_CHUNKS,
        "server_uvloop": uvloop,
        "calls_chat": args.calls_chat,
        "calls_stream": args.calls_stream,
        "rounds": args.rounds,
        "warmup_note": "a warm-up of max(2 x concurrency, 30) calls",
    }


def _run_section(section: Section, ctx: Context) -> None:
    """Run one section; a failure is recorded, and the run goes on."""
    try:
        ctx.results[section.name] = section.run(ctx)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        ctx.results[section.name] = {"error": f"failed: {exc}"}
        ctx.results["notes"].append(f"The {section.name} measurement failed: {exc}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected section; returns the results dictionary the report is made from."""
    start = time.monotonic()
    client_core, server_core = cores()
    pin_self(client_core)
    raise_open_files_limit()  # inherited by the emulator and the workers
    uvloop = args.server_loop == "uvloop"
    results: dict[str, Any] = {
        "meta": machine_info(),
        "settings": _settings(args, uvloop),
        "clients": {},
        "notes": [],
    }
    results["meta"]["pinning"] = (
        f"client on CPU {client_core}, server on CPU {server_core}"
        if client_core is not None
        else "not pinned (needs os.sched_setaffinity and 2+ CPUs)"
    )
    with (
        tempfile.TemporaryDirectory(prefix="mpt-bench-") as tmp,
        EmulatorProcess(stream_chunks=STREAM_CHUNKS, core=server_core, uvloop=uvloop) as emu,
    ):
        _log(start, f"emulator pid {emu.pid} at {emu.base_url} (uvloop={uvloop})")
        ctx = Context(args, emu, Path(tmp), results, lambda m: _log(start, m))
        for section in _selected(args):
            _run_section(section, ctx)
    results["meta"]["elapsed_s"] = time.monotonic() - start
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the report."""
    args = _parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the emulator and workers are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    chart = args.out / "cpu_per_call.png"
    has_chart = _report.plot(results, chart)
    if not has_chart:
        results["notes"].append("No chart: matplotlib is not installed.")
    sections = _selected(args)
    _report.write_markdown(
        results, args.out / "RESULTS.md", chart.name if has_chart else None, sections
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(_report.console(results, sections))
    print(f"\nwrote {args.out / 'RESULTS.md'}" + (f" and {chart}" if has_chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
