"""Synthetic and recorded test signals shared by the feature tests (16 kHz mono float32)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from mllmdr_core.features.audio import to_mono_16k
from mllmdr_core.frames import FloatArray

SR = 16000


def speechlike(dur_s: float, f0: float = 130.0, seed: int = 0) -> FloatArray:
    """Voiced-speech-like signal: harmonic source at ``f0`` (±10 % vibrato) through three formant
    resonators, 4 Hz syllable-rate amplitude modulation, light noise floor."""
    rng = np.random.default_rng(seed)
    n = int(dur_s * SR)
    t = np.arange(n) / SR
    phase = np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / SR
    src = sum(np.sin(2 * np.pi * k * phase) / k for k in range(1, 30))
    y = np.zeros(n)
    for fc, bw in ((700, 130), (1220, 70), (2600, 160)):
        r = np.exp(-np.pi * bw / SR)
        th = 2 * np.pi * fc / SR
        y += lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], src)
    y *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    y = 0.5 * y / np.abs(y).max()
    return (y + 0.003 * rng.standard_normal(n)).astype(np.float32)


def noise_floor(dur_s: float, seed: int = 1, amp: float = 0.003) -> FloatArray:
    """White noise floor (default -50 dBFS). webrtcvad keeps calling white noise above about -60 dBFS
    "speech" after loud espeak speech (its noise model adapts slowly), so recordings use ``amp=3e-4``."""
    return (amp * np.random.default_rng(seed).standard_normal(int(dur_s * SR))).astype(np.float32)


def tone(freq: float, dur_s: float, amp: float = 0.3) -> FloatArray:
    t = np.arange(int(dur_s * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def alternating(block_s: float, n_blocks: int) -> FloatArray:
    """Speech-like / silence blocks of equal length: 50 % speech."""
    parts = []
    for i in range(n_blocks):
        parts += [speechlike(block_s, seed=i), noise_floor(block_s, seed=100 + i)]
    return np.concatenate(parts)


def espeak(text: str, path: Path) -> FloatArray:
    """A real espeak-ng recording, trimmed to its first/last sample above -40 dBFS, at 16 kHz."""
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = to_mono_16k(pcm, sr)
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return x[loud[0] : loud[-1] + 1]
