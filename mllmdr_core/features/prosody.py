"""Prosody per pooled frame: F0 (semitones re 100 Hz), energy (dBFS), voiced flag.

F0 comes from Praat's autocorrelation pitch tracker (praat-parselmouth ``Sound.to_pitch_ac``, time step
10 ms, floor 75 Hz, ceiling 500 Hz) run over the same fixed window the encoder sees, so it is as
chunking-invariant as the HuBERT features. Per pooled frame: ``voiced`` = at least half of the pitch
frames inside it are voiced; ``f0_semitones`` = 12·log2(median voiced F0 / 100 Hz) when voiced, else 0;
``energy_db`` = 20·log10(RMS) of the frame's samples. A silent frame (RMS below -60 dBFS) is all zeros.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mllmdr_core.frames import FloatArray

PROSODY_NAMES: tuple[str, ...] = ("f0_semitones", "energy_db", "voiced")
SILENCE_DBFS = -60.0
PITCH_FLOOR_HZ = 75.0
PITCH_CEILING_HZ = 500.0
F0_REF_HZ = 100.0


def semitones_to_hz(st: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(F0_REF_HZ * 2.0 ** (np.asarray(st, dtype=np.float64) / 12.0))


def hz_to_semitones(hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(12.0 * np.log2(np.asarray(hz, dtype=np.float64) / F0_REF_HZ))


def pitch_track(
    samples: FloatArray, sample_rate: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Praat AC pitch: (times (P,) s from the first sample, F0 (P,) Hz, 0 where unvoiced)."""
    if len(samples) < int(3.0 / PITCH_FLOOR_HZ * sample_rate) + 1:
        return np.zeros(0), np.zeros(0)
    import parselmouth  # here, not at import: the vLLM plugin's env reads the prompt rules without it

    snd = parselmouth.Sound(samples.astype(np.float64), sampling_frequency=float(sample_rate))
    pitch = snd.to_pitch_ac(time_step=0.01, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    return np.asarray(pitch.xs()), np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def prosody_frames(
    samples: FloatArray, sample_rate: int, first: int, frame_len: int, n_frames: int
) -> FloatArray:
    """Prosody of ``n_frames`` consecutive frames of ``frame_len`` samples starting at sample ``first``.

    ``samples`` may extend before/after those frames (context for the pitch tracker). → (n_frames, 3).
    """
    out = np.zeros((n_frames, len(PROSODY_NAMES)), dtype=np.float32)
    times, f0 = pitch_track(samples, sample_rate)
    for i in range(n_frames):
        a, b = first + i * frame_len, first + (i + 1) * frame_len
        seg = samples[a:b].astype(np.float64)
        rms = float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0
        db = 20.0 * np.log10(max(rms, 1e-10))
        if db < SILENCE_DBFS:
            continue
        inside = f0[(times >= a / sample_rate) & (times < b / sample_rate)]
        voiced = inside[inside > 0]
        is_voiced = len(inside) > 0 and len(voiced) * 2 >= len(inside)
        out[i] = (float(hz_to_semitones(np.median(voiced))) if is_voiced else 0.0, db, float(is_voiced))
    return out
