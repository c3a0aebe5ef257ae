"""The server's view of the core: a loaded bundle that makes per-session analysis states and assesses them.

``CoreEngine`` wraps ``mllmdr_core.bundle.load_bundle`` + ``mllmdr_core.assess.Assessor``. All its methods
are synchronous and CPU-bound: the server calls them from worker threads, never on the event loop.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment
from mllmdr_core.frames import FloatArray, TranscriptLine


class AnalysisState(Protocol):
    """The part of ``mllmdr_core.session_state.SessionState`` the server uses."""

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, channels: int = 1, t_s: float | None = None
    ) -> None: ...

    def push_video(self, rgb: np.ndarray, t_s: float) -> None: ...

    def add_transcript(self, line: TranscriptLine) -> None: ...

    @property
    def transcript(self) -> list[TranscriptLine]: ...

    def indicators(self, window_s: float = 30.0) -> dict[str, float]: ...

    def features(
        self, start_s: float | None = None, end_s: float | None = None
    ) -> tuple[FloatArray, FloatArray]: ...

    @property
    def media_time_s(self) -> float: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BundleInfo:
    bundle_id: str
    training_data: str
    non_clinical: bool
    labels: list[str] = field(default_factory=list)
    path: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What an assessment needs, copied out of an AnalysisState (under the session's lock)."""

    audio: FloatArray  # (Ta, D_audio)
    visual: FloatArray  # (Tv, D_visual)
    transcript: list[TranscriptLine]
    indicators: dict[str, float]
    window: tuple[float, float]

    @classmethod
    def take(cls, state: AnalysisState, indicator_window_s: float) -> Snapshot:
        audio, visual = state.features()
        return cls(
            audio=np.array(audio, dtype=np.float32, copy=True),
            visual=np.array(visual, dtype=np.float32, copy=True),
            transcript=list(state.transcript),
            indicators=finite(state.indicators(indicator_window_s)),
            window=(0.0, float(state.media_time_s)),
        )


class Engine(Protocol):
    info: BundleInfo

    def new_state(self, session_id: str) -> AnalysisState: ...

    def assess(
        self, snap: Snapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment: ...

    @property
    def transcript_source(self) -> str: ...


def finite(values: dict[str, float]) -> dict[str, float]:
    """Drop NaN/inf (JSON has no such numbers; the panel shows a gap)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


class CoreEngine:
    """A loaded model bundle + Assessor; one per server process, shared by all sessions."""

    def __init__(
        self,
        bundle_path: str | Path,
        *,
        transcript_source: str = "captions",
        whisper_model: str | None = None,
        backend: Any = None,
    ) -> None:
        """``backend``: an ``LLMBackend`` (e.g. the vLLM client); default the embedded transformers one."""
        from mllmdr_core.assess import Assessor
        from mllmdr_core.bundle import load_bundle

        self._bundle: Any = load_bundle(Path(bundle_path))
        self._assessor: Any = Assessor(self._bundle, backend)
        self.config: Any = self._bundle.config
        non_clinical = bool(self._bundle.non_clinical)
        self.info = BundleInfo(
            bundle_id=str(self._bundle.bundle_id),
            training_data=str(self._bundle.training_data),
            non_clinical=non_clinical,
            labels=[SYNTHETIC_LABEL] if non_clinical else [],
            path=str(bundle_path),
        )
        self._source = transcript_source
        self._whisper_model = whisper_model
        self._assess_lock = threading.Lock()  # one generation at a time: the model is shared

    @property
    def transcript_source(self) -> str:
        return self._source

    def _transcriber(self) -> object | None:
        if self._source == "captions":
            return None
        from mllmdr_core.features.transcribe import make_transcriber

        if self._source == "whisper":
            return make_transcriber(self._source, model_path=self._whisper_model)
        return make_transcriber(self._source)

    def new_state(self, session_id: str) -> AnalysisState:
        state: AnalysisState = self._assessor.new_session_state(session_id, transcriber=self._transcriber())
        return state

    def assess(self, snap: Snapshot, *, session_id: str, kind: Literal["checkpoint", "final"]) -> Assessment:
        with self._assess_lock:
            result: Assessment = self._assessor.assess(
                session_id=session_id,
                kind=kind,
                audio=snap.audio,
                visual=snap.visual,
                transcript=snap.transcript,
                indicators=snap.indicators,
                window=snap.window,
            )
        return result
