from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from features.signals import SR, alternating  # tests/core is on sys.path (rootdir-relative imports)
from features.test_encoder import TINY_HUBERT
from skimage import data

from mllmdr_core.config import AudioEncoderConfig, BufferConfig, MllmdrConfig
from mllmdr_core.errors import MediaError
from mllmdr_core.features.encoder import StreamingHubertEncoder, build_hubert
from mllmdr_core.features.face import IDX, VISUAL_DIM
from mllmdr_core.frames import FloatArray, TranscriptLine
from mllmdr_core.session_state import SessionState


@pytest.fixture(scope="module")
def cfg() -> MllmdrConfig:
    return MllmdrConfig(audio=AudioEncoderConfig(hubert=dict(TINY_HUBERT)))


@pytest.fixture(scope="module")
def hubert(cfg: MllmdrConfig):  # type: ignore[no-untyped-def]
    return build_hubert(cfg.audio)


def _state(cfg: MllmdrConfig, hubert, **kw: object) -> SessionState:  # type: ignore[no-untyped-def]
    return SessionState(cfg, session_id="s1", audio_encoder=StreamingHubertEncoder(cfg.audio, hubert), **kw)  # type: ignore[arg-type]


def _stereo48k(x16: np.ndarray) -> np.ndarray:
    """16 kHz mono → 48 kHz s16 stereo interleaved (as aiortc delivers), by sample repetition."""
    up = np.repeat(x16, 3)
    return (np.stack([up, up], axis=1).reshape(-1) * 32767).astype(np.int16)


class RecordingTranscriber:
    """A Transcriber that reports what it heard as one line per call."""

    name = "recording"
    low_accuracy = True

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        self.calls.append((start_s, len(samples)))
        return [TranscriptLine(start_s, start_s + len(samples) / SR, "patient", f"segment {len(self.calls)}")]


def test_live_20ms_frames_equal_one_shot(cfg: MllmdrConfig, hubert) -> None:  # type: ignore[no-untyped-def]
    x = alternating(2.0, 3)  # 12 s, 50 % speech
    pcm = _stereo48k(x)
    live, whole = _state(cfg, hubert), _state(cfg, hubert)
    for i in range(0, len(pcm), 1920):  # 960 stereo samples = 20 ms
        live.push_audio(pcm[i : i + 1920].reshape(1, -1), 48000, channels=2, t_s=i / 2 / 48000)
    whole.push_audio(pcm, 48000, channels=2, t_s=0.0)
    a_live, v_live = live.features()
    a_whole, _ = whole.features()
    assert a_live.shape == (60, 36) and v_live.shape == (0, VISUAL_DIM)
    assert np.abs(a_live - a_whole).max() <= 1e-5
    speech = a_live[:, -1] == 1.0
    assert 0.4 < speech.mean() < 0.65
    assert np.all(a_live[~speech] == 0.0) and np.abs(a_live[speech, :32]).max() > 0.1
    peeked = a_live.copy()
    live.flush()
    whole.flush()
    assert np.abs(live.features()[0] - peeked).max() <= 1e-6  # the checkpoint saw what the end gives
    assert np.abs(live.features()[0] - whole.features()[0]).max() <= 1e-5
    assert live.indicators(12.0)["speech_ratio"] == pytest.approx(0.5, abs=0.05)
    assert live.media_time_s == pytest.approx(12.0)
    st = live.stats
    assert st["audio_chunks_in"] == 600 and st["audio_seconds_in"] == pytest.approx(12.0)
    assert st["speech_segments"] == 3 and st["windows_encoded"] >= 3 and st["vad_s"] > 0
    a_mid, _ = live.features(4.0, 6.0)
    assert np.array_equal(a_mid, a_live[20:30])
    live.close()
    whole.close()


def test_video_sampled_by_timestamp_30fps_to_5fps(cfg: MllmdrConfig) -> None:
    state = SessionState(cfg, session_id="video-only")  # no audio: the encoder is never built
    img = np.ascontiguousarray(data.astronaut())
    for k in range(60):  # 2 s at 30 fps
        state.push_video(img, k / 30.0)
    state.push_video(img, 0.5)  # time goes back: dropped
    audio, visual = state.features()
    assert audio.shape == (0, 36) and state._encoder is None
    st = state.stats
    assert st["video_frames_in"] == 61 and st["video_frames_analysed"] == 10
    assert st["video_frames_dropped"] == 1 and st["faces_found"] == 10
    assert visual.shape == (10, VISUAL_DIM) and np.all(visual[:, IDX["face_present"]] == 1.0)
    _, part = state.features(0.0, 1.0)
    assert len(part) == 5
    ind = state.indicators(30.0)
    assert ind["expressivity"] < 0.005 and ind["smile_ratio"] == 0.0  # the photo: the synthetic neutral
    # every frame (analysed or not) went through the eye-openness pass; a still face never blinks
    assert st["eye_frames"] == 60 and ind["blink_rate_per_min"] == 0.0
    assert np.isnan(ind["speech_ratio"]) and state.unavailable()["speech_ratio"] == "no audio received"
    assert state.media_time_s == pytest.approx(59 / 30)
    state.close()


def test_transcriber_gets_each_closed_segment(cfg: MllmdrConfig, hubert) -> None:  # type: ignore[no-untyped-def]
    asr = RecordingTranscriber()
    state = _state(cfg, hubert, transcriber=asr)
    x = alternating(2.0, 3)
    for i in range(0, len(x), 320):
        state.push_audio(x[i : i + 320], SR, t_s=10.0 + i / SR)
    state.flush()
    assert len(asr.calls) == 3
    for k, (start, n) in enumerate(asr.calls):
        assert start == pytest.approx(10.0 + 4.0 * k, abs=0.15)
        assert n / SR == pytest.approx(2.0, abs=0.25)
    state.add_transcript(TranscriptLine(0.5, 1.0, "clinician", "How are you?", source="captions"))
    lines = state.transcript
    assert [line.text for line in lines] == ["How are you?", "segment 1", "segment 2", "segment 3"]
    state.close()


def test_time_gap_is_filled_and_stale_times_ignored(cfg: MllmdrConfig, hubert) -> None:  # type: ignore[no-untyped-def]
    state = _state(cfg, hubert)
    state.push_audio(np.zeros(SR, np.float32), SR, t_s=5.0)
    state.push_audio(np.zeros(SR, np.float32), SR, t_s=8.0)  # 2 s gap
    state.push_audio(np.zeros(SR, np.float32), SR, t_s=2.0)  # stale: continues at 10 s
    assert state.media_time_s == pytest.approx(10.0)  # 5 s start + 1 s + 2 s gap + 1 s + 1 s
    audio, _ = state.features()
    assert audio.shape[0] == 25 and not audio.any()  # 5 s of silence at 5 Hz, zero vectors
    st = state.stats
    assert st["audio_gap_fill_s"] == pytest.approx(2.0) and st["audio_time_ignored"] == 1
    assert st["windows_skipped"] >= 2 and st["windows_encoded"] == 0
    state.close()


def test_close_is_idempotent_and_removes_spill(tmp_path: Path, hubert) -> None:  # type: ignore[no-untyped-def]
    cfg = MllmdrConfig(
        audio=AudioEncoderConfig(hubert=dict(TINY_HUBERT), speech_only=False),
        buffer=BufferConfig(max_memory_mb=0.02, spill_dir=str(tmp_path)),
    )
    state = _state(cfg, hubert)
    state.push_audio(alternating(2.0, 5), SR)
    assert state.stats["buffer_spilled_chunks"] > 0 and any(tmp_path.iterdir())
    audio, _ = state.features()
    assert audio.shape == (100, 36) and np.abs(audio[:, :32]).max(axis=1).min() > 0  # silence encoded too
    assert 0.4 < audio[:, -1].mean() < 0.65  # the speech flag still follows the VAD
    state.close()
    state.close()
    assert not any(tmp_path.iterdir())
    with pytest.raises(MediaError):
        state.push_audio(np.zeros(10, np.float32), SR)
    with pytest.raises(MediaError):
        SessionState(cfg, session_id="x", transcriber=object())
