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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _report, _telemetry
from benchmarks._clients import find_aiohttp_transport
from benchmarks._server import EmulatorProcess, _child_setup, cores, pin_self
from benchmarks._worker import RESULT_PREFIX

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENCY = (1, 20, 100)
STREAM_CHUNKS = 50
DECODE_CHUNKS = 500
WORKER_TIMEOUT = 180
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
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams test size")
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


def _child_env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Keep the qianfan SDK's cache (and its .env lookup, by the cwd) in a scratch directory.
    env["QIANFAN_CACHE_DIR"] = str(scratch / "qianfan-cache")
    return env


def run_worker(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Run one fresh ``benchmarks._worker`` process and return what it measured."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=_child_env(scratch),
        cwd=scratch,
        timeout=WORKER_TIMEOUT,
        check=False,
        preexec_fn=lambda: _child_setup(None),  # dies with the parent
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"worker failed (exit {done.returncode}): {' | '.join(tail)}")


def time_import(statement: str, scratch: Path, runs: int) -> float | None:
    """Median seconds for ``statement`` in a fresh interpreter (timed inside it)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = []
    for i in range(runs + 1):  # the first run only warms the bytecode cache and the disk
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=_child_env(scratch),
            cwd=scratch,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            return None
        if i:
            samples.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def _available_clients(selected: str | None) -> dict[str, str | None]:
    """Each client in the table -> ``None`` if it can run, else why it is skipped."""
    found = importlib.util.find_spec
    why: dict[str, str | None] = {
        "mpt_async": None,
        "mpt_async[httpx]": None,
        "mpt_async/trio": None if found("trio") else "trio is not installed",
        "httpx": None,
        "httpx+aiohttp": None
        if find_aiohttp_transport()
        else "mpt_async has no aiohttp-backed httpx transport (the speed extra) here",
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


def _cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    cells = []
    for mode in ("chat", "stream"):
        calls = args.calls_chat if mode == "chat" else args.calls_stream
        for conc in CONCURRENCY:
            warmup = max(2 * conc, 30)
            cells.append({"mode": mode, "conc": conc, "calls": calls, "warmup": warmup})
    return cells


def _decode(emu: EmulatorProcess, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """mpt_async's stream vs a bare aiter_lines + json.loads loop, on 500-chunk answers.

    First replayed from memory (parsing alone, see ``_decode.py``), then over loopback.
    """
    pairs = [("httpx", "mpt_async[httpx]", "httpx")]
    if find_aiohttp_transport():  # what mpt_async uses by default on asyncio: measure first
        pairs.insert(0, ("aiohttp transport", "mpt_async[aiohttp]", "httpx+aiohttp"))
    calls = max(10, args.calls_stream // 10)
    cells = [{"mode": "stream", "conc": 1, "calls": calls, "warmup": 5}]
    emu.configure(stream_chunks=DECODE_CHUNKS)
    us: dict[str, float | None] = {}
    ratios: dict[str, float] = {}
    try:
        replay_spec = {
            "task": "decode_replay",
            "base_url": emu.base_url,
            "streams": calls * 2,
            "rounds": max(args.rounds, 3),
        }
        replay = run_worker(replay_spec, scratch)
        for transport, ours, bare in pairs:
            got = {}
            for name in (ours, bare):
                spec = {
                    "task": "cells",
                    "client": name,
                    "base_url": emu.base_url,
                    "server_pid": emu.pid,
                    "rounds": args.rounds,
                    "chunks": DECODE_CHUNKS,
                    "cells": cells,
                }
                got[name] = run_worker(spec, scratch)["cells"][0]["cpu_us_per_chunk"]
            us[ours] = got[ours]
            us[f"bare loop on {bare}"] = got[bare]
            ratios[transport] = got[ours] / got[bare]
    finally:
        emu.configure(stream_chunks=STREAM_CHUNKS)
    return {
        "chunks": replay["chunks"],
        "replay_us": replay["us"],
        "ratio": replay["us"]["mpt_async"] / replay["us"]["bare"],
        "loopback_us": us,
        "loopback_ratios": ratios,
    }


def _many_streams(emu: EmulatorProcess, args: argparse.Namespace, scratch: Path) -> dict:
    """``--streams`` streams at once through one mpt_async client."""
    emu.reset()  # counters and tokens from zero: the client must fetch exactly one token
    # A little pause between chunks so that the streams really are open at the same time.
    emu.configure(chunk_delay=0.02)
    try:
        spec = {
            "task": "many_streams",
            "base_url": emu.base_url,
            "streams": args.streams,
            "chunks": STREAM_CHUNKS,
            "pool": args.streams,
        }
        result = run_worker(spec, scratch)
        stats = emu.stats()
        result["token_requests"] = stats.get("token_requests")
        result["stream_requests"] = stats.get("stream_requests")
    finally:
        emu.reset()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; returns the results dictionary the report is made from."""
    start = time.monotonic()
    client_core, server_core = cores()
    pin_self(client_core)
    uvloop = args.server_loop == "uvloop"
    results: dict[str, Any] = {
        "meta": machine_info(),
        "settings": {
            "concurrency": list(CONCURRENCY),
            "stream_chunks": STREAM_CHUNKS,
            "server_uvloop": uvloop,
            "calls_chat": args.calls_chat,
            "calls_stream": args.calls_stream,
            "rounds": args.rounds,
            "warmup_note": "a warm-up of max(2 x concurrency, 30) calls",
        },
        "clients": {},
        "notes": [],
    }
    results["meta"]["pinning"] = (
        f"client on CPU {client_core}, server on CPU {server_core}"
        if client_core is not None
        else "not pinned (needs os.sched_setaffinity and 2+ CPUs)"
    )
    with tempfile.TemporaryDirectory(prefix="mpt-bench-") as tmp:
        scratch = Path(tmp)
        with EmulatorProcess(stream_chunks=STREAM_CHUNKS, core=server_core, uvloop=uvloop) as emu:
            _log(start, f"emulator pid {emu.pid} at {emu.base_url} (uvloop={uvloop})")
            for client, skipped in _available_clients(args.clients).items():
                if skipped:
                    results["clients"][client] = {"skipped": f"skipped: {skipped}"}
                    _log(start, f"{client}: {skipped}")
                    continue
                spec = {
                    "task": "cells",
                    "client": client,
                    "base_url": emu.base_url,
                    "server_pid": emu.pid,
                    "rounds": args.rounds,
                    "chunks": STREAM_CHUNKS,
                    "cells": _cells(args),
                }
                try:
                    results["clients"][client] = run_worker(spec, scratch)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results["clients"][client] = {"error": f"failed: {exc}"}
                _log(start, f"{client}: done")
            try:
                results["decode"] = _decode(emu, args, scratch)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results["notes"].append(f"Decode measurement failed: {exc}")
            _log(start, "decode: done")
            try:
                results["many_streams"] = _many_streams(emu, args, scratch)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results["many_streams"] = {"error": f"failed: {exc}"}
            _log(start, f"{args.streams} streams: done")
            try:
                results["telemetry"] = _telemetry.run(emu.base_url, args, run_worker, scratch)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results["telemetry"] = {"error": f"failed: {exc}"}
            _log(start, "telemetry: done")
        times = {name: time_import(stmt, scratch, 7) for name, stmt in IMPORTS.items()}
        _log(start, "imports: done")
    ours, theirs = times["mpt_async"], times["httpx+anyio+attrs+cattrs"]
    results["imports"] = {
        "runs": 7,
        "times": {k: v for k, v in times.items() if v is not None},
        "ratio": ours / theirs if ours and theirs else None,
    }
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
    _report.write_markdown(results, args.out / "RESULTS.md", chart.name if has_chart else None)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(_report.console(results))
    print(f"\nwrote {args.out / 'RESULTS.md'}" + (f" and {chart}" if has_chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
