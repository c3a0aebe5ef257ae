from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from mllmdr_core.errors import MediaError
from mllmdr_core.features.audio import AudioNormalizer, to_mono, to_mono_16k


def _stream(norm: AudioNormalizer, x: np.ndarray, rate: int, sizes: list[int], channels: int = 1) -> list:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)] * channels
        out.append(norm.process(x[i : i + n], rate, channels))
        i, k = i + n, k + 1
    return out


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 16000, 8000])
def test_streaming_equals_whole_resample_poly(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = (0.2 * rng.standard_normal(rate * 2)).astype(np.float32)
    g = np.gcd(rate, 16000)
    ref = resample_poly(x.astype(np.float64), 16000 // g, rate // g)
    norm = AudioNormalizer()
    y = np.concatenate([*_stream(norm, x, rate, [1, 7, 960, 333, 4000]), norm.flush()])
    assert y.dtype == np.float32 and len(y) == len(ref) == 32000
    assert np.abs(y - ref).max() < 1e-6
    assert norm.samples_out == 32000
    assert np.array_equal(to_mono_16k(x, rate), y)


def test_aiortc_layout_s16_stereo_48k_960_frames() -> None:
    t = np.arange(48000) / 48000
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 440 * t)
    inter = (np.stack([left, right], axis=1).reshape(-1) * 32767).astype(np.int16)  # L R L R …
    norm = AudioNormalizer()
    frames = [inter[i : i + 1920].reshape(1, -1) for i in range(0, len(inter), 1920)]  # av packed (1, 960·2)
    y = np.concatenate([norm.process(f, 48000, channels=2) for f in frames] + [norm.flush()])
    assert len(y) == 16000
    mid = y[1000:15000]
    assert abs(np.sqrt(np.mean(mid**2)) - 0.375 / np.sqrt(2)) < 2e-3  # mono = mean of channels
    ref = to_mono_16k(np.stack([left, right], axis=1), 48000, channels=2)  # (N, C) float layout
    assert np.abs(ref - y).max() < 1e-4  # int16 quantisation only


def test_rate_change_mid_stream_equals_pieces() -> None:
    rng = np.random.default_rng(0)
    a = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    b = (0.1 * rng.standard_normal(44100)).astype(np.float32)
    norm = AudioNormalizer()
    y = np.concatenate([*_stream(norm, a, 48000, [960]), *_stream(norm, b, 44100, [441]), norm.flush()])
    ref = np.concatenate([to_mono_16k(a, 48000), to_mono_16k(b, 44100)])
    assert len(y) == len(ref) == 32000
    assert np.abs(y - ref).max() < 1e-6


def test_dtypes_and_layouts() -> None:
    x16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    assert np.allclose(to_mono(x16), [0, 0.5, -1.0, 32767 / 32768])
    x32 = np.array([2**30], dtype=np.int32)
    assert np.allclose(to_mono(x32), [0.5])
    planar = np.array([[0.2, 0.4, 0.6], [0.0, 0.0, 0.0]])  # (C, N)
    assert np.allclose(to_mono(planar, channels=2), [0.1, 0.2, 0.3])
    assert np.allclose(to_mono(planar.T, channels=2), [0.1, 0.2, 0.3])  # (N, C)
    with pytest.raises(MediaError):
        to_mono(np.zeros(5), channels=2)
    with pytest.raises(MediaError):
        to_mono(np.array(["a"]))
    with pytest.raises(MediaError):
        AudioNormalizer().process(np.zeros(10, np.float32), 0)
