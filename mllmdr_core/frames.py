"""Typed frames that flow between the one-job stages of the signal chain.

``AudioChunk → SpeechSegment → (pooled audio features)``, ``RGB frame → FaceObservation →
(pooled visual features)``, ``TranscriptLine → QAPair``. Times are session-relative seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Speaker = Literal["patient", "clinician", "unknown"]


@dataclass(frozen=True)
class AudioChunk:
    """16 kHz mono float32 samples in [-1, 1] starting at ``start_s``."""

    samples: FloatArray  # (N,)
    start_s: float
    sample_rate: int = 16000

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech found by the VAD, ``[start_s, end_s)``."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class FaceObservation:
    """One analysed video frame: the fixed-length visual vector (see ``features/face.py`` for the layout)."""

    t_s: float
    vector: FloatArray  # (D_visual,)
    present: bool
    landmarks: FloatArray | None = None  # (478, 3) normalised, when a face was found
    indicator_vector: FloatArray | None = None  # "mediapipe-face-v1" layout for the panel, other specs


@dataclass(frozen=True)
class TranscriptLine:
    """One line of the interview transcript, from captions or speech-to-text."""

    start_s: float
    end_s: float
    speaker: Speaker
    text: str
    source: str = "captions"  # "captions" | "asr:pocketsphinx" | "asr:whisper" | "dataset" | "script"
    confidence: float = 1.0
    final: bool = True


@dataclass(frozen=True)
class QAPair:
    """An interviewer question with the participant's answer and the PHQ-8 items it informs."""

    question: TranscriptLine | None
    answers: tuple[TranscriptLine, ...]
    items: frozenset[str] = field(default_factory=frozenset)

    @property
    def answer_text(self) -> str:
        return " ".join(a.text for a in self.answers).strip()

    @property
    def start_s(self) -> float:
        first = self.question or (self.answers[0] if self.answers else None)
        return first.start_s if first else 0.0

    @property
    def end_s(self) -> float:
        last = self.answers[-1] if self.answers else self.question
        return last.end_s if last else 0.0
