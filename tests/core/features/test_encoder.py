from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mllmdr_core.config import AudioEncoderConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.features.encoder import StreamingHubertEncoder, build_hubert
from mllmdr_core.features.prosody import PROSODY_NAMES, hz_to_semitones

from .signals import SR, noise_floor, speechlike, tone

TINY_HUBERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (8,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


def _cfg(**kw: object) -> AudioEncoderConfig:
    return AudioEncoderConfig(hubert=dict(TINY_HUBERT), **kw)  # type: ignore[arg-type]


def _stream(enc: StreamingHubertEncoder, x: np.ndarray, step: int, gate=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    parts = [enc.push(x[i : i + step], gate) for i in range(0, len(x), step)]
    return np.concatenate([*parts, enc.flush(gate)])


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return build_hubert(_cfg(), seed=0)


def test_chunking_invariance_30s(model) -> None:  # type: ignore[no-untyped-def]
    x = np.concatenate([speechlike(3.0, seed=i) if i % 2 == 0 else noise_floor(2.0) for i in range(12)])
    assert len(x) == 30 * SR
    cfg = _cfg(speech_only=False)
    outs = {step: _stream(StreamingHubertEncoder(cfg, model), x, step) for step in (320, SR, len(x))}
    one = outs[len(x)]
    assert one.shape == (150, 32 + len(PROSODY_NAMES) + 1)  # 30 s at 5 Hz
    for step in (320, SR):
        assert np.abs(outs[step] - one).max() <= 1e-5
    assert np.abs(one[:, :32]).max() > 0.1  # real hidden states, not zeros
    assert np.all(one[:, -1] == 1.0)  # no gate: every frame counts as speech


def test_speech_gate_skips_silent_windows_and_zeroes_frames(model) -> None:  # type: ignore[no-untyped-def]
    x = np.concatenate([speechlike(3.0), noise_floor(7.0)])
    enc = StreamingHubertEncoder(_cfg(speech_only=True), model)
    feats = _stream(enc, x, 4000, gate=lambda a, b: a < 3.0)
    assert feats.shape[0] == 50
    assert np.all(feats[15:] == 0.0)  # non-speech frames are zero vectors
    assert np.all(np.abs(feats[:15, :32]).max(axis=1) > 0.0)  # every speech frame keeps its hidden state
    assert np.all(feats[:15, -1] == 1.0) and np.abs(feats[:15, :32]).max() > 0.1
    assert enc.windows_encoded == 2 and enc.windows_skipped == 3


def test_prosody_of_a_200hz_tone(model) -> None:  # type: ignore[no-untyped-def]
    enc = StreamingHubertEncoder(_cfg(speech_only=False), model)
    frames = enc.push_frames(np.concatenate([tone(200.0, 4.0), np.zeros(2 * SR, np.float32)]))
    st = frames.prosody[:, 0]
    voiced = frames.prosody[:, 2] == 1.0
    assert voiced[:18].all() and not voiced[21:].any()
    f0_hz = 100.0 * 2 ** (st[2:18] / 12.0)
    assert np.all(np.abs(f0_hz - 200.0) < 4.0)  # within 2 %
    assert st[5] == pytest.approx(float(hz_to_semitones(200.0)), abs=0.35)
    assert frames.prosody[5, 1] == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.1)  # energy dBFS
    assert np.all(frames.prosody[22:] == 0.0)  # digital silence: zeros


def test_int8_close_to_fp32(model) -> None:  # type: ignore[no-untyped-def]
    x = speechlike(4.0)
    fp32 = StreamingHubertEncoder(_cfg(speech_only=False), model).push(x)
    int8 = StreamingHubertEncoder(_cfg(speech_only=False, int8=True), model).push(x)
    a, b = fp32[:, :32].ravel(), int8[:, :32].ravel()
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert 0.98 < cos < 1.0


def test_build_from_local_path_and_seed(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    model.save_pretrained(tmp_path / "hubert")
    loaded = build_hubert(AudioEncoderConfig(model=str(tmp_path / "hubert")))
    again = build_hubert(_cfg(), seed=0)
    other = build_hubert(_cfg(), seed=1)
    x = torch.from_numpy(speechlike(1.0)[None])
    with torch.inference_mode():
        ref = model(x).last_hidden_state
        assert torch.equal(loaded(x).last_hidden_state, ref)
        assert torch.equal(again(x).last_hidden_state, ref)
        assert not torch.allclose(other(x).last_hidden_state, ref)
    with pytest.raises(ConfigError):
        build_hubert(AudioEncoderConfig(model=str(tmp_path / "missing")))


def test_bad_configs_and_closed_stream(model) -> None:  # type: ignore[no-untyped-def]
    for kw in ({"pool_hz": 3.0}, {"window_s": 2.1}, {"left_context_s": 0.01}, {"sample_rate": 8000}):
        with pytest.raises(ConfigError):
            StreamingHubertEncoder(_cfg(**kw), model)
    enc = StreamingHubertEncoder(_cfg(prosody=False), model)
    assert enc.feature_dim == 32
    assert enc.flush().shape == (0, 32)
    with pytest.raises(MediaError):
        enc.push(np.zeros(10, np.float32))
