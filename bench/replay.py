"""Replay speed: real-time factor of offline scoring, stage by stage, against issue 22's targets.

Run: ``.venv/bin/python bench/replay.py [--run demo|base|all|batch] [--seconds 60]``

A synthetic interview (espeak-ng answers with pauses, the astronaut face at 640x480, 15 fps, h264 + aac
mp4, and its transcript; ``client_sdk.synth.make_recording``) is replayed with ``client_sdk.replay``.

- ``demo`` (``bundles/demo``): one recording with its transcript through the offline pipeline
  (``fast``, the default) and through the server's 20 ms loop (``plain``), same process, the per-stage
  table of each; the same recording without its transcript (speech-to-text = pocketsphinx in a worker
  process: replay wall / the recogniser's own time); a batch of 8 copies with 1 and with 2 spawned
  worker processes (aggregate RTF = media seconds / batch wall seconds, process start and bundle load
  in every worker included).
  Targets: ≥ 20× with the transcript; speech-to-text replay ≤ 1.25× the recogniser's time; 2 workers
  ≥ 1.8× one worker. The workers' CPU seconds (``RUSAGE_CHILDREN``) and each replay's (stage ``cpu``)
  give the 2-worker ceiling on this many cores (``batch_ceiling``, see ``_ceiling``); a wall speedup
  above it is other users' load, and the target counts the speedup only up to it.
- ``batch``: the demo run's batch figures again (one replay for the ceiling, the two batches), the
  stored demo run's other figures kept with their own date and load.
- ``base``: the tiny bundle with a HuBERT-base-sized random-init encoder (768 hidden, 12 layers), fp32
  and int8 (``Replayer(int8=True)``), transcript given. Target ≥ 6×.

RTF = media seconds / replay wall seconds (> 1: faster than real time); the model load is once per
process and not in a replay's wall time (it is its own stage). The machine may be shared: the 1/5/15-min
load average is recorded before and after each run, and the figures scale with it. Prints the figures
and writes ``bench/results/replay.json`` (``runs[demo|base]``, keeping the other run's figures).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from client_sdk.batch import BatchOptions, run_batch
from client_sdk.replay import Replayer, ReplayOptions, ReplayResult
from client_sdk.replay_profile import format_table
from client_sdk.synth import SyntheticRecording, make_recording
from mllmdr_core.media import find_sources, resolve_source
from mllmdr_core.openmp import passive_openmp

ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = ROOT / "bundles" / "demo"
BATCH_COPIES = 8
TARGETS = {"demo_rtf": 20.0, "asr_ratio": 1.25, "batch_speedup": 1.8, "base_rtf": 6.0}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _figures(result: ReplayResult) -> dict[str, Any]:
    print(format_table(result.source.session_id, result.media_s, result.stages))
    return {
        "media_s": round(result.media_s, 2),
        "wall_s": round(result.wall_s, 3),
        "real_time_factor": round(result.rtf, 2),
        "stage_s": result.stages,
        "load_avg": _load(),
    }


def _best(replayer: Replayer, path: Path, opts: ReplayOptions, repeats: int) -> ReplayResult:
    """The fastest of ``repeats`` replays (a shared machine: the least disturbed one), after a warm-up."""
    replayer.replay(path, opts)
    results = [replayer.replay(path, opts) for _ in range(repeats)]
    return min(results, key=lambda r: r.wall_s)


def _batch(bundle: Path, rec: SyntheticRecording, work: Path, workers: int, copies: int) -> dict[str, Any]:
    assert rec.video is not None
    folder = work / f"batch{workers}"
    folder.mkdir()
    for i in range(copies):
        for src in (rec.video, rec.transcript):
            shutil.copy(src, folder / f"copy{i}{src.suffix}")
    # Both batches in fresh worker processes (spawned, imports and bundle load included), so 1 and 2
    # workers pay the same start-up; run_batch's own workers=1 path would reuse this warm process.
    ctx = multiprocessing.get_context("spawn")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        opts = BatchOptions(
            out_dir=work / f"out{workers}", workers=workers, resume=False, report=False, executor=pool,
            torch_threads=max(1, (os.cpu_count() or 1) // workers),
        )
        res = run_batch(bundle, find_sources(folder), opts, progress=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers, reaped at its shutdown
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    per_rec = [
        float(json.loads((opts.out_dir / str(r["session_id"]) / "replay.json").read_text())["stage_s"]["cpu"])
        for r in res.rows
    ]
    agg = res.media_s / res.wall_s if res.wall_s else 0.0
    media, wall = f"{res.media_s:.0f} s media", f"{res.wall_s:.1f} s"
    print(f"batch of {copies}, {workers} worker(s): {media} in {wall} → {agg:.1f}×, {cpu:.1f} CPU s")
    return {
        "workers": workers,
        "sessions": len(res.rows),
        "media_s": round(res.media_s, 1),
        "wall_s": round(res.wall_s, 2),
        "aggregate_rtf": round(agg, 2),
        "replay_wall_s_mean": round(sum(r["wall_s"] for r in res.rows) / max(len(res.rows), 1), 2),
        "failures": len(res.failures),
        "torch_threads": opts.torch_threads,
        # CPU seconds of the workers (process start, imports, bundle load and replays); the folder rate
        # the same CPU-seconds would give on idle cores: media s × cores / CPU s
        "cpu_s": round(cpu, 2),
        "cpu_s_per_recording": round(sum(per_rec) / max(len(per_rec), 1), 3),
        "start_cpu_s_per_worker": round((cpu - sum(per_rec)) / workers, 2),
        "cpu_bound_rtf": round(res.media_s * (os.cpu_count() or 1) / cpu, 2) if cpu else None,
        "load_avg": _load(),
    }


def _ceiling(fast: dict[str, Any], one: dict[str, Any], two: dict[str, Any], copies: int) -> dict[str, Any]:
    """The most 2 workers can gain over 1 on this many cores, from CPU seconds (load-insensitive).

    One worker: its start (imports + bundle load, ~1 core) then ``copies`` replays at the one-recording
    wall time ``w1`` (the fastest single replay: it keeps ``cpu1 / w1`` cores busy). Two workers cannot
    beat their CPU seconds spread over all cores: 2 starts + ``copies`` replays at ``c`` CPU s each
    (1 torch thread). Ceiling = (start + copies · w1) / ((2 · start_cpu + copies · c) / cores); for an
    endless folder (start amortised) it tends to cores · w1 / c.
    """
    cores = os.cpu_count() or 1
    w1, cpu1 = float(fast["wall_s"]), float(fast["stage_s"]["cpu"])
    start, c = float(two["start_cpu_s_per_worker"]), float(two["cpu_s_per_recording"])
    t1 = start + copies * w1
    t2 = (2 * start + copies * c) / cores
    return {
        "cores": cores,
        "one_recording_wall_s": w1,
        "one_recording_cores_in_use": round(cpu1 / w1, 2) if w1 else None,
        "cpu_s_per_recording_1_thread": c,
        "start_cpu_s_per_worker": start,
        "speedup_ceiling": round(t1 / t2, 2) if t2 else None,
        "speedup_ceiling_endless_folder": round(cores * w1 / c, 2) if c else None,
        "folder_rtf_ceiling": round(copies * float(fast["media_s"]) / t2, 1) if t2 else None,
        "one_worker_cpu_s_per_recording": one["cpu_s_per_recording"],
    }


def run_demo(work: Path, seconds: float, repeats: int) -> dict[str, Any]:
    rec = make_recording(work / "rec", duration_s=seconds, fps=15, size=(640, 480), name="demo60")
    assert rec.video is not None
    bare = work / "bare"
    bare.mkdir()
    shutil.copy(rec.video, bare / rec.video.name)  # the same recording, no transcript beside it
    replayer = Replayer(DEMO_BUNDLE)
    out: dict[str, Any] = {"bundle": "bundles/demo", "recording_s": seconds}
    out["model_load_s"] = round(replayer.load_s, 2)
    out["load_avg_start"] = _load()
    out["fast"] = _figures(_best(replayer, rec.video, ReplayOptions(), repeats))
    out["plain"] = _figures(_best(replayer, rec.video, ReplayOptions(fast=False), repeats))
    asr = replayer.replay(resolve_source(bare / rec.video.name), ReplayOptions())
    asr_fig = _figures(asr)
    recogniser = asr.stages["speech_to_text"]
    asr_fig["recogniser_s"] = round(recogniser, 2)
    asr_fig["wall_over_recogniser"] = round(asr.wall_s / recogniser, 3) if recogniser else None
    asr_fig["transcript_lines"] = len(asr.transcript)
    out["speech_to_text"] = asr_fig
    replayer.close()
    out.update(_batches(rec, work, out["fast"]))
    out["met"] = {
        "demo_rtf": out["fast"]["real_time_factor"] >= TARGETS["demo_rtf"],
        "asr_ratio": asr_fig["wall_over_recogniser"] is not None
        and asr_fig["wall_over_recogniser"] <= TARGETS["asr_ratio"],
        "batch_speedup": _batch_met(out),
    }
    return out


def _batches(rec: SyntheticRecording, work: Path, fast: dict[str, Any]) -> dict[str, Any]:
    """The batch of copies with 1 and 2 workers, the speedup and its CPU-second ceiling."""
    one = _batch(DEMO_BUNDLE, rec, work, 1, BATCH_COPIES)
    two = _batch(DEMO_BUNDLE, rec, work, 2, BATCH_COPIES)
    speedup = two["aggregate_rtf"] / one["aggregate_rtf"] if one["aggregate_rtf"] else None
    return {
        "batch": {"one_worker": one, "two_workers": two},
        "batch_speedup": round(speedup, 2) if speedup is not None else None,
        "batch_ceiling": _ceiling(fast, one, two, BATCH_COPIES),
    }


def _batch_met(run: dict[str, Any]) -> bool:
    """2 workers ≥ the target × 1 worker, counted only up to the CPU-second ceiling: a wall speedup above
    it means other users slowed the 1-worker batch more than the 2-worker one (a shared machine)."""
    ceiling = run["batch_ceiling"]["speedup_ceiling"] or 0.0
    return min(run["batch_speedup"] or 0.0, ceiling) >= TARGETS["batch_speedup"]


def run_batch_only(work: Path, seconds: float, repeats: int, runs: dict[str, Any]) -> dict[str, Any]:
    """``--run batch``: the demo run's batch figures again (a single replay for the ceiling's one-recording
    wall time, then the two batches), the rest of the stored demo run kept as it was measured."""
    if "demo" not in runs:
        raise SystemExit("--run batch updates a stored demo run: run --run demo first")
    rec = make_recording(work / "rec", duration_s=seconds, fps=15, size=(640, 480), name="demo60")
    replayer = Replayer(DEMO_BUNDLE)
    assert rec.video is not None
    fast = _figures(_best(replayer, rec.video, ReplayOptions(), repeats))
    replayer.close()
    out = dict(runs["demo"])
    out.update(_batches(rec, work, fast))
    out["batch"]["one_recording"] = fast  # the ceiling's single replay, beside the batches
    out["batch"]["date_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    out["batch"]["command"] = f"python bench/replay.py --run batch --seconds {seconds:g} --repeats {repeats}"
    out["met"] = {**out["met"], "batch_speedup": _batch_met(out)}
    return out


def run_base(work: Path, seconds: float, repeats: int) -> dict[str, Any]:
    from mllmdr_core.testing import build_hubert_base_bundle

    bundle = build_hubert_base_bundle(work / "bundle-base")
    rec = make_recording(work / "rec-base", duration_s=seconds, fps=15, size=(640, 480), name="base60")
    assert rec.video is not None
    out: dict[str, Any] = {
        "bundle": "tiny random-init bundle with a HuBERT-base-sized random-init audio encoder "
        "(768 hidden, 12 layers)",
        "recording_s": seconds,
        "load_avg_start": _load(),
    }
    for name, int8 in (("fp32", False), ("int8", True)):
        replayer = Replayer(bundle, int8=int8)
        out[name] = _figures(_best(replayer, rec.video, ReplayOptions(), repeats))
        out[name]["model_load_s"] = round(replayer.load_s, 2)
    out["met"] = {"base_rtf": max(out["fp32"]["real_time_factor"], out["int8"]["real_time_factor"]) >= 6.0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--run", choices=("demo", "base", "all", "batch"), default="all",
        help="batch: only the demo run's batch figures again (the stored demo run's other figures kept)",
    )
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3, help="replays per figure; the fastest is kept")
    args = ap.parse_args()
    passive_openmp()  # as ``mllmdr replay`` does, before torch loads
    work = Path(tempfile.mkdtemp(prefix="mllmdr-bench-replay-"))
    path = ROOT / "bench" / "results" / "replay.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    runs: dict[str, Any] = {}
    try:
        if args.run == "batch":
            runs["demo"] = run_batch_only(work, args.seconds, args.repeats, doc.get("runs", {}))
            print(json.dumps({k: v for k, v in runs["demo"].items() if k.startswith("batch")}, default=str))
        for name, fn in (("demo", run_demo), ("base", run_base)):
            if args.run in (name, "all"):
                started = time.perf_counter()
                runs[name] = fn(work, args.seconds, args.repeats)
                runs[name]["load_avg_end"] = _load()
                runs[name]["date_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
                runs[name]["command"] = (
                    f"python bench/replay.py --run {name} --seconds {args.seconds:g} --repeats {args.repeats}"
                )
                runs[name]["bench_s"] = round(time.perf_counter() - started, 1)
                print(json.dumps({k: v for k, v in runs[name].items() if k != "stage_s"}, default=str)[:2000])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = {"demo": "fast", "base": "fp32"}  # runs written by this version of the script
    kept = {k: v for k, v in doc.get("runs", {}).items() if shape.get(k, "-") in v}
    runs = {**kept, **runs}
    last = max(runs.values(), key=lambda r: r["date_utc"])
    doc = {
        "bench": "replay",
        "date_utc": last["date_utc"],
        "command": " ; ".join(
            [r["command"] for r in runs.values()]
            + [r["batch"]["command"] for r in runs.values() if "command" in r.get("batch", {})]
        ),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "note": "RTF = media seconds / replay wall seconds; model load once per process, not in the wall "
        "time; the machine is shared with other engineers: load averages (1/5/15 min) are recorded "
        "with every figure",
        "targets": TARGETS,
        "runs": runs,
    }
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {path} (runs: {', '.join(runs)})")


if __name__ == "__main__":
    main()
