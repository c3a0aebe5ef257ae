"""SessionSnapshot: the one input of an assessment — built from loose parts or a live state, kept as bytes."""

from __future__ import annotations

import numpy as np
import pytest

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import StorageError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.session_state import SessionState
from mllmdr_core.snapshot import SessionSnapshot, finite
from mllmdr_core.testing import tiny_config


def _lines() -> tuple[TranscriptLine, ...]:
    return (
        TranscriptLine(0.0, 1.5, "clinician", "How do you sleep?"),
        TranscriptLine(2.0, 4.0, "patient", "badly", source="asr:pocketsphinx"),
        TranscriptLine(2.0, 4.0, "patient", "Badly.", source="captions"),
    )


def test_of_copies_arrays_filters_indicators_and_defaults_the_window() -> None:
    audio = np.ones((3, 4), dtype=np.float64)
    indicators = {"a": 1, "b": float("nan"), "t": True}
    snap = SessionSnapshot.of(audio=audio, transcript=_lines(), indicators=indicators)
    audio[0, 0] = 7.0
    assert snap.audio.dtype == np.float32 and snap.audio[0, 0] == 1.0  # a copy, not a view
    assert snap.visual.shape == (0, 0) and snap.indicators == {"a": 1.0}
    assert snap.window == (0.0, 4.0)  # the last line's end
    assert finite({"x": float("inf"), "y": 2}) == {"y": 2.0}


def test_without_sources_drops_only_that_source() -> None:
    snap = SessionSnapshot.of(transcript=_lines())
    kept = snap.without_sources("asr")
    assert [ln.source for ln in kept.transcript] == ["captions", "captions"]
    assert snap.transcript == _lines()  # the original is untouched (frozen)


def test_bytes_round_trip_and_a_damaged_file_is_a_storage_error() -> None:
    snap = SessionSnapshot.of(
        audio=np.arange(12, dtype=np.float32).reshape(3, 4),  # (Ta, D_audio)
        visual=np.full((2, 5), 0.5, dtype=np.float32),  # (Tv, D_visual)
        transcript=_lines(),
        indicators={"speech_ratio": 0.25},
        window=(1.0, 6.5),
    )
    back = SessionSnapshot.from_bytes(snap.to_bytes())
    assert np.array_equal(back.audio, snap.audio) and np.array_equal(back.visual, snap.visual)
    assert back.transcript == snap.transcript and back.indicators == snap.indicators
    assert back.window == (1.0, 6.5)
    with pytest.raises(StorageError, match=r"pending/x\.npz"):
        SessionSnapshot.from_bytes(b"not an npz", where="pending/x.npz")


def test_session_state_snapshot_equals_its_parts() -> None:
    cfg: MllmdrConfig = tiny_config()
    state = SessionState(cfg, session_id="snap")
    try:
        t = np.arange(3 * 16000) / 16000.0
        state.push_audio((0.3 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32), 16000)
        state.add_transcript(_lines()[2])
        snap = state.snapshot(indicator_window_s=10.0)
        audio, visual = state.features()
        assert np.array_equal(snap.audio, audio) and np.array_equal(snap.visual, visual)
        assert snap.transcript == tuple(state.transcript)
        assert snap.indicators == finite(state.indicators(10.0))
        assert snap.window == (0.0, state.media_time_s) and snap.window[1] == pytest.approx(3.0)
    finally:
        state.close()
