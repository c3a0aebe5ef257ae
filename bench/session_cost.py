"""CPU per media minute of one live session's feature work, and the sessions per machine it implies.

Run: ``.venv/bin/python bench/session_cost.py [--seconds 60] [--repeats 2] [--cores 2]``

Feeds recordings through ``SessionState`` the way the server's ingest does (``stream_server/ingest.py``
and ``live/media.py``): 20-ms audio frames; video thinned to the bundle's analysis rate (a frame is kept
when ≥ 0.9 / fps s passed since the last kept one), kept frames converted to RGB (≤ 640 wide) for the face
mesh, thinned-out frames to the eye-openness pass. The demo bundle's configuration (tiny HuBERT, 2.5
analysed frames/s; random encoder weights: the same cost), one torch thread as the server. Variants, run
interleaved:

- ``before``: ``mediapipe-face-v1``, no eye pass (``visual.eye_pass`` off: thinned-out frames let go) —
  the ingest before issue 19;
- ``v2``: ``visual-v2``, no eye pass (the schema's tracker alone);
- ``after_rgb``: ``visual-v2`` + eye pass reading an RGB conversion of every thinned-out frame (and the
  RGB of the analysed ones) — issue 19 as first merged;
- ``after_luma``: ``visual-v2`` + eye pass reading every frame's luma plane (no conversion) — now.

CPU = process CPU seconds (``time.process_time``, every thread) of the feed minus a decode-only pass of the
same media (demuxing and decoding are the same in every variant: the server's WebRTC stack decodes every
frame anyway); the fastest of ``--repeats`` per variant. Media: the live benches' synthetic interview
(``bench/live_sessions.py``: 640×480, 15 fps) and the planted low session of ``bench/panel_indicators.py``
(320×240, 30 fps). ``sessions_per_machine`` = cores × 60 / CPU-s per media minute: an estimate from the
feature work alone (no WebRTC receive/decode, event loop, indicator events or model), an upper bound;
``bench/live_sessions.py`` measures the whole server. Prints one JSON line; writes
``bench/results/session_cost.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import load_avg, recording, write_result
from mllmdr_core.bundle import read_manifest
from mllmdr_core.config import MllmdrConfig
from mllmdr_core.features.encoder import StreamingHubertEncoder, build_hubert
from mllmdr_core.features.face import make_face_tracker
from mllmdr_core.features.visual_schema import V2_SPEC
from mllmdr_core.media import AudioFrame, iter_audio, luma_plane, to_rgb
from mllmdr_core.session_state import SessionState
from training.synth.planted import LOW, render_planted

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("decode", "before", "v2", "after_rgb", "after_luma")  # decode: the decode-only pass subtracted


def variant_config(base: MllmdrConfig, variant: str) -> MllmdrConfig:
    spec = "mediapipe-face-v1" if variant == "before" else V2_SPEC
    visual = dataclasses.replace(base.visual, spec=spec, eye_pass=variant.startswith("after"))
    return dataclasses.replace(base, visual=visual)


def _video(path: Path, fps: float) -> Iterator[tuple[float, av.VideoFrame, bool]]:
    """(media time, decoded frame, kept by the ingest's thinning)."""
    min_dt, last = 0.9 / fps, -1e9
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t_s = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            kept = t_s - last >= min_dt
            last = t_s if kept else last
            yield t_s, frame, kept


def feed(media: tuple[Path, Path], variant: str, base: MllmdrConfig, hubert: Any) -> dict[str, float]:
    """One session's feed of ``media`` (audio, video files); CPU seconds and the state's stage times."""
    cfg = variant_config(base, variant)
    tracker = make_face_tracker(cfg.visual) if variant != "decode" else None
    state = SessionState(cfg, session_id="cost", audio_encoder=StreamingHubertEncoder(cfg.audio, hubert),
                         face_tracker=tracker)
    fps = float(cfg.visual.analysis_fps)
    audio = ((f.t_s, 0, i, f) for i, f in enumerate(iter_audio(media[0])))
    video = ((t, 1, i, (f, kept)) for i, (t, f, kept) in enumerate(_video(media[1], fps)))
    cpu = time.process_time()
    media_s = 0.0
    first = True
    for t_s, _kind, _i, item in heapq.merge(audio, video):
        media_s = max(media_s, t_s)
        if variant == "decode":
            continue
        if isinstance(item, AudioFrame):
            state.push_audio(item.samples.reshape(-1), item.sample_rate, channels=item.channels,
                             t_s=t_s if first else None)
            first = False
            continue
        frame, kept = item
        if kept:
            luma = luma_plane(frame) if variant == "after_luma" else None
            state.push_video(to_rgb(frame), t_s, eye=luma)
        elif variant == "after_rgb":
            state.push_eye_frame(to_rgb(frame), t_s)
        elif variant == "after_luma":
            state.push_eye_frame(luma_plane(frame) or to_rgb(frame), t_s)
    if variant != "decode":
        state.flush()
        state.indicators(window_s=30.0)
    cpu = time.process_time() - cpu
    stats = state.stats
    state.close()
    if tracker is not None:
        tracker.close()
    keys = ("face_s", "eye_s", "encoder_s", "vad_s", "normalize_s")
    return {"cpu_s": cpu, "media_s": media_s, **{k: float(stats[k]) for k in keys}}


def measure(
    media: tuple[Path, Path], base: MllmdrConfig, hubert: Any, repeats: int, cores: int
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for v in VARIANTS:  # interleaved
            runs[v].append(feed(media, v, base, hubert))
    best = {v: min(r, key=lambda x: x["cpu_s"]) for v, r in runs.items()}
    decode = best["decode"]["cpu_s"]
    out: dict[str, Any] = {"decode_cpu_s_per_media_min": round(60 * decode / best["decode"]["media_s"], 3)}
    for v in VARIANTS[1:]:
        b = best[v]
        per_min = 60.0 * max(b["cpu_s"] - decode, 1e-9) / b["media_s"]
        out[v] = {
            "cpu_s_per_media_min": round(per_min, 3),
            "sessions_per_machine": round(cores * 60.0 / per_min, 1),
            "stage_s_per_media_min": {
                k.removesuffix("_s"): round(60 * b[k] / b["media_s"], 3)
                for k in ("face_s", "eye_s", "encoder_s", "vad_s", "normalize_s")
            },
            "cpu_s_runs": [round(r["cpu_s"], 3) for r in runs[v]],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2, help="cores per machine for sessions_per_machine")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the server (settings.torch_threads = 1)
    base = MllmdrConfig.from_dict(read_manifest(ROOT / "bundles" / "demo")["config"])
    hubert = build_hubert(base.audio)
    load_start = [round(x, 2) for x in load_avg()]
    with tempfile.TemporaryDirectory() as tmp:
        planted = render_planted(LOW, Path(tmp) / "low", args.seconds)
        interview = recording(args.seconds, size=(640, 480), fps=15)
        media = {
            "interview_640x480_15fps": (interview, interview),
            "planted_320x240_30fps": (planted.audio, planted.video),
        }
        results = {k: measure(pair, base, hubert, args.repeats, args.cores) for k, pair in media.items()}
    payload = {
        "seconds": args.seconds,
        "repeats": args.repeats,
        "cores": args.cores,
        "analysis_fps": base.visual.analysis_fps,
        "formula": "sessions_per_machine = cores × 60 / CPU-s per media minute (estimate: feature work only)",
        "load_avg_start": load_start,
        "media": results,
    }
    write_result("session_cost", payload)
    print(json.dumps(payload, separators=(",", ":")))


if __name__ == "__main__":
    main()
