"""Live indicators over a sliding window, each with a unit, a window and a definition.

Every indicator is a pure function of the pooled frames (audio 5 Hz prosody + VAD speech segments,
visual vectors at the analysis rate) inside ``[now − window_s, now]``, where ``now`` is the latest media
time seen. :class:`IndicatorTracker` keeps the last ``max_window_s`` of frames and returns
``snapshot(window_s)``. A modality that is not there reads NaN, never 0.0: the voice indicators when
no audio has reached the tracker, the face indicators when no video has (or no frame of the window
shows a face); ``unavailable(window_s)`` names the reason per modality. The server's events and the
replay outputs drop non-finite values (``snapshot.finite``), so the panel shows "not available".
The blink rate reads the full-frame-rate eye-openness series (``eye_openness.py``) when there is one,
else the face mesh's blink flag. These are descriptive signals for the clinician, not diagnostic markers.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mllmdr_core.features.face import IDX, VISUAL_DIM
from mllmdr_core.features.prosody import semitones_to_hz
from mllmdr_core.frames import FloatArray, SpeechSegment

F64 = npt.NDArray[np.float64]
# AU12 (lip corner puller, 0–5) from the mouth width / D, the ramp of face_v2.py's AU12 (tuned on the
# synthetic face: neutral photo 0, full planted smile ≈ 4.5); a frame smiles when AU12 ≥ 1 (OpenFace's
# usual presence level), i.e. mouth width ≥ 0.744 D.
AU12_X0, AU12_SPAN = 0.72, 0.12
SMILE_AU12 = 1.0
# Measured on the synthetic face (bench/panel_indicators.py): planted 0° reads 2.9 ± 2.9°, planted 13°
# reads 12.6 ± 0.7°: 8° sits between them.
GAZE_DOWN_PITCH_DEG = 8.0
GAZE_DOWN_GAZE_Y = 0.15
BLINK_OPENNESS = 0.8  # eye-openness pass: closed below this (open eyes ≥ 0.97 at the 1st percentile)
MIN_PAUSE_S = 0.25
MAX_FRAME_GAP_S = 1.0  # consecutive visual frames further apart than this are not differenced
NAN = float("nan")
UNAVAILABLE = {"voice": "no audio received", "face": "no video received"}
NO_FACE = "no face in view"


@dataclass(frozen=True)
class IndicatorInfo:
    unit: str
    window: str
    definition: str
    modality: str = "voice"  # "voice" or "face": what must be present for the value to exist


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
    "speech_level_db": IndicatorInfo(
        "dBFS", _W, "loudness: mean frame energy (20·log10 RMS of 200 ms frames) over speech frames"
    ),
    "speech_level_sd_db": IndicatorInfo(
        "dB", _W,
        "loudness variability: SD across speech segments (VAD) of each segment's mean frame energy (dBFS); "
        "segments with at least 2 speech frames, at least 2 segments",
    ),
    "expressivity": IndicatorInfo(
        "inter-ocular distances / s", _W,
        "mean landmark speed in the face frame (landmark_motion / frame interval) over face-present frames",
        "face",
    ),
    "smile_ratio": IndicatorInfo(
        "fraction 0–1", _W,
        f"face-present frames smiling: AU12 ≥ {SMILE_AU12} (AU12 = 5·clip((mouth width / D − {AU12_X0}) "
        f"/ {AU12_SPAN}, 0, 1), face_v2's ramp)",
        "face",
    ),
    "smile_au12_mean": IndicatorInfo(
        "AU12 intensity 0–5", _W, "mean AU12 (as in smile_ratio) over face-present frames", "face"
    ),
    "head_pitch_deg": IndicatorInfo(
        "degrees, > 0 = head down", _W, "mean head pitch (solvePnP) over face-present frames", "face"
    ),
    "gaze_down_ratio": IndicatorInfo(
        "fraction 0–1", _W,
        f"face-present frames with head pitch > {GAZE_DOWN_PITCH_DEG}° down or gaze_y > {GAZE_DOWN_GAZE_Y}",
        "face",
    ),
    "head_motion": IndicatorInfo(
        "deg/s", _W,
        "mean angular speed of head pose: |Δ(pitch, yaw, roll)| / Δt between consecutive face frames",
        "face",
    ),
    "blink_rate_per_min": IndicatorInfo(
        "blinks / min", _W,
        f"closures (eye openness < {BLINK_OPENNESS} after ≥, full frame rate, eye_openness.py) per minute "
        "of observed time; without that series, blink-flag onsets of the analysed frames",
        "face",
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
    idx, dt = _pairs(times, _present(visual))
    return float((visual[idx, IDX["landmark_motion"]] / dt).mean()) if len(idx) else NAN


def _present(visual: F64) -> npt.NDArray[np.bool_]:
    return np.asarray(visual[:, IDX["face_present"]] > 0.5)


def au12(visual: F64) -> F64:
    """Per-frame AU12 intensity (0–5) from the mouth width / D (see :data:`AU12_X0`)."""
    return np.asarray(5.0 * np.clip((visual[:, IDX["mouth_width"]] - AU12_X0) / AU12_SPAN, 0.0, 1.0))


def smile_ratio(visual: F64) -> float:
    """Face-present frames with AU12 ≥ :data:`SMILE_AU12` (NaN without one)."""
    present = _present(visual)
    return float((au12(visual[present]) >= SMILE_AU12).mean()) if present.any() else NAN


def smile_au12_mean(visual: F64) -> float:
    present = _present(visual)
    return float(au12(visual[present]).mean()) if present.any() else NAN


def head_pitch_deg(visual: F64) -> float:
    present = _present(visual)
    return float(visual[present, IDX["head_pitch_deg"]].mean()) if present.any() else NAN


def gaze_down_ratio(visual: F64) -> float:
    present = _present(visual)
    if not present.any():
        return NAN
    v = visual[present]
    down = (v[:, IDX["head_pitch_deg"]] > GAZE_DOWN_PITCH_DEG) | (v[:, IDX["gaze_y"]] > GAZE_DOWN_GAZE_Y)
    return float(down.mean())


def head_motion(times: F64, visual: F64) -> float:
    """Mean angular speed (deg/s) of (pitch, yaw, roll) between consecutive face-present frames."""
    idx, dt = _pairs(times, _present(visual))
    if not len(idx):
        return NAN
    pose = visual[:, IDX["head_pitch_deg"] : IDX["head_roll_deg"] + 1]
    return float((np.linalg.norm(pose[idx] - pose[idx - 1], axis=1) / dt).mean())


def blink_rate_per_min(times: F64, visual: F64) -> float:
    """Blink-flag onsets per minute of face-present time (time summed over consecutive present pairs)."""
    idx, dt = _pairs(times, _present(visual))
    minutes = dt.sum() / 60.0
    if minutes <= 0:
        return NAN
    blink = visual[:, IDX["blink"]] > 0.5
    onsets = int((blink[idx] & ~blink[idx - 1]).sum())
    return onsets / minutes


def eye_blink_rate_per_min(times: F64, openness: F64) -> float:
    """Closures (openness < :data:`BLINK_OPENNESS` after ≥) per minute of the eye pass's observed time
    (consecutive samples ≤ MAX_FRAME_GAP_S apart); NaN without such time."""
    idx, dt = _pairs(times, np.isfinite(openness))
    minutes = dt.sum() / 60.0
    if minutes <= 0:
        return NAN
    closed = openness < BLINK_OPENNESS
    return int((closed[idx] & ~closed[idx - 1]).sum()) / minutes


def speech_level(energy_db: F64) -> float:
    """Mean frame energy (dBFS) of speech frames; NaN without one."""
    return float(np.mean(energy_db)) if len(energy_db) else NAN


def level_sd_across_segments(times: F64, energy_db: F64, segments: Sequence[SpeechSegment]) -> float:
    """SD (dB) across segments of each segment's mean speech-frame energy (segments with ≥ 2 frames)."""
    means = []
    for seg in segments:
        inside = (times >= seg.start_s) & (times < seg.end_s)
        if inside.sum() >= 2:
            means.append(float(energy_db[inside].mean()))
    return float(np.std(means)) if len(means) >= 2 else 0.0


class IndicatorTracker:
    """Keeps the last ``max_window_s`` of frames and computes :data:`INDICATOR_KEYS` on demand."""

    def __init__(self, max_window_s: float = 600.0) -> None:
        self.max_window_s = max_window_s
        self._audio: deque[tuple[float, float, float, float, bool]] = deque()  # t, f0_st, dB, voiced, speech
        self._visual: deque[tuple[float, FloatArray]] = deque()
        self._segments: deque[SpeechSegment] = deque()
        self._open: SpeechSegment | None = None
        self._eye: deque[tuple[float, float]] = deque()  # t, openness (NaN: no reference / no face)
        self.now_s = 0.0
        self.audio_seen = False  # any audio reached the tracker (voice indicators exist)
        self.video_seen = False  # any video frame reached it (face indicators may exist)

    def add_audio_frames(
        self, t_s: F64, prosody: FloatArray, speech: npt.NDArray[np.bool_], frame_s: float
    ) -> None:
        """Pooled audio frames: start times (T,), prosody (T, 3) f0_st/energy_db/voiced, speech (T,)."""
        self.audio_seen = True
        for t, p, s in zip(t_s, prosody, speech, strict=True):
            self._audio.append((float(t), float(p[0]), float(p[1]), float(p[2]), bool(s)))
        if len(t_s):
            self._advance(float(t_s[-1]) + frame_s)

    def add_segments(
        self, segments: Iterable[SpeechSegment], open_segment: SpeechSegment | None = None
    ) -> None:
        """Closed VAD segments, and the segment still open now (``None`` when not in speech)."""
        self.audio_seen = True
        self._segments.extend(segments)
        self._open = open_segment

    def add_visual(self, t_s: float, vector: FloatArray) -> None:
        """One visual vector ``(VISUAL_DIM,)`` at media time ``t_s``."""
        self.video_seen = True
        self._visual.append((t_s, vector))
        self._advance(t_s)

    def add_eye(self, t_s: float, openness: float | None) -> None:
        """One eye-openness sample of the full-frame-rate pass (None: no face / no reference yet)."""
        self.video_seen = True
        self._eye.append((t_s, NAN if openness is None else float(openness)))  # media time not advanced:
        # the thinned-out frames never moved it, and the voice indicators' windows stay as they were

    def mark_audio(self) -> None:
        """Audio is arriving (before the first pooled frame): voice indicators exist from now on."""
        self.audio_seen = True

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
        while self._eye and self._eye[0][0] < horizon:
            self._eye.popleft()
        while self._segments and self._segments[0].end_s < horizon:
            self._segments.popleft()

    def _window(self, window_s: float) -> tuple[float, float, float]:
        end = self.now_s
        window = min(max(window_s, 0.0), self.max_window_s, end)
        return end - window, end, window

    def unavailable(self, window_s: float = 30.0) -> dict[str, str]:
        """Indicator name → why it reads NaN (no audio, no video, no face in the window)."""
        start, _, _ = self._window(window_s)
        face_reason: str | None = UNAVAILABLE["face"] if not self.video_seen else None
        face = IDX["face_present"]
        if face_reason is None and not any(t >= start and v[face] > 0.5 for t, v in self._visual):
            face_reason = NO_FACE
        reasons = {"voice": None if self.audio_seen else UNAVAILABLE["voice"], "face": face_reason}
        return {k: r for k, info in INDICATOR_INFO.items() if (r := reasons[info.modality]) is not None}

    def snapshot(self, window_s: float = 30.0) -> dict[str, float]:
        """Every indicator over the last ``window_s`` of media time, plus ``t_s`` and ``window_s``;
        NaN for a modality that is not there (see :meth:`unavailable`)."""
        start, end, window = self._window(window_s)
        segs = [s for s in self._segments if s.end_s > start and s.start_s < end]
        if self._open is not None and self._open.end_s > start:
            segs.append(self._open)
        gaps = pauses(segs, start, end)
        rows = [r for r in self._audio if r[0] >= start]
        t_a = np.array([r[0] for r in rows], dtype=np.float64)
        a = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4)
        speech = a[:, 3] > 0.5
        voiced = speech & (a[:, 2] > 0.5)
        f0_mean, f0_sd = f0_stats(a[voiced, 0])
        loud = speech & (a[:, 1] != 0.0)
        vis = [(t, v) for t, v in self._visual if t >= start]
        times = np.array([t for t, _ in vis], dtype=np.float64)
        visual = np.array([v for _, v in vis], dtype=np.float64).reshape(len(vis), VISUAL_DIM)
        eye = np.array([e for e in self._eye if e[0] >= start], dtype=np.float64).reshape(-1, 2)
        blinks = eye_blink_rate_per_min(eye[:, 0], eye[:, 1])
        if not math.isfinite(blinks):  # no eye pass: the analysed frames' blink flag
            blinks = blink_rate_per_min(times, visual)
        voice = {
            "speech_ratio": speech_ratio(segs, start, end),
            "pause_count": float(len(gaps)),
            "pause_mean_s": float(np.mean(gaps)) if gaps else 0.0,
            "f0_mean_hz": f0_mean,
            "f0_sd_semitones": f0_sd,
            "energy_sd_db": energy_sd(a[loud, 1]),
            "speech_level_db": speech_level(a[loud, 1]),
            "speech_level_sd_db": level_sd_across_segments(t_a[loud], a[loud, 1], segs),
        }
        face = {
            "expressivity": expressivity(times, visual),
            "smile_ratio": smile_ratio(visual),
            "smile_au12_mean": smile_au12_mean(visual),
            "head_pitch_deg": head_pitch_deg(visual),
            "gaze_down_ratio": gaze_down_ratio(visual),
            "head_motion": head_motion(times, visual),
            "blink_rate_per_min": blinks,
        }
        out = {**voice, **face}
        for key in self.unavailable(window_s):
            out[key] = NAN
        return {k: out[k] for k in INDICATOR_KEYS} | {"t_s": end, "window_s": window}
