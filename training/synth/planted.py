"""Planted low/high sessions for validating the panel's indicators: a face video and a patient voice
whose behaviour is set directly (not drawn from a severity), with the planted value of each indicator.

``LOW`` (lively): head level, lively head sway, 14 blinks/min of 150 ms, smiles, a loud voice whose
level varies from sentence to sentence. ``HIGH`` (withdrawn): head 13° down, little sway, 9 blinks/min,
lip corners pulled down (no smile), a quiet flat voice. :func:`render_planted` writes ``audio.wav``
(16 kHz) and ``video.mp4`` (30 fps, 320×240, the synthetic face of ``face.py``) and returns the plant
(:data:`PLANT_KEYS`) computed from what was rendered:

- ``head_pitch_deg``: mean planted pitch; ``head_motion``: mean planted angular speed
  |Δ(pitch, yaw, roll)| / Δt at the analysis rate (``analysis_fps``, what the indicator differences);
- ``blink_rate_per_min``: planted blink episodes per minute; ``smile_ratio``: share of frames whose
  planted smile channel is ≥ 0.25 (AU12 ≥ 1 on face_v2's ramp: a full smile, channel 1, reads 4.5);
- ``speech_level_db``: mean 200-ms frame energy (dBFS) over the frames inside the rendered sentences;
  ``speech_level_sd_db``: SD across sentences of each sentence's mean frame energy — both from the
  clean voice before the noise floor, i.e. the truth the indicators estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data.wav import write_wav
from training.synth.face import FaceRig, make_timeline, write_video
from training.synth.plan import FaceParams, VoiceParams
from training.synth.speech import RATE, espeak, speech_envelope

FPS, WIDTH, HEIGHT = 30.0, 320, 240
SMILE_CHANNEL_AU12_1 = 0.25
FRAME_S = 0.2
PLANT_KEYS = (
    "head_pitch_deg", "head_motion", "blink_rate_per_min", "smile_ratio", "speech_level_db",
    "speech_level_sd_db",
)
SENTENCES = (
    "I have been sleeping badly for a few weeks now.",
    "Most days I feel tired before lunch.",
    "Work has been hard, but my friends help.",
    "I still enjoy walking by the river on weekends.",
    "Sometimes I find it hard to concentrate on reading.",
    "My appetite is about the same as usual.",
)


@dataclass(frozen=True)
class Planted:
    name: str
    face: FaceParams
    voice: VoiceParams
    sentence_gains_db: tuple[float, ...]  # cycled over the sentences: the planted loudness variation
    seed: int = 7


LOW = Planted(
    "low",
    FaceParams(head_pitch_deg=0.0, gaze_down_share=0.0, smiles_per_min=8.0, sadness=0.0,
               blinks_per_min=14.0, blink_s=0.15, motion_deg=5.0),
    VoiceParams("en-us", 150, 60, "x-high", 150, 0, 0.0, 0.2),
    (0.0, -9.0, 4.0, -5.0, 2.0, -12.0),
)
HIGH = Planted(
    "high",
    FaceParams(head_pitch_deg=13.0, gaze_down_share=0.0, smiles_per_min=0.0, sadness=0.7,
               blinks_per_min=9.0, blink_s=0.2, motion_deg=1.2),
    VoiceParams("en-us", 110, 40, "x-low", 45, 2, 0.0, 0.4),
    (0.0,),
)


@dataclass
class Rendered:
    audio: Path
    video: Path
    duration_s: float
    plant: dict[str, float]
    sentences: list[tuple[float, float]] = field(default_factory=list)


def _frame_db(x: np.ndarray) -> np.ndarray:
    n = int(FRAME_S * RATE)
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
    return np.asarray(20.0 * np.log10(np.maximum(np.sqrt((frames**2).mean(axis=1)), 1e-10)))


def render_planted(p: Planted, out: Path, duration_s: float, analysis_fps: float = 2.5) -> Rendered:
    """Render ``p`` for about ``duration_s`` seconds into ``out`` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(p.seed)
    pieces: list[tuple[int, np.ndarray]] = []
    t, k = 0.8, 0
    while t < duration_s - 1.0:
        x = espeak(SENTENCES[k % len(SENTENCES)], p.voice)
        x = (x * 10.0 ** (p.sentence_gains_db[k % len(p.sentence_gains_db)] / 20.0)).astype(np.float32)
        pieces.append((int(t * RATE), x))
        t += len(x) / RATE + 1.2
        k += 1
    total = int(max(t, duration_s) * RATE)
    voice = np.zeros(total, dtype=np.float32)
    for start, x in pieces:
        voice[start : start + len(x)] += x[: total - start]
    audio = np.clip(voice + rng.standard_normal(total).astype(np.float32) * 0.0015, -1.0, 1.0)
    write_wav(out / "audio.wav", audio, RATE)
    times = np.arange(0.0, total / RATE, 1.0 / FPS)
    tl = make_timeline(p.face, times, speech_envelope(voice, times.astype(np.float32)), rng)
    write_video(out / "video.mp4", FaceRig(WIDTH, HEIGHT).frames(tl), FPS, WIDTH, HEIGHT)

    step = max(1, round(FPS / analysis_fps))
    pose = np.stack([tl.pitch, tl.yaw, tl.roll], axis=1)[::step].astype(np.float64)
    speed = np.linalg.norm(np.diff(pose, axis=0), axis=1) * FPS / step
    blinks = int(((tl.blink[1:] > 0.5) & (tl.blink[:-1] <= 0.5)).sum())
    sentence_db = []
    frames_db: list[float] = []
    spans = []
    for start, x in pieces:
        db = _frame_db(voice[start : start + len(x)])
        db = db[db > -60.0]
        frames_db.extend(db.tolist())
        sentence_db.append(float(db.mean()))
        spans.append((start / RATE, (start + len(x)) / RATE))
    plant: dict[str, Any] = {
        "head_pitch_deg": float(tl.pitch.mean()),
        "head_motion": float(speed.mean()),
        "blink_rate_per_min": float(blinks / (times[-1] / 60.0)),
        "smile_ratio": float((tl.smile >= SMILE_CHANNEL_AU12_1).mean()),
        "speech_level_db": float(np.mean(frames_db)),
        "speech_level_sd_db": float(np.std(sentence_db)),
    }
    return Rendered(out / "audio.wav", out / "video.mp4", total / RATE, plant, spans)
