"""Turning the measurements into a console table, ``RESULTS.md`` and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._clients import DESCRIPTIONS, HTTPX_FLOOR

MODES = ("chat", "stream")
MODE_TITLES = {"chat": "non-stream chat", "stream": "50-chunk stream, read to the end"}
#: A server busier than this was (nearly) saturated during the cell.
SERVER_BUSY = 0.9
#: Other processes using more than this share of a core during a cell make it noisy.
OTHER_LOAD = 0.15

# The project's targets.
MAX_VS_QIANFAN = 0.5
MAX_VS_HTTPX = 1.3
MAX_SCALING = 1.5
MAX_RSS_MB = 200.0
MAX_IMPORT = 1.2
MAX_DECODE = 1.2


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def cell(results: dict, client: str, mode: str, conc: int) -> dict | None:
    """One measured cell, or ``None``."""
    for c in results["clients"].get(client, {}).get("cells", []):
        if c["mode"] == mode and c["conc"] == conc:
            return c
    return None


def table_rows(results: dict) -> list[list[str]]:
    """The main table: one row per client x mode x concurrency."""
    rows = []
    for client, entry in results["clients"].items():
        if "cells" not in entry:
            rows.append([client, "-", "-", "-", "-", "-", "-", "-", "-", "see notes"])
            continue
        for c in entry["cells"]:
            busy = c["server_util"] is not None and c["server_util"] >= SERVER_BUSY
            rows.append(
                [
                    client,
                    c["mode"],
                    str(c["conc"]),
                    f"{c['cpu_ms']:.3f}",
                    f"{c['wall_ms']:.3f}",
                    f"{c['rate']:.0f}",
                    _pct(c["client_util"]),
                    _pct(c["server_util"]) + (" (busy)" if busy else ""),
                    _pct(c.get("other_util")),
                    str(c["calls"]),
                ]
            )
    return rows


TABLE_HEAD = [
    "client",
    "mode",
    "conc",
    "CPU ms/call",
    "wall ms/call",
    "calls/s",
    "client CPU",
    "server CPU",
    "others",
    "calls",
]


def targets(results: dict) -> list[list[str]]:
    """Each target: what, measured value, limit, PASS/FAIL."""
    rows: list[list[str]] = []
    concs = results["settings"]["concurrency"]

    def add(what: str, value: float | None, limit: float, fmt: str = "{:.2f}") -> None:
        if value is None:
            rows.append([what, "n/a", f"<= {limit:g}", "n/a"])
        else:
            rows.append([what, fmt.format(value), f"<= {limit:g}", _verdict(value <= limit)])

    for mode in MODES:
        for conc in concs:
            ours = cell(results, "mpt_async", mode, conc)
            qf = cell(results, "qianfan", mode, conc)
            floors = [(name, cell(results, name, mode, conc)) for name in HTTPX_FLOOR]
            floors = [(name, f) for name, f in floors if f is not None]
            if ours is None:
                continue
            if qf is not None:
                add(
                    f"{mode} c={conc}: mpt_async / qianfan",
                    ours["cpu_ms"] / qf["cpu_ms"],
                    MAX_VS_QIANFAN,
                )
            if floors:
                name, best = min(floors, key=lambda item: item[1]["cpu_ms"])
                add(
                    f"{mode} c={conc}: mpt_async / best raw httpx ({name})",
                    ours["cpu_ms"] / best["cpu_ms"],
                    MAX_VS_HTTPX,
                )
    for mode in MODES:
        low = cell(results, "mpt_async", mode, min(concs))
        high = cell(results, "mpt_async", mode, max(concs))
        if low and high:
            add(
                f"{mode}: mpt_async c={max(concs)} / c={min(concs)}",
                high["cpu_ms"] / low["cpu_ms"],
                MAX_SCALING,
            )
    many = results.get("many_streams")
    if many and "complete" in many:
        ok = many["complete"] == many["streams"]
        rows.append(
            [
                f"{many['streams']} concurrent streams: all complete",
                f"{many['complete']}/{many['streams']}",
                "all",
                _verdict(ok),
            ]
        )
        tokens = many.get("token_requests")
        rows.append(
            [
                f"{many['streams']} concurrent streams: token requests",
                str(tokens),
                "== 1",
                _verdict(tokens == 1),
            ]
        )
        add(
            f"{many['streams']} concurrent streams: peak RSS (MB)",
            many["peak_rss_mb"],
            MAX_RSS_MB,
            "{:.1f}",
        )
    imports = results.get("imports")
    if imports:
        add("import mpt_async / import httpx, anyio, attrs, cattrs", imports["ratio"], MAX_IMPORT)
    decode = results.get("decode")
    if decode and decode.get("ratio") is not None:
        add(
            "stream decoding per chunk: mpt_async / bare aiter_lines+json.loads (replayed)",
            decode["ratio"],
            MAX_DECODE,
        )
    return rows


def bottlenecks(results: dict) -> list[str]:
    """Plain-language notes on cells where the server, not the client, was saturated."""
    notes = []
    for client, entry in results["clients"].items():
        for c in entry.get("cells", []):
            util = c["server_util"]
            if util is not None and util >= SERVER_BUSY:
                notes.append(
                    f"{client} {c['mode']} c={c['conc']}: server CPU {util * 100:.0f}% "
                    f"(client {c['client_util'] * 100:.0f}%)"
                )
    return notes


def noisy(results: dict) -> list[str]:
    """Cells during which other processes on the machine used a noticeable share of CPU."""
    notes = []
    for client, entry in results["clients"].items():
        for c in entry.get("cells", []):
            other = c.get("other_util")
            if other is not None and other >= OTHER_LOAD:
                notes.append(f"{client} {c['mode']} c={c['conc']}: others {other * 100:.0f}%")
    return notes


def format_table(head: list[str], rows: list[list[str]]) -> str:
    """A fixed-width text table."""
    widths = [max(len(str(r[i])) for r in [head, *rows] if i < len(r)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)) for r in rows)
    return "\n".join(lines)


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.extend("| " + " | ".join(r + [""] * (len(head) - len(r))) + " |" for r in rows)
    return "\n".join(lines)


def console(results: dict) -> str:
    """Everything worth printing at the end of a run."""
    parts = [
        format_table(TABLE_HEAD, table_rows(results)),
        "",
        format_table(["target", "value", "limit", "verdict"], targets(results)),
    ]
    extra = _extras_lines(results)
    if extra:
        parts += ["", *extra]
    if "telemetry" in results:
        from benchmarks import _telemetry

        parts += ["", _telemetry.console(results["telemetry"])]
    missing = _missing(results)
    if missing:
        parts += ["", *missing]
    notes = bottlenecks(results)
    if notes:
        parts += ["", "Server saturated (>= 90% of its core) in:", *("  " + n for n in notes)]
    busy = noisy(results)
    if busy:
        parts += ["", "Other processes busy (>= 15% of a core) during:", *("  " + n for n in busy)]
    return "\n".join(parts)


def _missing(results: dict) -> list[str]:
    return [
        f"{client}: {entry.get('skipped') or entry.get('error')}"
        for client, entry in results["clients"].items()
        if "cells" not in entry
    ]


def _extras_lines(results: dict) -> list[str]:
    lines = []
    many = results.get("many_streams")
    if many and "complete" in many:
        lines.append(
            f"{many['streams']} streams via one mpt_async client: {many['complete']} complete, "
            f"{many['errors']} errors, peak {many['peak_open']} open at once, "
            f"token requests {many.get('token_requests')}, "
            f"peak RSS {many['peak_rss_mb']:.1f} MB (after imports {many['rss_before_mb']:.1f}), "
            f"{many['wall_s']:.2f} s wall, {many['cpu_s']:.2f} s CPU"
        )
    elif many:
        lines.append(f"many streams: {many.get('error')}")
    imports = results.get("imports")
    if imports:
        lines.append(
            "import (median of {runs}, ms): ".format(**imports)
            + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in imports["times"].items())
        )
    decode = results.get("decode")
    if decode:
        replay = decode["replay_us"]
        lines.append(
            f"decode, replayed from memory (us CPU per chunk, {decode['chunks']}-chunk answer): "
            f"mpt_async {replay['mpt_async']:.2f}, bare loop {replay['bare']:.2f}, "
            f"ratio {decode['ratio']:.2f}"
        )
        lines.append(
            "decode over loopback (us CPU per chunk, conc 1): "
            + ", ".join(f"{k} {v:.2f}" for k, v in decode["loopback_us"].items())
            + "; ratios "
            + ", ".join(f"{k} {v:.2f}" for k, v in decode["loopback_ratios"].items())
        )
    return lines


def write_markdown(results: dict, path: Path, chart: str | None) -> None:
    """``RESULTS.md``: machine, settings, the table, targets, extras, notes."""
    meta = results["meta"]
    s = results["settings"]
    out = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks` (see `README.md` here for what is measured and how).",
        "",
        "## Machine",
        "",
        f"- date: {meta['date']}",
        f"- CPU: {meta['cpu']} ({meta['cores']} cores; {meta['pinning']})",
        f"- OS: {meta['platform']}",
        f"- Python: {meta['python']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()),
        f"- server: `python -m mpt_async emulator --stream-chunks {s['stream_chunks']}`"
        + (" with a uvloop event loop" if s["server_uvloop"] else " (asyncio event loop)"),
        f"- per cell: {s['warmup_note']}; then {s['rounds']} timed rounds of "
        f"{s['calls_chat']} chat / {s['calls_stream']} stream calls (up to 2 more when other "
        "processes were busy during one); the median quiet round is shown",
        f"- total run time: {meta['elapsed_s']:.0f} s",
        "",
        "## CPU per call",
        "",
        "Client CPU is `time.process_time()` of the client's own process (a fresh one per "
        "client) over the timed round, divided by the calls. Server CPU is the emulator "
        "process's share of one core over the same round; `(busy)` marks a saturated server. "
        "`others` is what the rest of the machine used meanwhile (from `/proc/stat`), as a "
        "share of one core: other work on these two cores makes a cell noisy.",
        "",
        markdown_table(TABLE_HEAD, table_rows(results)),
        "",
        "Rows:",
        "",
    ]
    for client, entry in results["clients"].items():
        transport = entry.get("transport")
        suffix = f" — {transport}" if transport else ""
        if "cells" not in entry:
            suffix = f" — {entry.get('skipped') or entry.get('error')}"
        out.append(f"- `{client}`: {DESCRIPTIONS.get(client, client)}{suffix}")
    orjson = "orjson" in meta["packages"]
    out += [
        "",
        "The raw rows encode and decode with the standard library's `json`; mpt_async picks "
        "its own JSON library (orjson when the `speed` extra installed it: "
        + ("installed here" if orjson else "not installed here")
        + "). Each row runs in a fresh process; all rows share one emulator.",
    ]
    if chart:
        out += ["", f"![CPU per call]({chart})"]
    out += [
        "",
        "## Targets",
        "",
        markdown_table(["target", "value", "limit", "verdict"], targets(results)),
        "",
        "## Other measurements",
        "",
        *(f"- {line}" for line in _extras_lines(results)),
    ]
    decode = results.get("decode")
    if decode:
        out.append(
            "- decode: one 500-chunk answer recorded from the emulator is replayed from memory, "
            "one event per read, to mpt_async's stream and to a bare `aiter_lines()` + "
            "`json.loads` loop (alternating rounds, median); this ratio is the target. Over "
            "loopback the same answers are also read at concurrency 1 over each transport; "
            "there the cost per chunk also depends on how many events each read happens to "
            "bring (who is ahead, server or client), so those ratios are noisier. Both include "
            "each request's own cost spread over its 500 chunks."
        )
    if "telemetry" in results:
        from benchmarks import _telemetry

        out += ["", _telemetry.TITLE, "", *_telemetry.lines(results["telemetry"])]
    notes = bottlenecks(results)
    out += ["", "## Was the server the bottleneck?", ""]
    if notes:
        out += [
            "The emulator (one process, one core) was saturated in these cells, so their "
            "wall time and calls/s measure the server, not the client. Client CPU per call "
            "is still the client's own work, but with the server as the pace-setter each "
            "event-loop wake-up finds fewer events ready, so those numbers lean high:",
            "",
            *(f"- {n}" for n in notes),
        ]
    else:
        out.append("No: the server stayed below 90% of its core in every cell.")
    busy = noisy(results)
    out += ["", "## Other load on the machine", ""]
    if busy:
        out += [
            "Other processes used 15% of a core or more during these cells; their numbers "
            "are less trustworthy than the rest:",
            "",
            *(f"- {n}" for n in busy),
        ]
    else:
        out.append("None worth mentioning: under 15% of a core in every cell.")
    for note in results.get("notes", []):
        out += ["", note]
    path.write_text("\n".join(out) + "\n")


def plot(results: dict, path: Path) -> bool:
    """CPU ms per call against concurrency, one line per client, a panel per mode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    concs = results["settings"]["concurrency"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, mode in zip(axes, MODES, strict=True):
        for client, entry in results["clients"].items():
            points = [(c["conc"], c["cpu_ms"]) for c in entry.get("cells", []) if c["mode"] == mode]
            if not points:
                continue
            xs, ys = zip(*sorted(points), strict=True)
            style: dict[str, Any] = {"marker": "o"}
            if client == "mpt_async":
                style.update(linewidth=3, zorder=5)
            elif client.startswith("mpt_async"):
                style.update(linestyle="--")
            ax.plot(xs, ys, label=client, **style)
        ax.set_xscale("log")
        ax.set_xticks(concs)
        ax.set_xticklabels([str(c) for c in concs])
        ax.set_ylim(bottom=0)
        ax.set_title(MODE_TITLES[mode])
        ax.set_xlabel("concurrency (calls in flight)")
        ax.set_ylabel("client CPU ms per call")
        ax.grid(visible=True, alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
