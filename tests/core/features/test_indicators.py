from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import data

from mllmdr_core.config import AudioEncoderConfig, VADConfig, VisualConfig
from mllmdr_core.features.encoder import StreamingHubertEncoder, build_hubert
from mllmdr_core.features.face import IDX, VISUAL_DIM, make_face_tracker
from mllmdr_core.features.indicators import (
    INDICATOR_INFO,
    INDICATOR_KEYS,
    IndicatorTracker,
    energy_sd,
    eye_blink_rate_per_min,
    pauses,
    speech_ratio,
)
from mllmdr_core.features.vad import VoiceActivityDetector
from mllmdr_core.frames import AudioChunk, SpeechSegment

from .signals import alternating, tone
from .test_encoder import TINY_HUBERT


def _visual(n: int, fps: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    v = np.zeros((n, VISUAL_DIM), dtype=np.float32)
    v[:, IDX["face_present"]] = 1.0
    return np.arange(n) / fps, v


def test_200hz_tone_f0_within_2_percent() -> None:
    cfg = AudioEncoderConfig(hubert=dict(TINY_HUBERT), speech_only=False)
    enc = StreamingHubertEncoder(cfg, build_hubert(cfg))
    frames = enc.push_frames(tone(200.0, 6.1))  # three complete 2 s windows
    tr = IndicatorTracker()
    tr.add_audio_frames(np.arange(len(frames.speech)) * 0.2, frames.prosody, frames.speech, 0.2)
    snap = tr.snapshot(30.0)
    assert snap["f0_mean_hz"] == pytest.approx(200.0, rel=0.02)
    assert snap["f0_sd_semitones"] < 0.2
    assert snap["energy_sd_db"] < 0.5
    assert snap["t_s"] == pytest.approx(6.0) and snap["window_s"] == pytest.approx(6.0)


def test_half_speech_ratio_and_pauses_from_vad() -> None:
    vad = VoiceActivityDetector(VADConfig())
    segs = vad.process(AudioChunk(alternating(2.0, 10), 0.0)) + vad.flush()
    tr = IndicatorTracker()
    tr.add_segments(segs)
    tr.advance(40.0)
    snap = tr.snapshot(40.0)
    assert snap["speech_ratio"] == pytest.approx(0.5, abs=0.05)
    assert snap["pause_count"] == 9.0
    assert snap["pause_mean_s"] == pytest.approx(2.0, abs=0.2)
    last = tr.snapshot(8.0)  # two blocks: 32–40 s
    assert last["speech_ratio"] == pytest.approx(0.5, abs=0.05) and last["pause_count"] == 1.0


def test_still_image_has_near_zero_expressivity_and_head_motion() -> None:
    img = np.ascontiguousarray(data.astronaut())
    ft = make_face_tracker(VisualConfig())
    tr = IndicatorTracker()
    try:
        for i in range(8):
            tr.add_visual(i / 5.0, ft.process(img, i / 5.0).vector)
    finally:
        ft.close()
    snap = tr.snapshot(30.0)
    assert snap["expressivity"] < 0.005
    assert snap["head_motion"] < 0.5
    # the photo is the synthetic face's neutral (its own slight smile: AU12 0, face_v2's calibration)
    assert snap["smile_ratio"] == 0.0 and snap["smile_au12_mean"] < 0.5
    assert snap["blink_rate_per_min"] == 0.0
    # the whole 512² photo (face off-centre, camera focal = width) reads ~16.6° pitch: above the 8° the
    # synthetic 320×240 framing was calibrated on — the threshold is framing-dependent (docs/features.md)
    assert snap["head_pitch_deg"] == pytest.approx(16.6, abs=1.0) and snap["gaze_down_ratio"] == 1.0


def test_planted_blinks_motion_and_gaze() -> None:
    t, v = _visual(300)  # 60 s at 5 fps
    blink_frames = np.arange(7, 300, 20)  # 15 single-frame blinks
    v[blink_frames, IDX["blink"]] = 1.0
    v[blink_frames[:3] + 1, IDX["blink"]] = 1.0  # a longer blink is still one onset
    v[:, IDX["head_yaw_deg"]] = 10.0 * t  # 10 deg/s turn
    v[:, IDX["landmark_motion"]] = 0.02  # per frame → 0.1 D/s
    v[:60, IDX["gaze_y"]] = 0.3  # first 12 s looking down
    v[:, IDX["mouth_width"]] = 0.70  # AU12 0
    v[:30, IDX["mouth_width"]] = 0.78  # AU12 2.5: smiling
    v[:, IDX["head_pitch_deg"]] = 4.0
    tr = IndicatorTracker()
    for ti, vi in zip(t, v, strict=True):
        tr.add_visual(float(ti), vi)
    snap = tr.snapshot(60.0)
    assert snap["blink_rate_per_min"] == pytest.approx(15.0 * 60.0 / 59.8, abs=0.01)
    assert snap["head_motion"] == pytest.approx(10.0, rel=1e-4)
    assert snap["expressivity"] == pytest.approx(0.1, rel=1e-4)
    assert snap["gaze_down_ratio"] == pytest.approx(60 / 300, abs=1e-6)
    assert snap["smile_ratio"] == pytest.approx(30 / 300, abs=1e-6)
    assert snap["smile_au12_mean"] == pytest.approx(2.5 * 30 / 300, abs=1e-5)
    assert snap["head_pitch_deg"] == pytest.approx(4.0)


def test_absent_frames_break_pairs_and_count_nothing() -> None:
    t, v = _visual(10)
    v[5] = 0.0  # absent frame
    v[:, IDX["head_yaw_deg"]] = np.where(v[:, IDX["face_present"]] > 0, 30.0 * np.arange(10), 0.0)
    tr = IndicatorTracker()
    for ti, vi in zip(t, v, strict=True):
        tr.add_visual(float(ti), vi)
    assert tr.snapshot(30.0)["head_motion"] == pytest.approx(150.0)  # 30° per 0.2 s, jump over gap ignored


def test_pure_functions_known_answers() -> None:
    segs = [SpeechSegment(0.0, 1.0), SpeechSegment(1.1, 2.0), SpeechSegment(3.0, 4.0)]
    assert pauses(segs, 0.0, 5.0) == [pytest.approx(1.0)]  # 0.1 s gap is below MIN_PAUSE_S
    assert speech_ratio(segs, 0.0, 5.0) == pytest.approx(2.9 / 5.0)
    assert speech_ratio(segs, 3.5, 4.5) == pytest.approx(0.5)
    assert energy_sd(np.array([-20.0, -30.0] * 10)) == pytest.approx(5.0)


def test_info_keys_window_pruning_and_empty() -> None:
    tr = IndicatorTracker(max_window_s=10.0)
    empty = tr.snapshot()
    assert set(empty) == {*INDICATOR_KEYS, "t_s", "window_s"}
    assert empty["t_s"] == 0.0 and empty["window_s"] == 0.0
    assert all(math.isnan(empty[k]) for k in INDICATOR_KEYS)  # nothing there: not available, never 0.0
    assert tr.unavailable() == {
        k: "no audio received" if info.modality == "voice" else "no video received"
        for k, info in INDICATOR_INFO.items()
    }
    for key, info in INDICATOR_INFO.items():
        assert info.unit and info.window and len(info.definition) > 20, key
    t, v = _visual(100)
    for ti, vi in zip(t, v, strict=True):
        tr.add_visual(float(ti) * 50, vi)  # 0..990 s
    assert tr.snapshot(1000.0)["window_s"] == 10.0
    assert len(tr._visual) == 2


def test_missing_modalities_read_nan_with_a_reason() -> None:
    """Audio only: face indicators NaN ("no video received"); a video without a face: "no face in view";
    voice values keep their meaning (silence is speech_ratio 0.0, not missing)."""
    tr = IndicatorTracker()
    tr.add_segments([SpeechSegment(1.0, 2.0)])
    tr.advance(10.0)
    snap = tr.snapshot(30.0)
    assert snap["speech_ratio"] == pytest.approx(0.1) and snap["pause_count"] == 0.0
    face_keys = {k for k, info in INDICATOR_INFO.items() if info.modality == "face"}
    assert face_keys == {
        "expressivity", "smile_ratio", "smile_au12_mean", "head_pitch_deg", "gaze_down_ratio",
        "head_motion", "blink_rate_per_min",
    }
    assert all(math.isnan(snap[k]) for k in face_keys)
    assert tr.unavailable() == dict.fromkeys(face_keys, "no video received")
    tr.add_visual(10.2, np.zeros(VISUAL_DIM, dtype=np.float32))  # a frame without a face
    assert tr.unavailable() == dict.fromkeys(face_keys, "no face in view")
    video_only = IndicatorTracker()
    t, v = _visual(20)
    for ti, vi in zip(t, v, strict=True):
        video_only.add_visual(float(ti), vi)
    snap = video_only.snapshot(30.0)
    assert math.isnan(snap["speech_ratio"]) and math.isnan(snap["f0_mean_hz"])
    assert snap["head_motion"] == 0.0 and snap["smile_ratio"] == 0.0
    assert set(video_only.unavailable()) == set(INDICATOR_KEYS) - face_keys


def test_eye_pass_blink_rate_and_loudness_functions() -> None:
    """The eye pass's closures per minute; speech level and its variability across segments."""
    t = np.arange(0.0, 60.0, 1 / 30)
    openness = np.ones(len(t))
    for start in np.arange(2.0, 60.0, 5.0):  # 12 blinks of 150 ms
        openness[(t >= start) & (t < start + 0.15)] = 0.6
    assert eye_blink_rate_per_min(t, openness) == pytest.approx(12 * 60 / (t[-1] - t[0]), rel=1e-6)
    openness[(t > 30) & (t < 40)] = np.nan  # no face for 10 s: that time does not count
    assert eye_blink_rate_per_min(t, openness) == pytest.approx(10 * 60 / (t[-1] - t[0] - 10.0), rel=0.01)
    tr = IndicatorTracker()
    for start in range(3):  # 200 ms frames per segment: the window t=0..1 is background-free speech
        t_a = np.arange(start * 4.0, start * 4.0 + 2.0, 0.2)
        prosody = np.zeros((len(t_a), 3), dtype=np.float32)
        prosody[:, 1] = -20.0 - 6.0 * start  # segment levels -20, -26, -32 dBFS
        tr.add_audio_frames(t_a, prosody, np.ones(len(t_a), dtype=bool), 0.2)
    tr.add_segments([SpeechSegment(s * 4.0, s * 4.0 + 2.0) for s in range(3)])
    snap = tr.snapshot(30.0)
    assert snap["speech_level_db"] == pytest.approx(-26.0, abs=1e-4)
    assert snap["speech_level_sd_db"] == pytest.approx(np.std([-20.0, -26.0, -32.0]), abs=1e-4)
