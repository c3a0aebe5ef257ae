"""Run every CPU benchmark in turn (``make bench``), then print the summary table of bench/results/.

Run: ``.venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--table]``

Each benchmark is its own script, run as a subprocess with the flags below; ``--quick`` caps N and
durations for a shared or small machine (the figures then say so in their JSON). GPU benchmarks
(``bench/gpu_*.py``) are not run here: they need a GPU host (see their docstrings). Each benchmark
writes one current file, ``bench/results/<name>.json``. ``--table`` only prints the markdown table
(``bench/make_table.py``) from the JSON files already in ``bench/results/``; ``--write-table`` also puts
it into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from make_table import DOC, replace_table, table  # bench/ is the script's directory

BENCH = Path(__file__).resolve().parent

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
    "visual_validation": ("visual_validation.py", [], ["--blink-s", "20"]),
    "stream_rss": ("stream_rss.py", [], ["--skip-before"]),
    "browser_audio": ("browser_audio.py", ["--runs", "3"], ["--answers", "2"]),
    "prompt_coverage": ("prompt_coverage.py", [], ["--quick"]),
    "stt_agreement": ("stt_agreement.py", [], ["--quick"]),
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (shared/small machines)")
    p.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these")
    p.add_argument("--table", action="store_true", help="only print the table of existing results")
    p.add_argument("--write-table", action="store_true", help="also write the table into docs/benchmarks.md")
    args = p.parse_args()
    if not args.table:
        names = args.only or list(BENCHES)
        status = run([n for n in names if (BENCH / BENCHES[n][0]).exists()], args.quick)
        failed = [n for n, s in status.items() if s["rc"] != 0]
        if failed:
            print("failed:", ", ".join(failed), file=sys.stderr)
    print(table())
    if args.write_table:
        DOC.write_text(replace_table(DOC.read_text(), table()))
    if not args.table and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
