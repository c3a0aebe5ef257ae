"""Planted signals are visible to cheap checks: speech timing/pitch and the face tracker's vector."""

from __future__ import annotations

import numpy as np
import parselmouth
import pytest
from skimage import data as skdata

from mllmdr_core.config import VisualConfig
from mllmdr_core.features.face import IDX, FaceTracker, make_face_tracker
from mllmdr_core.phq8 import ITEM_KEYS
from training.synth.face import CROP, LANDMARKS, FaceRig, make_timeline
from training.synth.plan import PITCH_RANGES, SessionPlan, plan_session
from training.synth.speech import RATE, render_speech


def _plan(level: int) -> SessionPlan:
    return plan_session(11, 0, items=dict.fromkeys(ITEM_KEYS, level), mode="full", rapport_questions=0)


@pytest.fixture(scope="module")
def tracker() -> FaceTracker:
    return make_face_tracker(VisualConfig())


def _speech_stats(level: int) -> dict[str, float]:
    plan = _plan(level)
    _audio, patient, turns = render_speech(plan, clinician_audio=False, rng=np.random.default_rng(0))
    answers = [t for t in turns if t.speaker == "patient"]
    questions = [t for t in turns if t.speaker == "clinician"]
    frames = patient[: len(patient) // 320 * 320].reshape(-1, 320)  # 20 ms frames
    voiced = np.sqrt((frames**2).mean(axis=1)) > 0.01
    inside = np.zeros(len(voiced), dtype=bool)
    for a in answers:
        inside[int(a.start_s * 50) : int(a.end_s * 50)] = True
    words = sum(len(a.text.split()) for a in answers)
    f0 = parselmouth.Sound(patient.astype(np.float64), RATE).to_pitch().selected_array["frequency"]
    return {
        "wpm": 60 * words / sum(a.end_s - a.start_s for a in answers),
        "pause_ratio": float(1 - voiced[inside].mean()),  # silent share inside answers
        "latency": float(np.mean([a.start_s - q.end_s for q, a in zip(questions, answers, strict=True)])),
        "f0_median": float(np.median(f0[f0 > 0])),
        "rms": float(np.sqrt((frames[inside & voiced] ** 2).mean())),  # loudness while speaking
    }


def test_speech_follows_planted_severity() -> None:
    low, high = _speech_stats(0), _speech_stats(3)
    assert low["wpm"] > high["wpm"] * 1.3, (low, high)
    assert high["pause_ratio"] > low["pause_ratio"] + 0.1, (low, high)
    assert high["latency"] > low["latency"] + 1.0, (low, high)
    assert low["f0_median"] > high["f0_median"] * 1.1, (low, high)
    assert low["rms"] > high["rms"] * 1.2, (low, high)


def _face_stats(level: int, tracker: FaceTracker) -> dict[str, float]:
    plan = _plan(level)
    times = np.arange(0.0, 12.0, 0.5)
    timeline = make_timeline(plan.face, times, np.zeros(len(times), np.float32), np.random.default_rng(0))
    rig = FaceRig(320, 240)
    obs = [tracker.process(rig.render(timeline, i), float(t)) for i, t in enumerate(times)]
    vecs = np.stack([o.vector for o in obs])  # (T, D)
    nose = np.stack([o.landmarks[1, :2] for o in obs if o.landmarks is not None])  # (T, 2) normalised
    return {
        "present": float(vecs[:, IDX["face_present"]].mean()),
        "pitch": float(vecs[:, IDX["head_pitch_deg"]].mean()),
        "gaze_y": float(vecs[:, IDX["gaze_y"]].mean()),
        "smile": float(vecs[:, IDX["smile"]].mean()),
        "motion": float(np.linalg.norm(np.diff(nose, axis=0), axis=1).mean()),  # head movement in the image
    }


def test_face_tracker_sees_planted_severity(tracker: FaceTracker) -> None:
    low, high = _face_stats(0, tracker), _face_stats(3, tracker)
    assert low["present"] == 1.0 and high["present"] == 1.0
    assert high["pitch"] > low["pitch"] + 6.0, (low, high)  # head down
    assert high["gaze_y"] > low["gaze_y"] + 0.01, (low, high)  # gaze down
    assert low["smile"] > high["smile"] + 0.03, (low, high)  # fewer smiles, corners down
    assert low["motion"] > high["motion"], (low, high)  # less movement


def test_blink_is_seen_and_landmarks_match_the_photo(tracker: FaceTracker) -> None:
    plan = _plan(0)
    times = np.zeros(1)
    rig = FaceRig(320, 240)
    timeline = make_timeline(plan.face, times, np.zeros(1, np.float32), np.random.default_rng(0))
    closed = timeline.__class__(**{**timeline.__dict__, "blink": np.ones(1, np.float32)})
    opened = timeline.__class__(**{**timeline.__dict__, "blink": np.zeros(1, np.float32)})
    assert tracker.process(rig.render(closed, 0), 0.0).vector[IDX["blink"]] == 1.0
    assert tracker.process(rig.render(opened, 0), 0.0).vector[IDX["blink"]] == 0.0
    obs = tracker.process(skdata.astronaut(), 0.0)  # the hard-coded landmarks are mediapipe's on this photo
    assert obs.landmarks is not None
    assert CROP[0] < LANDMARKS["nose_tip"][0] < CROP[2]
    for idx, key in (
        (33, "eye_r_outer"),
        (263, "eye_l_outer"),
        (61, "mouth_r"),
        (152, "chin"),
        (1, "nose_tip"),
    ):
        x, y = obs.landmarks[idx, 0] * 512, obs.landmarks[idx, 1] * 512
        assert (x, y) == pytest.approx(LANDMARKS[key], abs=3.0)


def test_planted_blinks_and_pitch_range_follow_severity() -> None:
    """Fewer, longer blinks and a narrower pitch range at high severity (the timeline, not a tracker)."""
    times = np.arange(0.0, 600.0, 1.0 / 30.0)  # 10 min at 30 fps
    stats = {}
    for level in (0, 3):
        plan = _plan(level)
        tl = make_timeline(plan.face, times, np.zeros(len(times), np.float32), np.random.default_rng(0))
        closed = tl.blink > 0.5
        onsets = int(np.count_nonzero(closed[1:] & ~closed[:-1]))
        stats[level] = (onsets / 10.0, closed.sum() / 30.0 / max(onsets, 1), plan.voice.pitch_range)
    (low_rate, low_len, low_range), (high_rate, high_len, high_range) = stats[0], stats[3]
    assert low_rate > high_rate * 1.4, stats  # blinks per minute
    assert high_len > low_len * 1.5, stats  # seconds closed per blink
    assert PITCH_RANGES.index(low_range) > PITCH_RANGES.index(high_range), stats
