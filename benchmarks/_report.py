"""Turning the measurements into a console table, ``RESULTS.md`` and the chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._clients import DESCRIPTIONS, HTTPX_FLOOR
from benchmarks._section import Row, Section, target, verdict

MODES = ("chat", "stream")
MODE_TITLES = {"chat": "non-stream chat", "stream": "50-chunk stream, read to the end"}
#: A server busier than this was (nearly) saturated during the cell.
SERVER_BUSY = 0.9
#: Other processes using more than this share of a core during a cell make it noisy.
OTHER_LOAD = 0.15

# The project's targets.
MAX_VS_QIANFAN = 0.5
MAX_VS_HTTPX = 1.3
MAX_VS_AIOHTTP = {"chat": 2.0, "stream": 1.2}
MAX_SCALING = 1.5
MAX_TRIO_SCALING = 1.3
MAX_TRIO_VS_ASYNCIO = 1.3
MAX_RSS_MB = 150.0
MAX_IMPORT = 1.2
MAX_DECODE = 1.2

#: Profiled clients (all cells), and those profiled at the top concurrency only (floors).
PROFILED = ("mpt_async", "mpt_async/trio", "httpx+aiohttp", "httpx+pool/trio", "aiohttp")
PROFILED_AT_TOP_ONLY = ("httpx+aiohttp", "httpx+pool/trio", "aiohttp")
#: Own-time entries per profiled cell in RESULTS.md.
PROFILE_TOP = 8


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


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


def _ratio(results: dict, a: str, b: str, mode: str, conc: int) -> float | None:
    one, other = cell(results, a, mode, conc), cell(results, b, mode, conc)
    return None if one is None or other is None else one["cpu_ms"] / other["cpu_ms"]


def _info(what: str, value: float | None, note: str = "(floor)") -> Row:
    return [what, "n/a" if value is None else f"{value:.2f}", note, "info"]


#: What the report says of a ratio across processes that the paired section decides.
_SEE_PAIRED = "(see paired)"


def _cell_targets(results: dict, mode: str, conc: int) -> list[Row]:
    """The per-cell ratios: against qianfan, the httpx floor, raw aiohttp; trio vs asyncio."""
    at = f"{mode} c={conc}"

    def ratio(a: str, b: str) -> float | None:
        return _ratio(results, a, b, mode, conc)

    rows = [target(f"{at}: mpt_async / qianfan", ratio("mpt_async", "qianfan"), MAX_VS_QIANFAN)]
    # With the paired section run, its same-process ratios decide these two targets; the
    # ones across separate processes stay as information.
    paired = isinstance(results.get("paired"), dict) and "error" not in results["paired"]
    floors = [(n, f) for n in HTTPX_FLOOR if (f := cell(results, n, mode, conc)) is not None]
    if floors:
        name, _ = min(floors, key=lambda item: item[1]["cpu_ms"])
        what = f"{at}: mpt_async / best raw httpx ({name})"
        value = ratio("mpt_async", name)
        rows.append(
            _info(what, value, _SEE_PAIRED) if paired else target(what, value, MAX_VS_HTTPX)
        )
        rows.append(_info(f"{at}: best raw httpx ({name}) / raw aiohttp", ratio(name, "aiohttp")))
    what, value = f"{at}: mpt_async / raw aiohttp", ratio("mpt_async", "aiohttp")
    limit = MAX_VS_AIOHTTP[mode]
    rows.append(_info(what, value, _SEE_PAIRED) if paired else target(what, value, limit))
    what = f"{at}: mpt_async/trio / mpt_async (asyncio)"
    rows.append(target(what, ratio("mpt_async/trio", "mpt_async"), MAX_TRIO_VS_ASYNCIO))
    what = f"{at}: raw httpx+pool/trio / mpt_async (asyncio)"
    rows.append(_info(what, ratio("httpx+pool/trio", "mpt_async")))
    return rows


def targets(results: dict, sections: Sequence[Section] = ()) -> list[Row]:
    """Each target: what, measured value, limit, met / NOT MET (and floors, as info)."""
    rows: list[Row] = []
    concs = results["settings"]["concurrency"]
    if results.get("clients"):
        for mode in MODES:
            for conc in concs:
                rows.extend(_cell_targets(results, mode, conc))
        low, high = min(concs), max(concs)
        for mode in MODES:
            for client, limit in (("mpt_async", MAX_SCALING), ("mpt_async/trio", MAX_TRIO_SCALING)):
                scaling = _ratio_across(results, client, mode, high, low)
                rows.append(target(f"{mode}: {client} c={high} / c={low}", scaling, limit))
    for section in sections:
        result = results.get(section.name)
        if isinstance(result, dict) and "error" not in result:
            rows.extend(section.targets(result))
    return [r for r in rows if r[1] != "n/a" or r[3] != "info"]


def _ratio_across(results: dict, client: str, mode: str, high: int, low: int) -> float | None:
    one, other = cell(results, client, mode, high), cell(results, client, mode, low)
    return None if one is None or other is None else one["cpu_ms"] / other["cpu_ms"]


def many_targets(many: dict) -> list[Row]:
    """Each runtime's concurrent streams: all complete, one token, peak RSS."""
    rows: list[Row] = []
    for runtime, got in many.items():
        if "complete" not in got:
            rows.append([f"concurrent streams on {runtime}", "failed", "all", verdict(False)])
            continue
        n = got["streams"]
        what = f"{n} concurrent streams on {runtime}"
        ok = got["complete"] == n
        rows.append([f"{what}: all complete", f"{got['complete']}/{n}", "all", verdict(ok)])
        tokens = got.get("token_requests")
        rows.append([f"{what}: token requests", str(tokens), "== 1", verdict(tokens == 1)])
        rows.append(target(f"{what}: peak RSS (MB)", got["peak_rss_mb"], MAX_RSS_MB, "{:.1f}"))
    return rows


def many_lines(many: dict) -> list[str]:
    """One line per runtime for the console and "Other measurements"."""
    lines = []
    for runtime, got in many.items():
        if "complete" not in got:
            lines.append(f"many streams on {runtime}: {got.get('error')}")
            continue
        lines.append(
            f"{got['streams']} streams via one mpt_async client on {runtime}: "
            f"{got['complete']} complete, {got['errors']} errors"
            + (f" ({'; '.join(got['first_errors'])})" if got["errors"] else "")
            + f", peak {got['peak_open']} open at once, "
            f"token requests {got.get('token_requests')}, "
            f"peak RSS {got['peak_rss_mb']:.1f} MB (after imports {got['rss_before_mb']:.1f}), "
            f"{got['wall_s']:.2f} s wall, {got['cpu_s']:.2f} s CPU"
        )
    return lines


def import_targets(imports: dict) -> list[Row]:
    """Import time against the four dependencies."""
    what = "import mpt_async / import httpx, anyio, attrs, cattrs"
    return [target(what, imports.get("ratio"), MAX_IMPORT)]


def import_lines(imports: dict) -> list[str]:
    """The import times measured."""
    return [
        "import (fewest of {runs} fresh processes, ms): ".format(**imports)
        + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in imports["times"].items())
    ]


def decode_targets(decode: dict) -> list[Row]:
    """Stream decoding per chunk against a bare loop."""
    what = "stream decoding per chunk: mpt_async / bare aiter_lines+json.loads (replayed)"
    return [target(what, decode.get("ratio"), MAX_DECODE)]


def decode_lines(decode: dict) -> list[str]:
    """The decoding costs measured."""
    replay = decode["replay_us"]
    return [
        f"decode, replayed from memory (us CPU per chunk, {decode['chunks']}-chunk answer): "
        f"mpt_async {replay['mpt_async']:.2f}, bare loop {replay['bare']:.2f}, "
        f"ratio {decode['ratio']:.2f}",
        "decode over loopback (us CPU per chunk, conc 1): "
        + ", ".join(f"{k} {v:.2f}" for k, v in decode["loopback_us"].items())
        + "; ratios "
        + ", ".join(f"{k} {v:.2f}" for k, v in decode["loopback_ratios"].items()),
        "decode: one 500-chunk answer recorded from the emulator is replayed from memory, "
        "one event per read, to mpt_async's stream and to a bare `aiter_lines()` + "
        "`json.loads` loop (alternating rounds, median); this ratio is the target. Over "
        "loopback the same answers are also read at concurrency 1 over each transport; "
        "there the cost per chunk also depends on how many events each read happens to "
        "bring (who is ahead, server or client), so those ratios are noisier. Both include "
        "each request's own cost spread over its 500 chunks.",
    ]


def _shares(entry: dict, limit: float = 0.02) -> str:
    return ", ".join(f"{k} {v * 100:.0f}%" for k, v in entry["libraries"].items() if v >= limit)


def _profiled(profiles: dict, client: str, mode: str) -> dict | None:
    cells = [c for c in profiles.get(client, {}).get("cells", []) if c["mode"] == mode]
    return max(cells, key=lambda c: c["conc"]) if cells else None


def _share(c: dict, *libraries: str) -> float:
    return sum(c["libraries"].get(name, 0.0) for name in libraries)


def _floor_notes(profiles: dict) -> list[str]:
    """Where the floors are, read off the profiles of the raw loops (highest concurrency)."""
    notes = []
    for mode in MODES:
        floor = _profiled(profiles, "httpx+aiohttp", mode)
        if floor is not None:
            notes.append(
                f"- {mode}, raw httpx over aiohttp (c={floor['conc']}): httpx's model takes "
                f"{_share(floor, 'httpx model') * 100:.0f}% of the own time and its client "
                f"{_share(floor, 'httpx client') * 100:.0f}%: work the raw aiohttp loop does "
                "not do, and that any client built on `httpx.AsyncClient` does."
            )
        trio = _profiled(profiles, "httpx+pool/trio", mode)
        if trio is not None:
            notes.append(
                f"- {mode}, raw httpx on trio over the pool (c={trio['conc']}): trio "
                f"{_share(trio, 'trio', 'outcome') * 100:.0f}%, httpx "
                f"{_share(trio, 'httpx model', 'httpx client') * 100:.0f}%, the pool "
                f"{_share(trio, 'mpt_async') * 100:.0f}%, httptools "
                f"{_share(trio, 'httptools') * 100:.0f}% (h11 "
                f"{_share(trio, 'h11') * 100:.0f}%), httpcore "
                f"{_share(trio, 'httpcore') * 100:.0f}%: the pool parses in C (httptools, "
                "else h11 in Python) over httpcore's trio streams; the rest is trio's "
                "checkpoints and httpx's model."
            )
    if not notes:
        return []
    return ["", "Where the floors are (share of own time, from the profiles below):", "", *notes]


def profile_markdown(profiles: dict) -> list[str]:
    """The profile section: per cell, own time by library and the top functions."""
    out = [
        "## Where the time goes (cProfile)",
        "",
        "Each profiled client ran the same cells again, in a fresh process, under cProfile "
        "(which inflates the time of small Python functions: compare shares and call "
        "counts, not the absolute numbers, with the table above). Own time is split by "
        "library; httpx is split into its model (`_models`, `_urls`, `_urlparse`, "
        "`_content`, `_utils`: requests, responses, URLs, headers) and its client. "
        "Per request: calls, own µs and cumulative µs.",
    ]
    out += _floor_notes(profiles)
    for client, entry in profiles.items():
        if "cells" not in entry:
            out += ["", f"- `{client}`: {entry.get('error')}"]
            continue
        for c in entry["cells"]:
            out += [
                "",
                f"**{client} {c['mode']} c={c['conc']}** — {c['profiled_us_per_call']:.0f} µs "
                f"per call profiled; own time: {_shares(c)}",
                "",
                markdown_table(
                    ["function", "library", "calls/req", "own µs/req", "cum µs/req"],
                    [
                        [
                            f"`{e['function']}`",
                            e["library"],
                            f"{e['calls_per_request']:.1f}",
                            f"{e['own_us_per_request']:.1f}",
                            f"{e['cum_us_per_request']:.1f}",
                        ]
                        for e in c["top"][:PROFILE_TOP]
                    ],
                ),
            ]
    return out


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


def console(results: dict, sections: Sequence[Section] = ()) -> str:
    """Everything worth printing at the end of a run."""
    parts = [
        format_table(TABLE_HEAD, table_rows(results)),
        "",
        format_table(["target", "value", "limit", "verdict"], targets(results, sections)),
    ]
    extra = _extras_lines(results, sections)
    if extra:
        parts += ["", *extra]
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


def _extras_lines(results: dict, sections: Sequence[Section]) -> list[str]:
    lines = []
    for section in sections:
        result = results.get(section.name)
        if isinstance(result, dict) and "error" in result:
            lines.append(f"{section.name}: {result['error']}")
        elif result is not None:
            lines.extend(section.lines(result))
    return lines


def write_markdown(
    results: dict,
    path: Path,
    chart: str | None,
    sections: Sequence[Section] = (),
) -> None:
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
        "The raw httpx rows encode and decode with the standard library's `json`, the raw "
        "aiohttp row (the floor) decodes with orjson when installed; mpt_async picks its own "
        "JSON library (orjson when the `speed` extra installed it: "
        + ("installed here" if orjson else "not installed here")
        + "). Each row runs in a fresh process; all rows share one emulator.",
    ]
    if chart:
        out += ["", f"![CPU per call]({chart})"]
    out += [
        "",
        "## Targets",
        "",
        "Ratios are of client CPU per call, both measured in this run. `info` rows are not "
        "targets: they show the floor a library sets (a raw loop with no mpt_async code).",
        "",
        markdown_table(["target", "value", "limit", "verdict"], targets(results, sections)),
        "",
        "## Other measurements",
        "",
        *(f"- {line}" for line in _extras_lines(results, sections)),
    ]
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
    for section in sections:
        result = results.get(section.name)
        if isinstance(result, dict) and "error" not in result:
            block = section.markdown(result)
            if block:
                out += ["", *block]
    path.write_text("\n".join(out) + "\n")


def _plot_many(ax: Any, many: dict) -> None:
    """Peak RSS and wall time of the concurrent streams, one pair of bars per runtime."""
    done = {rt: got for rt, got in many.items() if "complete" in got}
    if not done:
        ax.set_axis_off()
        return
    names = list(done)
    xs = range(len(names))
    rss = [done[rt]["peak_rss_mb"] for rt in names]
    ax.bar([x - 0.2 for x in xs], rss, width=0.4, label="peak RSS (MB)")
    ax.axhline(MAX_RSS_MB, color="grey", linestyle=":", label=f"{MAX_RSS_MB:g} MB target")
    twin = ax.twinx()
    twin.bar(
        [x + 0.2 for x in xs],
        [done[rt]["wall_s"] for rt in names],
        width=0.4,
        color="tab:orange",
        label="wall (s)",
    )
    twin.set_ylabel("wall seconds")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(
        [f"{rt}\n{done[rt]['complete']}/{done[rt]['streams']} complete" for rt in names]
    )
    ax.set_ylabel("peak RSS (MB)")
    streams = max(got["streams"] for got in done.values())
    ax.set_title(f"{streams:,} concurrent streams, one client")
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small", loc="upper center")


def plot(results: dict, path: Path) -> bool:
    """CPU ms per call against concurrency, a panel per mode; the concurrent streams."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    concs = results["settings"]["concurrency"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    for ax, mode in zip(axes, MODES, strict=False):
        for client, entry in results["clients"].items():
            points = [(c["conc"], c["cpu_ms"]) for c in entry.get("cells", []) if c["mode"] == mode]
            if not points:
                continue
            xs, ys = zip(*sorted(points), strict=True)
            style: dict[str, Any] = {"marker": "o"}
            if client in ("mpt_async", "mpt_async/trio"):
                style.update(linewidth=3, zorder=5)
            elif client.startswith("mpt_async"):
                style.update(linestyle="--")
            elif client == "aiohttp":
                style.update(linestyle=":", color="black")
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
    _plot_many(axes[2], results.get("many_streams") or {})
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
