"""Run every CPU benchmark in turn (``make bench``), then print the summary table of bench/results/.

Run: ``.venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--table]``

Each benchmark is its own script, run as a subprocess with the flags below; ``--quick`` caps N and
durations for a shared or small machine (the figures then say so in their JSON). GPU benchmarks
(``bench/gpu_*.py``) are not run here: they need a GPU host (see their docstrings). ``--table`` only
prints the markdown table from the JSON files already in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

# name -> (script, full flags, quick flags)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "live_sessions": (
        "live_sessions.py",
        ["--max-n", "12", "--duration", "30"],
        ["--max-n", "4", "--duration", "20"],
    ),
    "hangup_latency": ("hangup_latency.py", ["--minutes", "10"], ["--minutes", "2"]),
    "long_session": ("long_session.py", ["--minutes", "60"], ["--minutes", "10", "--clip-minutes", "2"]),
    "replay": ("replay.py", [], ["--minutes", "1"]),
    "encoder_streaming": ("encoder_streaming.py", [], []),
    "transcribe_wer": ("transcribe_wer.py", [], ["--quick"]),
}


def run(names: list[str], quick: bool) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for name in names:
        script, full, short = BENCHES[name]
        cmd = [sys.executable, str(BENCH / script), *(short if quick else full)]
        print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=BENCH.parent)
        status[name] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"=== {name}: exit {rc} after {status[name]['wall_s']} s", flush=True)
    return status


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table() -> str:
    """Markdown rows: benchmark | figure | target | met | load | date | command."""
    rows = [
        "| benchmark | figure | target | met | load (1/5/15 min) | date (UTC) | command |",
        "|---|---|---|---|---|---|---|",
    ]

    def add(doc: dict[str, Any], figure: str, target: str, met: bool | None) -> None:
        load = doc.get("load_avg_end") or doc.get("load_avg_start") or []
        mark = "–" if met is None else ("yes" if met else "**no**")
        rows.append(
            f"| {doc['bench']} | {figure} | {target} | {mark} | {'/'.join(str(x) for x in load)} "
            f"| {doc.get('date_utc', '')} | `{doc.get('command', '')}` |"
        )

    live = _load("live_sessions")
    if live:
        for kind, best in live["largest_real_time_n"].items():
            need = 8 if kind == "demo" else 4
            rows_k = live["rows"][kind]
            tested = max(r["n"] for r in rows_k)
            p95 = {r["n"]: r["lag_p95_s"] for r in rows_k}
            add(
                live,
                f"{kind}: largest real-time N = {best} (tested up to {tested}; lag p95 by N {p95})",
                f"≥ {need}",
                best >= need,
            )
    hang = _load("hangup_latency")
    if hang:
        s, o = hang["streaming"], hang["offline"]
        add(
            hang,
            f"{hang['minutes']:g}-min session: hang-up → final {s['hangup_latency_s']} s "
            f"vs offline {o['total_s']} s ({hang['ratio_pct']} %)",
            "≤ 5 %",
            bool(hang["meets_target"]),
        )
    long = _load("long_session")
    if long:
        add(
            long,
            f"{long['minutes']:g}-min session: RSS slope {long['slope_mb_per_hour_second_half']} MB/h "
            f"(2nd half), peak {long['rss_peak_mb']} MB",
            "flat",
            None,
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (shared/small machines)")
    p.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these")
    p.add_argument("--table", action="store_true", help="only print the table of existing results")
    args = p.parse_args()
    if not args.table:
        names = args.only or list(BENCHES)
        status = run([n for n in names if (BENCH / BENCHES[n][0]).exists()], args.quick)
        failed = [n for n, s in status.items() if s["rc"] != 0]
        if failed:
            print("failed:", ", ".join(failed), file=sys.stderr)
    print(table())
    if not args.table and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
