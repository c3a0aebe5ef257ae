"""Voice activity detection with webrtcvad on 10/20/30 ms frames of 16 kHz mono audio.

Per frame webrtcvad says voiced / not voiced (``speech_mask``). Segments are built with hangover
smoothing: an open segment survives silences shorter than ``max(hangover_ms, min_silence_ms)``
(so a word gap does not split it) and closes once silence has lasted that long; its end is the end of
its last voiced frame, so the hangover delays the decision without padding the segment (speech ratios
stay unbiased). Segments shorter than ``min_speech_ms`` are dropped. Frames lie on a fixed grid from
the first sample, so decisions do not depend on how the input was chunked.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import webrtcvad

from mllmdr_core.config import VADConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.frames import AudioChunk, SpeechSegment

SAMPLE_RATE = 16000


class VoiceActivityDetector:
    """``process(chunk) → closed SpeechSegments``; ``flush()`` closes the open one at end of stream."""

    def __init__(self, cfg: VADConfig) -> None:
        if cfg.frame_ms not in (10, 20, 30):
            raise ConfigError(f"vad.frame_ms must be 10, 20 or 30, got {cfg.frame_ms}")
        if not 0 <= cfg.aggressiveness <= 3:
            raise ConfigError(f"vad.aggressiveness must be 0..3, got {cfg.aggressiveness}")
        self.cfg = cfg
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self.frame_len = SAMPLE_RATE * cfg.frame_ms // 1000
        self.frame_s = cfg.frame_ms / 1000.0
        self._close_frames = -(-max(cfg.hangover_ms, cfg.min_silence_ms) // cfg.frame_ms)
        self._pending = np.zeros(0, dtype=np.int16)
        self._t0: float | None = None  # time of frame 0
        self._mask = bytearray()  # one byte per frame: 1 voiced
        self._seg_start: int | None = None  # frame index of the open segment's first voiced frame
        self._last_voiced = -1
        self._closed = False

    @property
    def speech_mask(self) -> npt.NDArray[np.bool_]:
        """Raw webrtcvad decision per frame since the start, ``(n_frames,)`` bool."""
        return np.frombuffer(bytes(self._mask), dtype=np.uint8).astype(bool)

    @property
    def decided_until_s(self) -> float:
        """End time of the last decided frame."""
        return (self._t0 or 0.0) + len(self._mask) * self.frame_s

    @property
    def open_segment(self) -> SpeechSegment | None:
        """The segment in progress (end = last voiced frame so far), if any."""
        if self._seg_start is None:
            return None
        return SpeechSegment(self._time(self._seg_start), self._time(self._last_voiced + 1))

    def voiced_between(self, start_s: float, end_s: float) -> bool:
        """Whether any decided frame overlapping ``[start_s, end_s)`` was voiced."""
        t0 = self._t0 or 0.0
        a = max(int(np.floor((start_s - t0) / self.frame_s + 1e-9)), 0)
        b = min(int(np.ceil((end_s - t0) / self.frame_s - 1e-9)), len(self._mask))
        return a < b and any(self._mask[a:b])

    def _time(self, frame: int) -> float:
        return (self._t0 or 0.0) + frame * self.frame_s

    def process(self, chunk: AudioChunk) -> list[SpeechSegment]:
        """Feed 16 kHz mono float samples; returns the segments that closed."""
        if self._closed:
            raise MediaError("VoiceActivityDetector is flushed; create a new one")
        if chunk.sample_rate != SAMPLE_RATE:
            raise MediaError(f"VAD needs {SAMPLE_RATE} Hz audio, got {chunk.sample_rate}")
        if self._t0 is None:
            self._t0 = chunk.start_s
        pcm = (np.clip(chunk.samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        data = np.concatenate([self._pending, pcm])
        n = len(data) // self.frame_len
        self._pending = data[n * self.frame_len :]
        out: list[SpeechSegment] = []
        for i in range(n):
            frame = data[i * self.frame_len : (i + 1) * self.frame_len].tobytes()
            seg = self._step(self._vad.is_speech(frame, SAMPLE_RATE))
            if seg is not None:
                out.append(seg)
        return out

    def _step(self, voiced: bool) -> SpeechSegment | None:
        idx = len(self._mask)
        self._mask.append(1 if voiced else 0)
        if voiced:
            if self._seg_start is None:
                self._seg_start = idx
            self._last_voiced = idx
            return None
        if self._seg_start is not None and idx - self._last_voiced >= self._close_frames:
            return self._close()
        return None

    def _close(self) -> SpeechSegment | None:
        assert self._seg_start is not None
        seg = SpeechSegment(self._time(self._seg_start), self._time(self._last_voiced + 1))
        self._seg_start = None
        return seg if seg.duration_s * 1000.0 >= self.cfg.min_speech_ms - 1e-6 else None

    def flush(self) -> list[SpeechSegment]:
        """End of stream: close the open segment (the partial last frame is dropped)."""
        if self._closed:
            return []
        self._closed = True
        seg = self._close() if self._seg_start is not None else None
        return [seg] if seg is not None else []
