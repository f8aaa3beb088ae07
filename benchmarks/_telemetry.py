"""What telemetry costs: client CPU per call with it off, with only the API, and with the SDK.

Two fresh worker processes, each alternating call by call between two clients on one
event loop so that both see the same machine state:

- ``api``: ``Client(telemetry=False)`` against ``Client()`` with ``opentelemetry-api``
  installed and no SDK configured (the global no-op providers): the cost of being "off";
- ``sdk``: ``Client(telemetry=False)`` against ``Client()`` with the SDK configured (a
  tracer provider exporting every span to memory, a meter provider with an in-memory
  reader): the cost of being on.

``python -m benchmarks`` runs it among the rest (the ``telemetry`` section);
``python -m benchmarks._telemetry`` runs it alone (starting its own emulator) and updates
only its section of ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._clients import API_KEY, MESSAGES, SECRET_KEY
from benchmarks._section import Context, Row, target
from benchmarks._server import EmulatorProcess, cores, pin_self
from benchmarks._worker import cpu_seconds

HERE = Path(__file__).resolve().parent
TITLE = "## Telemetry overhead"
#: The most that the API alone (no SDK configured) may add to a call's CPU.
MAX_API_OVERHEAD = 0.03
CHUNKS = 50


def _sdk() -> Callable[[], None]:
    """Configure the global providers as an application would; returns a round's cleanup."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    def cleanup() -> None:
        if not exporter.get_finished_spans():
            raise RuntimeError("telemetry on, yet no span was exported")
        exporter.clear()
        reader.get_metrics_data()

    return cleanup


def _caller(client: Any, mode: str) -> Callable[[], Any]:
    """One checked call of ``mode`` through ``client``; returns its chunk count."""

    async def chat() -> int:
        if not (await client.chat(MESSAGES)).result:
            raise RuntimeError("empty reply")
        return 0

    async def stream() -> int:
        async with client.chat_stream(MESSAGES) as answer:
            return len([chunk async for chunk in answer])

    return chat if mode == "chat" else stream


async def _round(client: Any, mode: str, calls: int, conc: int) -> float:
    """Client CPU seconds for ``calls`` calls from ``conc`` tasks (checked answers)."""
    return await cpu_seconds(_caller(client, mode), conc, calls, CHUNKS if mode == "stream" else 0)


async def _pairs(clients: dict[str, Any], mode: str, n: int) -> list[tuple[float, float]]:
    """CPU seconds of ``n`` pairs of calls, one through each client, in alternating order.

    Pairing call by call keeps what the machine does meanwhile (a few percent of jitter on
    a VM, drifting over seconds) out of the comparison: both calls of a pair see it.
    """
    call = {name: _caller(client, mode) for name, client in clients.items()}
    expected = CHUNKS if mode == "stream" else 0
    gc.collect()
    pairs = []
    for i in range(n):
        got = {}
        for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
            cpu0 = time.process_time()
            chunks = await call[name]()
            got[name] = time.process_time() - cpu0
            if chunks != expected:
                raise RuntimeError(f"{chunks} chunks arrived, expected {expected}")
        pairs.append((got["off"], got["on"]))
    return pairs


async def _compare(spec: dict) -> dict:
    import mpt_async

    cleanup = _sdk() if spec["variant"] == "sdk" else None

    def make(telemetry: bool) -> Any:
        auth = mpt_async.AccessTokenAuth(API_KEY, SECRET_KEY)
        return mpt_async.Client(auth=auth, base_url=spec["base_url"], telemetry=telemetry)

    clients = {"off": make(False), "on": make(True)}
    try:
        return await _measure(spec, clients, cleanup)
    finally:
        for client in clients.values():
            await client.aclose()


def _idle_cost() -> float:
    """CPU seconds that one call spends on telemetry while no provider is set (no I/O)."""
    from mpt_async import ChatRequest, _telemetry

    server = _telemetry.server_of("http://127.0.0.1:80")
    request = ChatRequest(messages=MESSAGES)
    n = 100_000
    cpu0 = time.process_time()
    for _ in range(n):
        _telemetry.observe("mpt-30b-instruct", server, request)
    return (time.process_time() - cpu0) / n


async def _measure(spec: dict, clients: dict[str, Any], cleanup: Callable[[], None] | None) -> dict:
    out: dict[str, Any] = {}
    if cleanup is None:
        out["idle_us"] = _idle_cost() * 1e6
    for mode in ("chat", "stream"):
        calls = spec["calls_chat"] if mode == "chat" else spec["calls_stream"]
        for client in clients.values():  # warm-up: pools, token, caches
            await _round(client, mode, max(30, calls // 4), spec["conc"])
        pairs = []
        for _ in range(spec["rounds"]):
            pairs += await _pairs(clients, mode, calls)
            if cleanup is not None:
                cleanup()
        off = statistics.median(p[0] for p in pairs)
        on = statistics.median(p[1] for p in pairs)
        # The typical difference within a pair, against the typical call: robust to the
        # odd call that a collection or the machine slowed down, on either side.
        extra = statistics.median(p[1] - p[0] for p in pairs)
        out[mode] = {"off_us": off * 1e6, "on_us": on * 1e6, "overhead": extra / off}
    return out


def worker(spec: dict) -> dict:
    """The measuring side (in a fresh process: the global providers are set once)."""
    if spec["variant"] == "api":
        import opentelemetry.trace  # noqa: F401 - the API must be there to be measured
    return asyncio.run(_compare(spec))


def run(ctx: Context) -> dict:
    """Both comparisons, each in its own worker process."""
    args = ctx.args
    spec = {
        "task": "telemetry",
        # Rounds of a quarter of a second or more: shorter ones let the machine's jitter
        # (a few percent on this VM) pass for a difference between the two clients.
        "calls_chat": max(50, args.calls_chat // 4),
        "calls_stream": max(10, args.calls_stream // 4),
        "rounds": max(5, 7 * args.rounds),
        # One call at a time: then each call costs the same event-loop wake-ups whatever
        # the server's pace, which keeps a busy machine's noise out of a small difference.
        "conc": 1,
    }
    results: dict[str, Any] = {}
    for variant in ("api", "sdk"):
        results[variant] = ctx.worker({**spec, "variant": variant})
        ctx.log(f"telemetry {variant}: done")
    results["settings"] = spec
    return results


def targets(results: dict) -> list[Row]:
    """The row of the targets table: the API alone costs under 3%."""
    worst = max(results["api"][m]["overhead"] for m in ("chat", "stream"))
    return [
        target(
            "telemetry, API installed without SDK: CPU overhead per call (%)",
            worst * 100,
            MAX_API_OVERHEAD * 100,
            "{:+.1f}",
        )
    ]


def markdown(results: dict) -> list[str]:
    """The section of RESULTS.md, title included."""
    return [TITLE, "", *lines(results)]


def lines(results: dict) -> list[str]:
    """The markdown section's text (without its title)."""
    s = results["settings"]
    out = [
        f"Client CPU per call (µs), concurrency {s['conc']}, {s['calls_chat']} chats / "
        f"{s['calls_stream']} {CHUNKS}-chunk streams per round, {s['rounds']} rounds; each call "
        "through one client is paired with one through the other (alternating which goes "
        "first) in one process; the medians of the calls' CPU, and the median of the pairs' "
        "differences over the median call as the overhead (`benchmarks/_telemetry.py`).",
        "",
        "| comparison | mode | telemetry off | telemetry on | overhead |",
        "|---|---|---|---|---|",
    ]
    names = {
        "api": "API installed, no SDK configured",
        "sdk": "SDK configured (in-memory span exporter and metric reader)",
    }
    for variant, title in names.items():
        for mode in ("chat", "stream"):
            m = results[variant][mode]
            out.append(
                f"| {title} | {mode} | {m['off_us']:.0f} | {m['on_us']:.0f} "
                f"| {m['overhead'] * 100:+.1f}% |"
            )
    worst = max(results["api"][m]["overhead"] for m in ("chat", "stream"))
    verdict = "met" if worst < MAX_API_OVERHEAD else "NOT MET"
    idle = results["api"].get("idle_us")
    out += [
        "",
        f"Target: with the API installed and no SDK configured, under "
        f"{MAX_API_OVERHEAD * 100:.0f}% — worst {worst * 100:+.1f}%: **{verdict}**. "
        '"Off" is `Client(telemetry=False)`, which never imports OpenTelemetry (the same '
        "as not having the API installed).",
    ]
    if idle is not None:
        share = idle / results["api"]["chat"]["off_us"]
        out += [
            "",
            f"Measured directly (no I/O): while no provider is set, a call spends {idle:.2f} µs "
            f"on telemetry ({share * 100:.2f}% of a chat's CPU), and a stream's chunks nothing. "
            "End-to-end differences smaller than the machine's noise can show either sign.",
        ]
    return out


def replace_section(path: Path, section: list[str]) -> None:
    """Put the section into an existing RESULTS.md (replacing an older one), or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = "\n".join([TITLE, "", *section]) + "\n"
    start = text.find(TITLE)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        end = text.find("\n## ", start + len(TITLE))
        text = text[:start] + block + ("" if end < 0 else text[end:])
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run only this comparison against a fresh emulator and update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._telemetry")
    parser.add_argument("--calls-chat", type=int, default=1000)
    parser.add_argument("--calls-stream", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    client_core, server_core = cores()
    pin_self(client_core)
    with (
        tempfile.TemporaryDirectory(prefix="mpt-bench-") as tmp,
        EmulatorProcess(stream_chunks=CHUNKS, core=server_core) as emu,
    ):
        results = run(Context(args, emu, Path(tmp), {}, print))
    replace_section(args.out, lines(results))
    print("\n".join(lines(results)))
    print(f"updated {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
