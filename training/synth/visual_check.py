"""Planted vs measured for the live "visual-v2" tracker on the synthetic relief face.

Sequences (``FaceRig(head="relief")`` unless told otherwise, 320×240): pose sweeps (pitch, yaw, roll
each over ±``max_deg``, the other channels neutral), a blink train (raised-cosine blinks at a Poisson
rate, the corpus's own episode generator, rendered at the analysed rate), a smile ramp (−1 … 1) and a
jaw ramp (mouth open 0 … 1). Pose is compared as change from the neutral frame: the plant's 0 is the
photo's own head pose, which no plant defines (the neutral frame's absolute reading is reported beside
it).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from mllmdr_core.config import VisualConfig
from mllmdr_core.features.face import make_face_tracker
from mllmdr_core.features.face_v2 import count_blinks
from mllmdr_core.features.visual_schema import V2_IDX, V2_SPEC, unpack
from training.synth.face import FaceRig, FaceTimeline, _episodes

CHANNELS = ("pitch", "yaw", "roll", "blink", "gaze_down", "smile", "mouth_open")
POSE_COLUMNS = {"pitch": "head_pitch_deg", "yaw": "head_yaw_deg", "roll": "head_roll_deg"}


def timeline(n: int, **planted: npt.ArrayLike) -> FaceTimeline:
    """``n`` frames, each channel 0 unless given (a scalar or an (n,) array)."""
    chan = {k: np.broadcast_to(np.asarray(planted.get(k, 0.0), np.float32), (n,)).copy() for k in CHANNELS}
    return FaceTimeline(times=np.arange(n, dtype=np.float64), **chan)


class Checker:
    """One relief rig and one live tracker; each method returns planted vs measured."""

    def __init__(self, width: int = 320, height: int = 240, head: str = "relief") -> None:
        self.rig = FaceRig(width, height, head=head)
        self.tracker = make_face_tracker(VisualConfig(spec=V2_SPEC))
        self.track_s: list[float] = []

    def measure(self, tl: FaceTimeline) -> npt.NDArray[np.float64]:
        """(T, K) schema values of every frame (NaN where missing)."""
        rows = []
        for i in range(len(tl.times)):
            rgb = self.rig.render(tl, i)
            t0 = time.perf_counter()
            obs = self.tracker.process(rgb, float(i))
            self.track_s.append(time.perf_counter() - t0)
            rows.append(unpack(obs.vector[None])[0])
        return np.stack(rows)

    def pose_sweep(self, axis: str, max_deg: float = 15.0, step: float = 5.0) -> dict[str, Any]:
        planted = np.arange(-max_deg, max_deg + step / 2, step)
        values = self.measure(timeline(len(planted), **{axis: planted}))
        col = values[:, V2_IDX[POSE_COLUMNS[axis]]]
        zero = float(col[np.argmin(np.abs(planted))])
        change = col - zero
        others = [values[:, V2_IDX[POSE_COLUMNS[a]]] for a in POSE_COLUMNS if a != axis]
        return {
            "planted_deg": planted.tolist(),
            "measured_deg": np.round(col, 2).tolist(),
            "neutral_reading_deg": round(zero, 2),
            "max_abs_error_deg": round(float(np.max(np.abs(change - planted))), 2),
            "slope": round(float(np.polyfit(planted, change, 1)[0]), 3),
            "max_cross_talk_deg": round(float(max(np.ptp(o) for o in others)), 2),
        }

    def ramp(
        self, channel: str, lo: float, hi: float, columns: tuple[str, ...], n: int = 11
    ) -> dict[str, Any]:
        planted = np.linspace(lo, hi, n)
        values = self.measure(timeline(n, **{channel: planted}))
        out: dict[str, Any] = {"planted": np.round(planted, 3).tolist()}
        for c in columns:
            col = values[:, V2_IDX[c]]
            out[c] = {
                "measured": np.round(col, 2).tolist(),
                "r": round(float(np.corrcoef(planted, col)[0, 1]), 3),
            }
        pitch = values[:, V2_IDX["head_pitch_deg"]]
        out["pitch_drift_deg"] = round(float(np.ptp(pitch)), 2)
        return out

    def blink_train(self, seconds: float, fps: float, per_min: float = 15.0, seed: int = 0) -> dict[str, Any]:
        """Blinks of 0.12–0.18 s (the corpus's shortest) at ``per_min``, analysed at ``fps``."""
        times = np.arange(0.0, seconds, 1.0 / fps)
        env, spans = _episodes(np.random.default_rng(seed), times, per_min, (0.12, 0.18))
        # planted count = planted episodes; each closes the lids fully at its peak (the corpus's shape)
        blink = np.clip(env * 1.3, 0.0, 1.0)
        values = self.measure(timeline(len(times), blink=blink))
        measured = count_blinks(values[:, V2_IDX["AU45_r"]])
        minutes = seconds / 60.0
        return {
            "fps": fps,
            "seconds": seconds,
            "planted": len(spans),
            "measured": measured,
            "planted_per_min": round(len(spans) / minutes, 2),
            "measured_per_min": round(measured / minutes, 2),
            "error_per_min": round(abs(measured - len(spans)) / minutes, 2),
        }

    def close(self) -> None:
        self.tracker.close()
