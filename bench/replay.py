"""Replay speed: real-time factor of offline scoring for a 5-minute recording on this CPU.

Run: ``.venv/bin/python bench/replay.py [--bundle DIR] [--minutes 5] [--hubert base|bundle]``

A synthetic 5-minute interview (espeak-ng answers with pauses, the astronaut face at 640x480, 15 fps,
h264 + aac mp4, and its transcript) is replayed with ``client_sdk.replay`` through ``SessionState``
(VAD, streaming HuBERT on speech, prosody, face tracker at the analysis rate, indicators) and the final
``Assessor.assess`` (8 item generations):

- single worker: one replay in this process (torch uses all cores);
- all cores: ``cores`` copies in a batch with ``cores`` worker processes (1 torch thread each);
  aggregate RTF = total media seconds / wall seconds.

RTF = media seconds / wall seconds (> 1: faster than real time). Without ``--bundle`` the tiny
random-init bundle (``mllmdr_core.testing.build_tiny_bundle``) is used; ``--hubert base`` swaps in a
HuBERT-base-sized random-init audio encoder (768 hidden, 12 layers) so the audio cost is realistic.
Prints the figures and writes them into ``bench/results/replay.json`` under ``runs[<--hubert>]``
(``bundle`` or ``base``), keeping the other run's figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from client_sdk.batch import BatchOptions, run_batch
from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.synth import make_recording
from mllmdr_core.media import resolve_source

HUBERT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}


def _bundle(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    if args.bundle:
        return Path(args.bundle), f"given bundle {args.bundle}"
    from mllmdr_core.testing import build_hubert_base_bundle, build_tiny_bundle

    if args.hubert != "base":
        return Path(build_tiny_bundle(work / "bundle")), "tiny random-init bundle (tiny HuBERT, tiny Llama)"
    return build_hubert_base_bundle(work / "bundle-base"), (
        "tiny random-init bundle with a HuBERT-base-sized random-init audio encoder (768 hidden, 12 layers)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="bundle directory (default: the tiny random-init bundle)")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--hubert", choices=("bundle", "base"), default="bundle")
    ap.add_argument("--skip-parallel", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()[0]  # the machine may be shared: the figures scale with contention
    work = Path(tempfile.mkdtemp(prefix="mllmdr-bench-replay-"))
    try:
        bundle, bundle_desc = _bundle(args, work)
        t0 = time.perf_counter()
        rec = make_recording(
            work / "rec", duration_s=args.minutes * 60, fps=15, size=(640, 480), name="bench"
        )
        assert rec.video is not None
        made_s = time.perf_counter() - t0
        print(f"recording: {rec.duration_s:.0f} s, 640x480 15 fps h264/aac ({made_s:.0f} s to make)")
        replayer = Replayer(bundle)
        result = replayer.replay(resolve_source(rec.video))
        single = {
            "media_s": result.media_s,
            "wall_s": round(result.wall_s, 2),
            "rtf": round(result.rtf, 2),
            "timings_ms": result.assessment.timings_ms,
            "stats": result.stats,
        }
        print(f"single worker: {result.media_s:.0f} s media in {result.wall_s:.1f} s → RTF {result.rtf:.2f}")
        figures: dict[str, Any] = {"single_worker": single}
        if not args.skip_parallel and cores > 1:
            batch_dir = work / "batch"
            batch_dir.mkdir()
            for i in range(cores):
                for src in (rec.video, rec.transcript):
                    shutil.copy(src, batch_dir / f"copy{i}{src.suffix}")
            opts = BatchOptions(
                out_dir=work / "out",
                workers=cores,
                resume=False,
                report=False,
                replay=ReplayOptions(),
                torch_threads=1,
            )
            from mllmdr_core.media import find_sources

            res = run_batch(bundle, find_sources(batch_dir), opts, progress=False)
            agg = res.media_s / res.wall_s if res.wall_s else 0.0
            figures["all_cores"] = {
                "workers": cores,
                "sessions": len(res.rows),
                "media_s": res.media_s,
                "wall_s": round(res.wall_s, 2),
                "aggregate_rtf": round(agg, 2),
                "failures": res.failures,
            }
            print(
                f"all cores ({cores} workers): {res.media_s:.0f} s media in {res.wall_s:.1f} s → "
                f"aggregate RTF {agg:.2f}"
            )
        out = {
            "bench": "replay",
            "recording_s": rec.duration_s,
            "bundle": bundle_desc,
            "cpu": platform.processor() or platform.machine(),
            "cores": cores,
            "load_average_1m_at_start_and_end": [round(load_start, 1), round(os.getloadavg()[0], 1)],
            "command": "python bench/replay.py "
            + " ".join(
                f"--{k.replace('_', '-')} {v}"
                for k, v in vars(args).items()
                if v not in (None, False, "bundle")
            ),
            "note": "RTF = media seconds / wall seconds (> 1 faster than real time); the all-cores "
            "figure includes process start and bundle load per worker",
            **figures,
        }
        out["date_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
        path = Path(__file__).parent / "results" / "replay.json"
        path.parent.mkdir(exist_ok=True)
        doc = json.loads(path.read_text()) if path.exists() else {}
        runs = {**doc.get("runs", {}), args.hubert: out}
        doc = {
            "bench": "replay",
            "date_utc": out["date_utc"],
            "command": " ; ".join(r["command"] for r in runs.values()),
            "machine": {"cpu": out["cpu"], "cores": out["cores"]},
            "runs": runs,
        }
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {path} (runs: {', '.join(runs)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
