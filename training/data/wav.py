"""PCM WAV reading with stdlib ``wave`` (the datasets ship 16-bit PCM)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from mllmdr_core.errors import DatasetError
from mllmdr_core.frames import FloatArray


def read_wav(path: Path) -> tuple[FloatArray, int]:
    """Return mono float32 samples in [-1, 1] (channels averaged) and the sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: audio file missing") from exc
    except (wave.Error, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable PCM WAV file ({exc})") from exc
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise DatasetError(f"{path}: unsupported WAV sample width {width} bytes")
    x = np.frombuffer(raw[: len(raw) - len(raw) % (width * channels)], dtype=dtypes[width]).astype(np.float32)
    if width == 1:
        x = (x - 128.0) / 128.0
    else:
        x /= float(2 ** (8 * width - 1))
    x = x.reshape(-1, channels).mean(axis=1)  # (N,)
    return x.astype(np.float32), rate


def read_wav_16k(path: Path) -> FloatArray:
    """Mono float32 at 16 kHz (resampled with a polyphase filter when needed)."""
    x, rate = read_wav(path)
    if rate == 16000:
        return x
    g = int(np.gcd(rate, 16000))
    return resample_poly(x, 16000 // g, rate // g).astype(np.float32)


def write_wav(path: Path, samples: FloatArray, rate: int = 16000) -> None:
    """Write mono float samples as 16-bit PCM."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
