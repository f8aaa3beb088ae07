"""Draw the README's picture: the trace of a slow call, as the test suite exports it.

``python -m benchmarks._telemetry_trace`` runs
``tests/test_telemetry.py::test_slow_call_shows_refresh_and_rate_limit_wait`` (asyncio),
which writes the call's span, child spans and events as JSON when ``MPT_ASYNC_TRACE_OUT``
is set, and draws them as a timeline into ``docs/images/trace-slow-call.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images" / "trace-slow-call.png"
TEST = "tests/test_telemetry.py::test_slow_call_shows_refresh_and_rate_limit_wait[asyncio]"
COLOURS = {
    "chat": "#4c72b0",
    "mpt_async.rate_limit_wait": "#dd8452",
    "mpt_async.token_fetch": "#55a868",
}


def export(path: Path) -> dict[str, Any]:
    """Run the test with the export switched on; return what it wrote."""
    env = {**os.environ, "MPT_ASYNC_TRACE_OUT": str(path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=120)
    return json.loads(path.read_text())


def _label(event: dict[str, Any]) -> str:
    got = event["attributes"]
    if event["name"] == "mpt_async.retry":
        return f"retry {got['mpt_async.retry.attempt']}\n({got['error.type']})"
    return f"token refused\n({got['error.type']})"


def draw(trace: dict[str, Any], out: Path) -> None:
    """A timeline: the call on top, its child spans below, events as marks on the call."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(trace["name"], 0.0, trace["end"], COLOURS["chat"])]
    for child in trace["children"]:
        colour = COLOURS.get(child["name"], "grey")
        rows.append((child["name"], child["start"], child["end"], colour))
    fig, ax = plt.subplots(figsize=(8, 1.1 + 0.45 * len(rows)), dpi=100)
    for y, (_, start, end, colour) in enumerate(rows):
        ax.barh(y, (end - start) * 1e3, left=start * 1e3, height=0.6, color=colour)
        ax.text(end * 1e3 + 4, y, f"{(end - start) * 1e3:.0f} ms", va="center", fontsize=8)
    for event in trace["events"]:
        at = event["at"] * 1e3
        ax.axvline(at, color="#c44e52", linestyle="--", linewidth=1)
        ax.text(at + 3, len(rows) + 0.55, _label(event), fontsize=7, va="bottom", color="#c44e52")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the call started", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlim(0, trace["end"] * 1e3 * 1.12)
    ax.set_ylim(len(rows) + 0.6, -0.5)
    attrs = trace["attributes"]
    ax.set_title(
        f"{trace['name']}: one span; usage {attrs['gen_ai.usage.input_tokens']} in / "
        f"{attrs['gen_ai.usage.output_tokens']} out tokens (exported by tests/test_telemetry.py)",
        fontsize=8,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> int:
    """Export, draw, and say where the picture went."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = export(Path(tmp) / "trace.json")
    draw(trace, OUT)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
