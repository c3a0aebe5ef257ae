"""Live indicators over a sliding window, each with a unit, a window and a definition.

Every indicator is a pure function of the pooled frames (audio 5 Hz prosody + VAD speech segments,
visual vectors at the analysis rate) inside ``[now − window_s, now]``, where ``now`` is the latest media
time seen. :class:`IndicatorTracker` keeps the last ``max_window_s`` of frames and returns
``snapshot(window_s)``; when a window holds no usable frames an indicator reads 0.0 (JSON-safe).
These are descriptive signals for the clinician, not diagnostic markers.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mllmdr_core.features.face import IDX, VISUAL_DIM
from mllmdr_core.features.prosody import semitones_to_hz
from mllmdr_core.frames import FloatArray, SpeechSegment

F64 = npt.NDArray[np.float64]
SMILE_THRESHOLD = 0.08  # lip-corner raise / inter-ocular distance
GAZE_DOWN_PITCH_DEG = 25.0
GAZE_DOWN_GAZE_Y = 0.15
MIN_PAUSE_S = 0.25
MAX_FRAME_GAP_S = 1.0  # consecutive visual frames further apart than this are not differenced


@dataclass(frozen=True)
class IndicatorInfo:
    unit: str
    window: str
    definition: str


_W = "last window_s seconds of media time (default 30 s)"
INDICATOR_INFO: dict[str, IndicatorInfo] = {
    "speech_ratio": IndicatorInfo("fraction 0–1", _W, "time inside VAD speech segments / window length"),
    "pause_count": IndicatorInfo(
        "count", _W, f"silent gaps ≥ {MIN_PAUSE_S} s between consecutive speech segments inside the window"
    ),
    "pause_mean_s": IndicatorInfo("seconds", _W, "mean length of the pauses counted in pause_count"),
    "f0_mean_hz": IndicatorInfo("Hz", _W, "mean F0 over voiced speech frames (Praat AC pitch, 200 ms)"),
    "f0_sd_semitones": IndicatorInfo(
        "semitones", _W, "standard deviation of F0 (semitones re 100 Hz) over voiced speech frames"
    ),
    "energy_sd_db": IndicatorInfo("dB", _W, "standard deviation of frame energy (dBFS) over speech frames"),
    "expressivity": IndicatorInfo(
        "inter-ocular distances / s", _W,
        "mean landmark speed in the face frame (landmark_motion / frame interval) over face-present frames",
    ),
    "smile_ratio": IndicatorInfo(
        "fraction 0–1", _W, f"face-present frames with smile (lip-corner raise / D) > {SMILE_THRESHOLD}"
    ),
    "gaze_down_ratio": IndicatorInfo(
        "fraction 0–1", _W,
        f"face-present frames with head pitch > {GAZE_DOWN_PITCH_DEG}° down or gaze_y > {GAZE_DOWN_GAZE_Y}",
    ),
    "head_motion": IndicatorInfo(
        "deg/s", _W, "RMS angular speed of head pose (pitch, yaw, roll) between consecutive face frames"
    ),
    "blink_rate_per_min": IndicatorInfo(
        "blinks / min", _W, "blink onsets (blink flag 0→1) per minute of face-present time"
    ),
}
INDICATOR_KEYS: tuple[str, ...] = tuple(INDICATOR_INFO)


def _clip(seg: SpeechSegment, start: float, end: float) -> float:
    return max(0.0, min(seg.end_s, end) - max(seg.start_s, start))


def speech_ratio(segments: Iterable[SpeechSegment], start_s: float, end_s: float) -> float:
    """Fraction of ``[start_s, end_s]`` inside speech segments (unit: 0–1)."""
    span = end_s - start_s
    return 0.0 if span <= 0 else min(1.0, sum(_clip(s, start_s, end_s) for s in segments) / span)


def pauses(segments: Sequence[SpeechSegment], start_s: float, end_s: float) -> list[float]:
    """Lengths (s) of gaps ≥ MIN_PAUSE_S between consecutive segments that lie inside the window."""
    segs = sorted(segments, key=lambda s: s.start_s)
    out = []
    for a, b in itertools.pairwise(segs):
        gap = b.start_s - a.end_s
        if gap >= MIN_PAUSE_S and a.end_s >= start_s and b.start_s <= end_s:
            out.append(gap)
    return out


def f0_stats(f0_semitones: F64) -> tuple[float, float]:
    """(mean F0 in Hz, SD in semitones) of voiced frames' F0 (semitones re 100 Hz)."""
    if len(f0_semitones) == 0:
        return 0.0, 0.0
    return float(semitones_to_hz(f0_semitones).mean()), float(np.std(f0_semitones))


def energy_sd(energy_db: F64) -> float:
    """SD (dB) of speech-frame energies."""
    return float(np.std(energy_db)) if len(energy_db) > 1 else 0.0


def _pairs(times: F64, present: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], F64]:
    """Indices i of consecutive face-present pairs (i−1, i) closer than MAX_FRAME_GAP_S, and their dt."""
    if len(times) < 2:
        return np.zeros(0, dtype=np.intp), np.zeros(0)
    dt = np.diff(times)
    ok = present[1:] & present[:-1] & (dt > 0) & (dt <= MAX_FRAME_GAP_S)
    idx = np.flatnonzero(ok) + 1
    return idx, dt[idx - 1]


def expressivity(times: F64, visual: F64) -> float:
    """Mean landmark speed (inter-ocular distances / s) over consecutive face-present frames."""
    present = visual[:, IDX["face_present"]] > 0.5
    idx, dt = _pairs(times, present)
    return float((visual[idx, IDX["landmark_motion"]] / dt).mean()) if len(idx) else 0.0


def smile_ratio(visual: F64) -> float:
    present = visual[:, IDX["face_present"]] > 0.5
    return float((visual[present, IDX["smile"]] > SMILE_THRESHOLD).mean()) if present.any() else 0.0


def gaze_down_ratio(visual: F64) -> float:
    present = visual[:, IDX["face_present"]] > 0.5
    if not present.any():
        return 0.0
    v = visual[present]
    down = (v[:, IDX["head_pitch_deg"]] > GAZE_DOWN_PITCH_DEG) | (v[:, IDX["gaze_y"]] > GAZE_DOWN_GAZE_Y)
    return float(down.mean())


def head_motion(times: F64, visual: F64) -> float:
    """RMS angular speed (deg/s) of (pitch, yaw, roll) between consecutive face-present frames."""
    present = visual[:, IDX["face_present"]] > 0.5
    idx, dt = _pairs(times, present)
    if not len(idx):
        return 0.0
    pose = visual[:, IDX["head_pitch_deg"] : IDX["head_roll_deg"] + 1]
    speed2 = ((pose[idx] - pose[idx - 1]) ** 2).sum(axis=1) / dt**2
    return float(np.sqrt(speed2.mean()))


def blink_rate_per_min(times: F64, visual: F64) -> float:
    """Blink onsets per minute of face-present time (time summed over consecutive present pairs)."""
    present = visual[:, IDX["face_present"]] > 0.5
    idx, dt = _pairs(times, present)
    minutes = dt.sum() / 60.0
    if minutes <= 0:
        return 0.0
    blink = visual[:, IDX["blink"]] > 0.5
    onsets = int((blink[idx] & ~blink[idx - 1]).sum())
    return onsets / minutes


class IndicatorTracker:
    """Keeps the last ``max_window_s`` of frames and computes :data:`INDICATOR_KEYS` on demand."""

    def __init__(self, max_window_s: float = 600.0) -> None:
        self.max_window_s = max_window_s
        self._audio: deque[tuple[float, float, float, float, bool]] = deque()  # t, f0_st, dB, voiced, speech
        self._visual: deque[tuple[float, FloatArray]] = deque()
        self._segments: deque[SpeechSegment] = deque()
        self._open: SpeechSegment | None = None
        self.now_s = 0.0

    def add_audio_frames(
        self, t_s: F64, prosody: FloatArray, speech: npt.NDArray[np.bool_], frame_s: float
    ) -> None:
        """Pooled audio frames: start times (T,), prosody (T, 3) f0_st/energy_db/voiced, speech (T,)."""
        for t, p, s in zip(t_s, prosody, speech, strict=True):
            self._audio.append((float(t), float(p[0]), float(p[1]), float(p[2]), bool(s)))
        if len(t_s):
            self._advance(float(t_s[-1]) + frame_s)

    def add_segments(
        self, segments: Iterable[SpeechSegment], open_segment: SpeechSegment | None = None
    ) -> None:
        """Closed VAD segments, and the segment still open now (``None`` when not in speech)."""
        self._segments.extend(segments)
        self._open = open_segment

    def add_visual(self, t_s: float, vector: FloatArray) -> None:
        """One visual vector ``(VISUAL_DIM,)`` at media time ``t_s``."""
        self._visual.append((t_s, vector))
        self._advance(t_s)

    def advance(self, now_s: float) -> None:
        """Media time has reached ``now_s`` (e.g. audio pushed but not yet pooled)."""
        self._advance(now_s)

    def _advance(self, now_s: float) -> None:
        self.now_s = max(self.now_s, now_s)
        horizon = self.now_s - self.max_window_s
        while self._audio and self._audio[0][0] < horizon:
            self._audio.popleft()
        while self._visual and self._visual[0][0] < horizon:
            self._visual.popleft()
        while self._segments and self._segments[0].end_s < horizon:
            self._segments.popleft()

    def snapshot(self, window_s: float = 30.0) -> dict[str, float]:
        """Every indicator over the last ``window_s`` of media time, plus ``t_s`` and ``window_s``."""
        end = self.now_s
        window = min(max(window_s, 0.0), self.max_window_s, end)
        start = end - window
        segs = [s for s in self._segments if s.end_s > start and s.start_s < end]
        if self._open is not None and self._open.end_s > start:
            segs.append(self._open)
        gaps = pauses(segs, start, end)
        a = np.array([r[1:] for r in self._audio if r[0] >= start], dtype=np.float64).reshape(-1, 4)
        speech = a[:, 3] > 0.5
        voiced = speech & (a[:, 2] > 0.5)
        f0_mean, f0_sd = f0_stats(a[voiced, 0])
        vis = [(t, v) for t, v in self._visual if t >= start]
        times = np.array([t for t, _ in vis], dtype=np.float64)
        visual = np.array([v for _, v in vis], dtype=np.float64).reshape(len(vis), VISUAL_DIM)
        has_v = len(vis) > 0
        return {
            "speech_ratio": speech_ratio(segs, start, end),
            "pause_count": float(len(gaps)),
            "pause_mean_s": float(np.mean(gaps)) if gaps else 0.0,
            "f0_mean_hz": f0_mean,
            "f0_sd_semitones": f0_sd,
            "energy_sd_db": energy_sd(a[speech & (a[:, 1] != 0.0), 1]),
            "expressivity": expressivity(times, visual) if has_v else 0.0,
            "smile_ratio": smile_ratio(visual) if has_v else 0.0,
            "gaze_down_ratio": gaze_down_ratio(visual) if has_v else 0.0,
            "head_motion": head_motion(times, visual) if has_v else 0.0,
            "blink_rate_per_min": blink_rate_per_min(times, visual) if has_v else 0.0,
            "t_s": end,
            "window_s": window,
        }
