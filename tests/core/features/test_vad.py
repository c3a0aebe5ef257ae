from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.config import VADConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.features.vad import VoiceActivityDetector
from mllmdr_core.frames import AudioChunk, SpeechSegment

from .signals import SR, alternating, espeak, noise_floor, speechlike


def _run(
    x: np.ndarray, cfg: VADConfig, chunk: int | None = None
) -> tuple[list[SpeechSegment], VoiceActivityDetector]:
    vad = VoiceActivityDetector(cfg)
    segs: list[SpeechSegment] = []
    step = chunk or len(x)
    for i in range(0, len(x), step):
        segs += vad.process(AudioChunk(x[i : i + step], i / SR))
    return segs + vad.flush(), vad


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_synthetic_half_speech_ratio(frame_ms: int) -> None:
    x = alternating(2.0, 5)  # 2 s speech-like / 2 s silence, 20 s
    segs, vad = _run(x, VADConfig(frame_ms=frame_ms))
    assert len(segs) == 5
    ratio = sum(s.duration_s for s in segs) / 20.0
    assert ratio == pytest.approx(0.5, abs=0.05)
    for k, s in enumerate(segs):
        assert s.start_s == pytest.approx(4.0 * k, abs=0.15)
        assert s.end_s == pytest.approx(4.0 * k + 2.0, abs=0.2)
    assert len(vad.speech_mask) == int(20000 / frame_ms)


def test_espeak_recording_half_speech(tmp_path: Path) -> None:
    speech = espeak("I have been feeling tired and I do not sleep well at night.", tmp_path / "a.wav")
    gap = noise_floor(len(speech) / SR, amp=3e-4)
    x = np.concatenate([speech, gap, speech, gap])
    segs, _ = _run(x, VADConfig(), chunk=320)
    ratio = sum(s.duration_s for s in segs) / (len(x) / SR)
    assert ratio == pytest.approx(0.5, abs=0.05)
    assert 2 <= len(segs) <= 6  # word gaps bridged by the hangover, the long pauses split


def test_chunking_does_not_change_decisions() -> None:
    x = alternating(1.0, 3)
    a, va = _run(x, VADConfig(), chunk=None)
    b, vb = _run(x, VADConfig(), chunk=137)
    assert a == b and np.array_equal(va.speech_mask, vb.speech_mask)


def test_hangover_bridges_short_gaps_and_min_speech_drops_bursts() -> None:
    short_gap = np.concatenate([speechlike(1.0), noise_floor(0.1), speechlike(1.0, seed=3), noise_floor(1.0)])
    segs, _ = _run(short_gap, VADConfig(hangover_ms=300))
    assert len(segs) == 1 and segs[0].duration_s > 1.9
    segs, _ = _run(short_gap, VADConfig(hangover_ms=0, min_silence_ms=30, aggressiveness=3))
    assert len(segs) == 2
    burst = np.concatenate([noise_floor(0.5), speechlike(0.06, seed=5), noise_floor(1.0)])
    segs, vad = _run(burst, VADConfig(min_speech_ms=400))
    assert segs == [] and vad.speech_mask.any()


def test_open_segment_and_voiced_between() -> None:
    vad = VoiceActivityDetector(VADConfig())
    assert vad.process(AudioChunk(np.concatenate([noise_floor(1.0), speechlike(1.0)]), 10.0)) == []
    seg = vad.open_segment
    assert seg is not None and seg.start_s == pytest.approx(11.0, abs=0.1)
    assert vad.voiced_between(11.2, 11.4) and not vad.voiced_between(10.3, 10.8)
    assert vad.decided_until_s == pytest.approx(12.0)
    assert len(vad.flush()) == 1 and vad.flush() == []


def test_bad_config() -> None:
    with pytest.raises(ConfigError):
        VoiceActivityDetector(VADConfig(frame_ms=25))
    with pytest.raises(ConfigError):
        VoiceActivityDetector(VADConfig(aggressiveness=4))
