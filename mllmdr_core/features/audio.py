"""Audio input normalisation: any rate / layout / dtype → 16 kHz mono float32 in [-1, 1].

Resampling is a polyphase FIR resampler written here (no state hidden in a C library), with the
filter of ``scipy.signal.resample_poly`` (Kaiser window β = 5, half length 10·max(up, down)) and its
delay compensation, so that the streamed output of :class:`AudioNormalizer` equals
``scipy.signal.resample_poly`` of the whole signal (max abs diff < 1e-6, float64 inside, float32 out;
``tests/core/features/test_audio.py``). The price is a look-ahead of half the filter: 30 input samples
(0.6 ms) at 48 kHz. A change of input sample rate mid-stream flushes the old resampler (zero-padded
tail, as ``resample_poly`` pads a signal's end) and starts a new one, so the output equals the
concatenation of the separately resampled constant-rate pieces.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt
from scipy.signal import firwin

from mllmdr_core.errors import MediaError
from mllmdr_core.frames import FloatArray

TARGET_RATE = 16000


def _to_float(samples: np.ndarray) -> npt.NDArray[np.float64]:
    """Integer PCM → float in [-1, 1]; float input is passed through."""
    a = np.asarray(samples)
    if a.dtype == np.int16:
        return a.astype(np.float64) / 32768.0
    if a.dtype == np.int32:
        return a.astype(np.float64) / 2147483648.0
    if a.dtype == np.uint8:
        return (a.astype(np.float64) - 128.0) / 128.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise MediaError(f"unsupported audio sample dtype {a.dtype}")


def to_mono(samples: np.ndarray, channels: int = 1) -> npt.NDArray[np.float64]:
    """Any dtype, ``(N,)`` interleaved per ``channels`` or ``(N, C)`` / ``(C, N)`` → mono float64 (N,)."""
    if channels < 1:
        raise MediaError(f"channels must be >= 1, got {channels}")
    x = _to_float(samples)
    if x.ndim == 2:
        if x.shape[1] == channels:
            return np.asarray(x.mean(axis=1))  # (N, C)
        if x.shape[0] == channels:
            return np.asarray(x.mean(axis=0))  # (C, N), e.g. av planar frames
        raise MediaError(f"audio shape {x.shape} does not match channels={channels}")
    if x.ndim != 1:
        raise MediaError(f"audio must be 1-D or 2-D, got shape {x.shape}")
    if channels == 1:
        return x
    if len(x) % channels:
        raise MediaError(f"{len(x)} interleaved samples are not a multiple of channels={channels}")
    return np.asarray(x.reshape(-1, channels).mean(axis=1))


def _packed(samples: np.ndarray, channels: int) -> np.ndarray:
    """aiortc/av packed s16 frames arrive as (1, N·C): flatten to interleaved."""
    a = np.asarray(samples)
    if a.ndim == 2 and a.shape[0] == 1 and channels > 1:
        return a.reshape(-1)
    return a


class PolyphaseResampler:
    """Stateful rational resampler ``in_rate → out_rate`` equal to ``scipy.signal.resample_poly``."""

    def __init__(self, in_rate: int, out_rate: int = TARGET_RATE) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise MediaError(f"sample rates must be positive, got {in_rate} → {out_rate}")
        g = gcd(in_rate, out_rate)
        self.in_rate = in_rate
        self.up, self.down = out_rate // g, in_rate // g
        self.identity = self.up == self.down == 1
        if self.identity:
            return
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up  # (2·half_len+1,)
        self.delay = half_len  # group delay in the up-sampled domain
        # polyphase bank: y[n] = Σ_k bank[φ, k] · x[q − k], with p = n·down + delay, q = p // up, φ = p % up
        k = -(-len(h) // self.up)
        padded = np.zeros(k * self.up)
        padded[: len(h)] = h
        self.bank = padded.reshape(k, self.up).T.copy()  # (up, K)
        self.bank_rev = np.ascontiguousarray(self.bank[:, ::-1])  # (up, K), taps in input order
        self.taps = k
        self.buf = np.zeros(0)  # input history; buf[0] has absolute index self.buf_start
        self.buf_start = 0
        self.n_in = 0
        self.n_out = 0

    def _emit(self, n_stop: int) -> npt.NDArray[np.float64]:
        """Outputs ``n_out .. n_stop-1`` from the history (missing input counts as zero)."""
        n = np.arange(self.n_out, n_stop)
        if len(n) == 0:
            return np.zeros(0)
        p = n * self.down + self.delay
        q, phase = p // self.up, p % self.up
        # Output n reads inputs q_n, q_n - 1, .., q_n - K + 1: row q_n - K + 1 of the history's sliding
        # windows, read against the reversed filter bank. The history is padded with K - 1 zeros on each
        # side (inputs before the first and after the last one count as zero, as in resample_poly).
        pad = self.taps - 1
        # only the padded stretch these outputs read: window rows lo .. q[-1] - buf_start
        lo, hi = int(q[0]) - self.buf_start, int(q[-1]) - self.buf_start + pad + 1
        padded = np.zeros(hi - lo)
        src_lo, src_hi = max(lo - pad, 0), min(hi - pad, len(self.buf))
        if src_hi > src_lo:
            padded[src_lo + pad - lo : src_hi + pad - lo] = self.buf[src_lo:src_hi]
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.taps)  # (rows, K), no copy
        x = windows[q - self.buf_start - lo]  # (N_out, K): x[n, K-1-k] = input q_n - k
        # one phase (integer decimation, e.g. 48 kHz → 16 kHz): one filter for all rows. einsum, not
        # ``@``: numpy's BLAS would start its own threads and spin them on a busy machine
        y = (
            np.einsum("nk,k->n", x, self.bank_rev[0])
            if self.up == 1
            else np.einsum("nk,nk->n", x, self.bank_rev[phase])
        )
        self.n_out = n_stop
        # keep only the history the next output still needs
        next_q = (n_stop * self.down + self.delay) // self.up
        keep_from = max(next_q - self.taps + 1, 0)
        if keep_from > self.buf_start:
            self.buf = self.buf[keep_from - self.buf_start :]
            self.buf_start = keep_from
        return np.asarray(y)

    def process(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Feed mono samples; returns every output sample whose inputs have all arrived."""
        if self.identity:
            return x
        self.buf = np.concatenate([self.buf, x])
        self.n_in += len(x)
        # output n needs input index q = (n·down + delay) // up < n_in
        n_stop = max((self.n_in * self.up - self.delay - 1) // self.down + 1, self.n_out)
        return self._emit(n_stop)

    def flush(self) -> npt.NDArray[np.float64]:
        """End of stream: the remaining outputs (``ceil(n_in · up / down)`` in all), zero-padded."""
        if self.identity:
            return np.zeros(0)
        total = -(-self.n_in * self.up // self.down)
        return self._emit(max(total, self.n_out))


def to_mono_16k(samples: np.ndarray, sample_rate: int, channels: int = 1) -> FloatArray:
    """Whole signal: any rate / layout / dtype → 16 kHz mono float32 (same filter as the streaming path)."""
    mono = to_mono(_packed(samples, channels), channels)
    rs = PolyphaseResampler(sample_rate)
    out = np.concatenate([rs.process(mono), rs.flush()])
    return np.clip(out, -1.0, 1.0).astype(np.float32)


class AudioNormalizer:
    """Streaming ``process(samples, sample_rate, channels) → 16 kHz mono float32``.

    The output of a stream equals :func:`to_mono_16k` of the whole stream (per constant-rate piece);
    a new ``sample_rate`` flushes the previous resampler first. ``samples_out`` counts output samples.
    """

    def __init__(self) -> None:
        self._rs: PolyphaseResampler | None = None
        self.samples_out = 0

    @property
    def sample_rate(self) -> int | None:
        return self._rs.in_rate if self._rs else None

    def process(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> FloatArray:
        mono = to_mono(_packed(samples, channels), channels)
        parts: list[npt.NDArray[np.float64]] = []
        if self._rs is None or self._rs.in_rate != sample_rate:
            if self._rs is not None:
                parts.append(self._rs.flush())
            self._rs = PolyphaseResampler(sample_rate)
        parts.append(self._rs.process(mono))
        return self._finish(parts)

    def flush(self) -> FloatArray:
        """End of stream: the tail the look-ahead held back."""
        parts = [self._rs.flush()] if self._rs is not None else []
        self._rs = None
        return self._finish(parts)

    def _finish(self, parts: list[npt.NDArray[np.float64]]) -> FloatArray:
        out = np.clip(np.concatenate(parts) if parts else np.zeros(0), -1.0, 1.0).astype(np.float32)
        self.samples_out += len(out)
        return out
