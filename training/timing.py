"""Per-step wall and CPU times of a pipeline run, printed as a table and stored in its reports.

Each step records when it started and ended (seconds from the run's start, so overlapping steps are
visible), its wall time, the CPU seconds of this process and of finished child processes (worker
pools) during it, and the 1-minute load average at its end. Steps that run beside each other in
one process count their own thread's CPU; child-process CPU is counted when the pool is joined.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def _cpu(this_thread: bool = False) -> tuple[float, float]:
    """(CPU seconds of this process — or of the calling thread only —, of waited-for children)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    main = time.thread_time() if this_thread else me.ru_utime + me.ru_stime
    return main, kids.ru_utime + kids.ru_stime


@dataclass
class StepTime:
    name: str
    start_s: float  # from the run's start
    end_s: float
    cpu_main_s: float  # this process (all its threads)
    cpu_workers_s: float  # child processes that finished during the step
    load_1m: float  # load average at the end of the step
    note: str = ""

    @property
    def wall_s(self) -> float:
        return self.end_s - self.start_s


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0.0 where unavailable)."""
    try:
        ticks = float(os.sysconf("SC_CLK_TCK"))
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - float(fields[19]) / ticks)  # field 22 of stat: start time in ticks
    except (OSError, ValueError, IndexError):
        return 0.0


class StepTimer:
    """Collects :class:`StepTime` records; ``with timer.step("features"): ...``.

    ``from_process_start``: the clock starts when the process started and the first row is the
    interpreter start-up and imports before the timer was made (for a command-line run)."""

    def __init__(self, *, from_process_start: bool = False) -> None:
        age = process_age_s() if from_process_start else 0.0
        self.t0 = time.monotonic() - age
        self.load_start = os.getloadavg()
        self.steps: list[StepTime] = []
        if from_process_start:
            main, _ = _cpu()
            note = "interpreter, imports, config"
            self.steps.append(StepTime("start-up", 0.0, age, main, 0.0, self.load_start[0], note))

    def now(self) -> float:
        return time.monotonic() - self.t0

    @contextmanager
    def step(self, name: str, note: str = "", *, this_thread: bool = False) -> Iterator[StepTime]:
        """Time the block; ``this_thread``: count the calling thread's CPU only (for a step that runs
        beside another one in the same process)."""
        start, (me0, kids0) = self.now(), _cpu(this_thread)
        rec = StepTime(name, start, start, 0.0, 0.0, 0.0, note)
        try:
            yield rec
        finally:
            me1, kids1 = _cpu(this_thread)
            rec.end_s = self.now()
            rec.cpu_main_s, rec.cpu_workers_s = me1 - me0, kids1 - kids0
            rec.load_1m = os.getloadavg()[0]
            self.steps.append(rec)

    def to_json(self) -> dict[str, Any]:
        """``{"steps": [...], "total_s": ..., "load_avg_start": [1, 5, 15 min], "load_avg_end": ...}``."""
        steps = [
            {
                **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(s).items()},
                "wall_s": round(s.wall_s, 1),
            }
            for s in self.steps
        ]
        return {
            "steps": steps,
            "total_s": round(self.now(), 2),
            "load_avg_start": [round(x, 2) for x in self.load_start],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        }


def timing_table(timing: dict[str, Any]) -> str:
    """Markdown table of :meth:`StepTimer.to_json` output (also readable as plain text)."""
    total = max(float(timing["total_s"]), 1e-9)
    lines = [
        "| step | start (s) | end (s) | wall (s) | share | CPU main (s) | CPU workers (s) | load 1m | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in timing["steps"]:
        lines.append(
            f"| {s['name']} | {s['start_s']:.1f} | {s['end_s']:.1f} | {s['wall_s']:.1f} | "
            f"{100 * s['wall_s'] / total:.0f}% | {s['cpu_main_s']:.1f} | {s['cpu_workers_s']:.1f} | "
            f"{s['load_1m']:.2f} | {s.get('note', '')} |"
        )
    cpu = sum(s["cpu_main_s"] + s["cpu_workers_s"] for s in timing["steps"])
    lines.append(f"| **total** | 0.0 | {total:.1f} | {total:.1f} | 100% | {cpu:.1f} (all) | | | |")
    start, end = timing["load_avg_start"], timing["load_avg_end"]
    lines.append("")
    lines.append(
        f"Load average (1/5/15 min) at start {start[0]:.2f}/{start[1]:.2f}/{start[2]:.2f}, "
        f"at end {end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f}. Overlapping steps share the wall clock "
        "(see start/end); their shares do not add up to 100%."
    )
    return "\n".join(lines)
