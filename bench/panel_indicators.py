"""Panel indicators on planted low/high sessions: each indicator beside its plant, direction, error.

Run: ``.venv/bin/python bench/panel_indicators.py [--seconds 60]``. Renders the planted sessions of
``training/synth/planted.py`` (``LOW``: lively, loud varied voice; ``HIGH``: head down, quiet flat
voice), feeds each through the server's frame-by-frame loop ("live") and the offline replay pipeline
("replay") with the demo bundle's analysis rate (2.5 frames/s), and writes
``bench/results/panel_indicators.json``: per session and indicator the plant, the measured value, the
absolute error (bounds: ``client_sdk/indicator_check.MAX_ABS_ERROR``); per indicator whether low →
high moves the way the plant does; live vs replay differences against ``LIVE_REPLAY_TOL`` (same module);
the eye-openness pass's CPU cost per session (its own time, and the preparation of the frames the
analysis rate thins out, which only the eye pass needs: their luma planes, no RGB conversion; process CPU
of decoding with them minus without). Per-session ingest CPU and sessions per machine:
``bench/session_cost.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_result
from client_sdk.indicator_check import LIVE_REPLAY_TOL, MAX_ABS_ERROR, measure_indicators
from mllmdr_core.config import AudioEncoderConfig, MllmdrConfig, VisualConfig
from mllmdr_core.features.encoder import build_hubert
from mllmdr_core.media import MediaSource, iter_video
from mllmdr_core.testing import TINY_HUBERT
from training.synth.planted import HIGH, LOW, PLANT_KEYS, render_planted

ANALYSIS_FPS = 2.5  # bundles/demo


def config() -> MllmdrConfig:
    return MllmdrConfig(
        audio=AudioEncoderConfig(hubert=dict(TINY_HUBERT)), visual=VisualConfig(analysis_fps=ANALYSIS_FPS)
    )


def evaluate(seconds: float, work: Path) -> dict[str, Any]:
    cfg = config()
    hubert = build_hubert(cfg.audio)
    sessions: dict[str, Any] = {}
    for planted in (LOW, HIGH):
        rendered = render_planted(planted, work / planted.name, seconds, ANALYSIS_FPS)
        src = MediaSource(planted.name, rendered.audio, rendered.video)
        runs = {mode: measure_indicators(src, cfg, hubert, mode) for mode in ("live", "replay")}
        live = runs["live"]
        t = time.process_time()
        kept = sum(1 for _ in iter_video(rendered.video, analysis_fps=ANALYSIS_FPS))
        thinned_s = time.process_time() - t
        t = time.process_time()
        every = sum(1 for _ in iter_video(rendered.video, analysis_fps=ANALYSIS_FPS, eye_frames=True))
        all_s = time.process_time() - t
        minutes = live.media_s / 60.0
        sessions[planted.name] = {
            "media_s": round(live.media_s, 2),
            "indicators": {
                k: {
                    "plant": round(rendered.plant[k], 3),
                    "live": round(live.values[k], 3),
                    "replay": round(runs["replay"].values[k], 3),
                    "abs_error": round(abs(live.values[k] - rendered.plant[k]), 3),
                }
                for k in PLANT_KEYS
            },
            "other_indicators": {
                k: round(v, 3) for k, v in live.values.items() if k not in PLANT_KEYS and math.isfinite(v)
            },
            "live_vs_replay_abs_diff": {
                k: round(abs(live.values[k] - runs["replay"].values[k]), 4) for k in LIVE_REPLAY_TOL
            },
            "cost": {
                "eye_pass_frames": live.eye_frames,
                "mesh_frames": live.analysed_frames,
                "eye_pass_ms_per_media_min": round(1000 * live.eye_s / minutes, 1),
                "mesh_ms_per_media_min": round(1000 * live.face_s / minutes, 1),
                "thinned_frames_prep_ms_per_media_min": round(
                    1000 * max(all_s - thinned_s, 0.0) / minutes, 1
                ),
                "frames_decoded": {"analysis_only": kept, "with_eye_frames": every},
            },
        }
    directions = {}
    for k in PLANT_KEYS:
        lo, hi = (sessions[n]["indicators"][k] for n in ("low", "high"))
        planted_up = bool(hi["plant"] > lo["plant"])
        right = bool((hi["live"] > lo["live"]) == planted_up)
        directions[k] = {"planted": "up" if planted_up else "down", "right": right}
    met = {
        "directions": all(d["right"] for d in directions.values()),
        "errors": all(
            s["indicators"][k]["abs_error"] <= MAX_ABS_ERROR[k] for s in sessions.values() for k in PLANT_KEYS
        ),
        "live_vs_replay": all(
            s["live_vs_replay_abs_diff"][k] <= tol
            for s in sessions.values()
            for k, tol in LIVE_REPLAY_TOL.items()
        ),
    }
    return {
        "seconds": seconds,
        "analysis_fps": ANALYSIS_FPS,
        "sessions": sessions,
        "directions": directions,
        "max_abs_error": MAX_ABS_ERROR,
        "live_replay_tolerance": LIVE_REPLAY_TOL,
        "met": met,
        "note": "live = the server's frame loop on the decoded file (WebRTC codecs not in the path)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(args.seconds, Path(tmp))
    path = write_result("panel_indicators", result)
    for name, s in result["sessions"].items():
        print(f"{name} ({s['media_s']} s):")
        for k, r in s["indicators"].items():
            print(f"  {k:22s} plant {r['plant']:8.2f}  live {r['live']:8.2f}  replay {r['replay']:8.2f}  "
                  f"|err| {r['abs_error']:.2f}")
        print(f"  cost: {s['cost']}")
    for k, d in result["directions"].items():
        print(f"direction {k}: planted {d['planted']}, {'right' if d['right'] else 'WRONG'}")
    print(f"met: {result['met']} → {path}")


if __name__ == "__main__":
    main()
