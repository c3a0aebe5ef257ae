"""Panel indicators on short planted sessions: direction low → high as planted, |error| within the stated
bounds, live loop = offline replay within the stated tolerance (bench/panel_indicators.py at length)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_sdk.indicator_check import LIVE_REPLAY_TOL, MAX_ABS_ERROR, measure_indicators
from mllmdr_core.config import AudioEncoderConfig, MllmdrConfig, VisualConfig
from mllmdr_core.features.encoder import build_hubert
from mllmdr_core.media import MediaSource
from mllmdr_core.testing import TINY_HUBERT
from training.synth.planted import HIGH, LOW, PLANT_KEYS, render_planted


def test_planted_low_high_directions_errors_and_live_equals_replay(tmp_path: Path) -> None:
    cfg = MllmdrConfig(
        audio=AudioEncoderConfig(hubert=dict(TINY_HUBERT)), visual=VisualConfig(analysis_fps=2.5)
    )
    hubert = build_hubert(cfg.audio)
    measured, plants = {}, {}
    for planted in (LOW, HIGH):
        r = render_planted(planted, tmp_path / planted.name, 16.0)
        src = MediaSource(planted.name, r.audio, r.video)
        run = measure_indicators(src, cfg, hubert, "live")
        measured[planted.name], plants[planted.name] = run.values, r.plant
        for key in PLANT_KEYS:
            assert abs(run.values[key] - r.plant[key]) <= MAX_ABS_ERROR[key], (planted.name, key)
        # the eye pass sees every frame (30 fps), the mesh only the analysed ones (2.5 fps)
        assert run.eye_frames >= 29 * r.duration_s and run.analysed_frames <= 2.5 * r.duration_s + 2
        if planted is LOW:
            replay = measure_indicators(src, cfg, hubert, "replay")
            for key, tol in LIVE_REPLAY_TOL.items():
                assert replay.values[key] == pytest.approx(run.values[key], abs=tol), key
    for key in PLANT_KEYS:
        planted_up = plants["high"][key] > plants["low"][key]
        assert (measured["high"][key] > measured["low"][key]) == planted_up, key
    # the plant itself: a lively face and loud varied voice vs head down and a quiet flat voice
    assert plants["high"]["head_pitch_deg"] - plants["low"]["head_pitch_deg"] > 10.0
    assert plants["low"]["speech_level_db"] - plants["high"]["speech_level_db"] > 6.0
    assert plants["low"]["speech_level_sd_db"] > 2.0 * plants["high"]["speech_level_sd_db"]
