"""A second party's audio (the interviewer): VAD → speech-to-text only, lines labelled with the speaker.

Two-party capture (issue 17): the platform holds both sides of the call, so it can send the
interviewer's audio next to the patient's. That audio only feeds the transcript — no HuBERT features,
no prosody indicators, no face analysis — and its lines carry ``speaker="clinician"``, so the interview
pairing (``features/interview.py``) sees the questions next to the patient's answers. The live server
(``stream_server/live/media.py``) and ``client_sdk.replay`` both push the interviewer's audio here: one
code path, as ``SessionState`` is for the patient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import MllmdrError
from mllmdr_core.features.audio import AudioNormalizer
from mllmdr_core.features.vad import VoiceActivityDetector
from mllmdr_core.frames import AudioChunk, FloatArray, Speaker, SpeechSegment, TranscriptLine

SR = 16000
MAX_SEGMENT_AUDIO_S = 60.0  # as SessionState: a longer segment is transcribed from its last minute


class SpeakerTranscriber:
    """A transcriber whose lines are relabelled ``speaker`` (the recognisers label every line patient)."""

    def __init__(self, inner: Any, speaker: Speaker) -> None:
        self.inner = inner
        self.speaker: Speaker = speaker
        self.name = str(getattr(inner, "name", "asr"))
        self.low_accuracy = bool(getattr(inner, "low_accuracy", False))

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        lines: list[TranscriptLine] = self.inner.transcribe(samples, start_s)
        return [dataclasses.replace(line, speaker=self.speaker) for line in lines]


class SpeechTrack:
    """One party's audio stream → closed speech segments → ``transcriber`` → ``on_lines`` (relabelled).

    ``push_audio`` takes any rate/layout/dtype (as ``SessionState.push_audio``); ``t_s`` of the first
    chunk sets the track's start, later chunks continue it. ``transcriber`` may queue the work and return
    no lines (the server's background ASR: its lines arrive through its own callback, already relabelled
    when it wraps a :class:`SpeakerTranscriber`). Not thread-safe: one caller at a time.
    """

    def __init__(
        self,
        config: MllmdrConfig,
        transcriber: Any,
        *,
        speaker: Speaker = "clinician",
        on_lines: Callable[[list[TranscriptLine]], None] | None = None,
    ) -> None:
        self.speaker: Speaker = speaker
        self._transcriber = transcriber
        self.on_lines = on_lines
        self._normalizer = AudioNormalizer()
        self._vad = VoiceActivityDetector(config.vad)
        self._t0: float | None = None
        self._recent: list[FloatArray] = []
        self._recent_start = 0  # 16 kHz sample index of the first remembered sample
        self._n16 = 0
        self._flushed = False
        self.stats: dict[str, float] = {
            "audio_seconds_in": 0.0, "speech_segments": 0, "transcriber_errors": 0
        }

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, channels: int = 1, t_s: float | None = None
    ) -> None:
        if self._flushed:
            return
        if self._t0 is None:
            self._t0 = float(t_s) if t_s is not None else 0.0
        self.stats["audio_seconds_in"] += np.asarray(samples).size / max(channels, 1) / sample_rate
        self._feed(self._normalizer.process(samples, sample_rate, channels))

    def flush(self) -> None:
        """End of the stream: the open speech segment closes and is transcribed (idempotent)."""
        if self._flushed or self._t0 is None:
            self._flushed = True
            return
        self._feed(self._normalizer.flush(), final=True)
        self._flushed = True

    def _feed(self, x: FloatArray, final: bool = False) -> None:
        t0 = self._t0 or 0.0
        start_s = t0 + self._n16 / SR
        if len(x):
            self._recent.append(x)
        self._n16 += len(x)
        segs = self._vad.process(AudioChunk(x, start_s)) if len(x) else []
        if final:
            segs += self._vad.flush()
        for seg in segs:
            self._transcribe(seg)
        self._forget()

    def _forget(self) -> None:
        """Keep only the audio the open segment (at most ``MAX_SEGMENT_AUDIO_S``) may still need."""
        keep = int(MAX_SEGMENT_AUDIO_S * SR)
        total = sum(len(c) for c in self._recent)
        while self._recent and total - len(self._recent[0]) >= keep:
            old = self._recent.pop(0)
            total -= len(old)
            self._recent_start += len(old)

    def _transcribe(self, seg: SpeechSegment) -> None:
        self.stats["speech_segments"] += 1
        t0 = self._t0 or 0.0
        a = max(round((seg.start_s - t0) * SR), self._recent_start)
        b = round((seg.end_s - t0) * SR)
        recent = np.concatenate(self._recent) if self._recent else np.zeros(0, dtype=np.float32)
        audio = recent[a - self._recent_start : b - self._recent_start]
        if len(audio) == 0 or self._transcriber is None:
            return
        try:
            lines: list[TranscriptLine] = self._transcriber.transcribe(audio, t0 + a / SR)
        except MllmdrError:
            self.stats["transcriber_errors"] += 1
            return
        lines = [dataclasses.replace(ln, speaker=self.speaker) for ln in lines]
        if lines and self.on_lines is not None:
            self.on_lines(lines)
