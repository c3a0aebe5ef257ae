"""Streaming HuBERT encoder: fixed windows with left context → features independent of chunking.

The audio timeline is cut into fixed windows of ``window_s`` on an absolute sample grid. Window k is
encoded from ``left_context_s`` of audio before it (zeros before the stream's start), the window itself
and ``receptive_field − hop`` samples (5 ms for HuBERT) of look-ahead, so every forward pass sees exactly
the same samples whatever the chunking, and has the same shape. The hidden states of the window's own
frames (50 Hz) are mean-pooled to ``pool_hz``; with ``prosody`` the pooled vector is followed by
:data:`PROSODY_NAMES` and a speech flag. A speech gate (the VAD) marks pooled frames as speech; with
``speech_only`` a window without speech is not encoded and non-speech frames are zero vectors.
``bench/encoder_streaming.py`` measures windowed-vs-whole-utterance cosine and the real-time factor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from transformers import HubertConfig, HubertModel

from mllmdr_core.config import AudioEncoderConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.features.prosody import PROSODY_NAMES, prosody_frames
from mllmdr_core.frames import FloatArray

SpeechGate = Callable[[float, float], bool]  # (start_s, end_s) of a pooled frame → contains speech?
MAX_BATCH_WINDOWS = 8


def build_hubert(cfg: AudioEncoderConfig, seed: int = 0) -> HubertModel:
    """Pretrained HuBERT from ``cfg.model`` (local path or HF id), else random init from ``cfg.hubert``."""
    if cfg.model:
        try:
            model = HubertModel.from_pretrained(cfg.model)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load HuBERT weights from {cfg.model!r}: {exc}") from exc
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HubertModel(HubertConfig(**cfg.hubert))
    return model.eval()


def quantize_int8(model: HubertModel) -> torch.nn.Module:
    """Dynamic int8 quantisation of the Linear layers (CPU).

    ``torch.ao.quantization`` and its quantized-tensor constructors warn that they are deprecated in
    favour of torchao, which is not a dependency; those two warnings are silenced here, for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor, torch\.quantize_per_ch", UserWarning)
        q: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
    return q


def _receptive_field(conv_kernel: tuple[int, ...], conv_stride: tuple[int, ...]) -> tuple[int, int]:
    """(receptive field, hop) in samples of HuBERT's conv feature extractor (400, 320 for base)."""
    rf, jump = 1, 1
    for k, s in zip(conv_kernel, conv_stride, strict=True):
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


@dataclass(frozen=True)
class EncodedFrames:
    """Pooled frames from one push: frame ``index + i`` starts at ``(index + i) / pool_hz`` s."""

    index: int
    features: FloatArray  # (T, D)
    speech: npt.NDArray[np.bool_]  # (T,)
    prosody: FloatArray  # (T, 3) f0_semitones, energy_db, voiced (always computed, for indicators)


class StreamingHubertEncoder:
    """``push(samples16k) → (T_pooled, D)`` features; ``flush()`` encodes the zero-padded last window."""

    def __init__(self, cfg: AudioEncoderConfig, model: HubertModel | None = None) -> None:
        if cfg.sample_rate != 16000:
            raise ConfigError(f"audio.sample_rate must be 16000 for HuBERT, got {cfg.sample_rate}")
        self.cfg = cfg
        self.model = model if model is not None else build_hubert(cfg)
        self.model.eval()
        hc = self.model.config
        rf, hop = _receptive_field(tuple(hc.conv_kernel), tuple(hc.conv_stride))
        sr = cfg.sample_rate
        frames_per_pool = sr / hop / cfg.pool_hz
        self.pool_len = round(frames_per_pool) * hop  # samples per pooled frame
        self.window_len = round(cfg.window_s * sr)
        self.ctx_len = round(cfg.left_context_s * sr)
        if abs(frames_per_pool - round(frames_per_pool)) > 1e-9 or frames_per_pool < 1:
            raise ConfigError(f"audio.pool_hz={cfg.pool_hz} must divide the {sr / hop:g} Hz frame rate")
        if self.window_len % self.pool_len or self.window_len == 0:
            raise ConfigError(f"audio.window_s={cfg.window_s} must be a multiple of 1/pool_hz")
        if self.ctx_len % hop:
            raise ConfigError(f"audio.left_context_s={cfg.left_context_s} must be a multiple of {hop / sr} s")
        self.hop, self.lookahead = hop, rf - hop
        self.frames_per_pool = self.pool_len // hop
        self.hidden = int(hc.hidden_size)
        self.feature_dim = self.hidden + (len(PROSODY_NAMES) + 1 if cfg.prosody else 0)
        self._runner: torch.nn.Module = quantize_int8(self.model) if cfg.int8 else self.model
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self._n = 0  # samples pushed
        self._next = 0  # next window index
        self._flushed = False
        self.windows_encoded = 0
        self.windows_skipped = 0

    @property
    def pooled_per_window(self) -> int:
        return self.window_len // self.pool_len

    def push(self, samples16k: FloatArray, gate: SpeechGate | None = None) -> FloatArray:
        """16 kHz mono float32 → features of every window now complete, (T_pooled, D)."""
        return self.push_frames(samples16k, gate).features

    def flush(self, gate: SpeechGate | None = None) -> FloatArray:
        return self.flush_frames(gate).features

    def push_frames(self, samples16k: FloatArray, gate: SpeechGate | None = None) -> EncodedFrames:
        """Like :meth:`push`, with the prosody and speech flags kept apart."""
        if self._flushed:
            raise MediaError("StreamingHubertEncoder is flushed; create a new one")
        x = np.asarray(samples16k, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x])
        self._n += len(x)
        ready = 0
        while (self._next + ready + 1) * self.window_len + self.lookahead <= self._n:
            ready += 1
        return self._encode(ready, gate, n_pooled=ready * self.pooled_per_window)

    def flush_frames(self, gate: SpeechGate | None = None) -> EncodedFrames:
        """End of stream: the remaining pooled frames (a partial last one counts), zero-padded input."""
        if self._flushed:
            return self._encode(0, gate, 0)
        self._flushed = True
        done = self._next * self.window_len
        n_pooled = -(-(self._n - done) // self.pool_len)
        windows = -(-n_pooled // self.pooled_per_window)
        return self._encode(windows, gate, n_pooled)

    def peek_frames(self, gate: SpeechGate | None = None) -> EncodedFrames:
        """What :meth:`flush_frames` would return now, without ending the stream (for checkpoints)."""
        if self._flushed:
            return self._encode(0, gate, 0)
        saved = (self._buf, self._buf_start, self._next, self.windows_encoded, self.windows_skipped)
        try:
            return self.flush_frames(gate)
        finally:
            self._buf, self._buf_start, self._next, self.windows_encoded, self.windows_skipped = saved
            self._flushed = False

    def _window_input(self, k: int) -> FloatArray:
        """Samples [k·W − C, (k+1)·W + lookahead), zeros outside the stream. → (C + W + lookahead,)"""
        a = k * self.window_len - self.ctx_len
        b = (k + 1) * self.window_len + self.lookahead
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, self._buf_start), min(b, self._buf_start + len(self._buf))
        if hi > lo:
            out[lo - a : hi - a] = self._buf[lo - self._buf_start : hi - self._buf_start]
        return out

    def _encode(self, n_windows: int, gate: SpeechGate | None, n_pooled: int) -> EncodedFrames:
        first_pooled = self._next * self.pooled_per_window
        P = self.pooled_per_window
        feats = np.zeros((n_windows * P, self.feature_dim), dtype=np.float32)
        prosody = np.zeros((n_windows * P, len(PROSODY_NAMES)), dtype=np.float32)
        speech = np.ones(n_windows * P, dtype=bool)
        if gate is not None:
            for j in range(n_windows * P):
                t = (first_pooled + j) * self.pool_len / self.cfg.sample_rate
                speech[j] = gate(t, t + self.pool_len / self.cfg.sample_rate)
        inputs = [self._window_input(self._next + i) for i in range(n_windows)]
        todo = [i for i in range(n_windows) if speech[i * P : (i + 1) * P].any() or not self.cfg.speech_only]
        self.windows_skipped += n_windows - len(todo)
        for s in range(0, len(todo), MAX_BATCH_WINDOWS):
            batch = todo[s : s + MAX_BATCH_WINDOWS]
            hidden = self._forward(np.stack([inputs[i] for i in batch]))  # (B, W/pool, H)
            for b, i in enumerate(batch):
                feats[i * P : (i + 1) * P, : self.hidden] = hidden[b]
        for i in todo:
            sr = self.cfg.sample_rate
            prosody[i * P : (i + 1) * P] = prosody_frames(inputs[i], sr, self.ctx_len, self.pool_len, P)
        if self.cfg.prosody:
            feats[:, self.hidden : self.hidden + len(PROSODY_NAMES)] = prosody
            feats[:, -1] = speech
        if self.cfg.speech_only:
            feats[~speech] = 0.0
            prosody[~speech] = 0.0
        self.windows_encoded += len(todo)
        self._next += n_windows
        keep = max(self._next * self.window_len - self.ctx_len, 0)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :]
            self._buf_start = keep
        return EncodedFrames(first_pooled, feats[:n_pooled], speech[:n_pooled], prosody[:n_pooled])

    def _forward(self, x: FloatArray) -> FloatArray:
        """(B, C + W + lookahead) samples → window frames pooled, (B, W / pool_len, H)."""
        with torch.inference_mode():
            hs = self._runner(torch.from_numpy(x)).last_hidden_state  # (B, (C + W) / hop, H)
        f0 = self.ctx_len // self.hop
        win = hs[:, f0 : f0 + self.window_len // self.hop]  # (B, W / hop, H)
        pooled = win.reshape(x.shape[0], -1, self.frames_per_pool, self.hidden).mean(dim=2)  # (B, W/pool, H)
        return np.asarray(pooled.float().numpy(), dtype=np.float32)
