"""The server's view of the core: a loaded bundle that makes per-session analysis states and assesses them.

``CoreEngine`` wraps ``mllmdr_core.bundle.load_bundle`` + ``mllmdr_core.assess.Assessor``. All its methods
are synchronous and CPU-bound: the server calls them from worker threads, never on the event loop.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment
from mllmdr_core.errors import ConfigError
from mllmdr_core.features.eye_image import EyeImage
from mllmdr_core.frames import FloatArray, TranscriptLine
from mllmdr_core.snapshot import SessionSnapshot
from mllmdr_core.speech_track import SpeakerTranscriber, SpeechTrack
from stream_server.asr import DEFAULT_MAX_BACKLOG_S, AsrProcess, BackgroundTranscriber, ProcessTranscriber
from stream_server.model_worker import ModelWorker

TRANSCRIPT_SOURCES = ("auto", "captions", "pocketsphinx", "whisper")


class AnalysisState(Protocol):
    """The part of ``mllmdr_core.session_state.SessionState`` the server uses."""

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, channels: int = 1, t_s: float | None = None
    ) -> None: ...

    def push_video(self, rgb: np.ndarray, t_s: float, eye: EyeImage | None = None) -> None: ...

    def push_eye_frame(self, image: EyeImage, t_s: float) -> None: ...

    def add_transcript(self, line: TranscriptLine) -> None: ...

    @property
    def transcript(self) -> list[TranscriptLine]: ...

    def indicators(self, window_s: float = 30.0) -> dict[str, float]: ...

    def unavailable(self, window_s: float = 30.0) -> dict[str, str]: ...

    def features(
        self, start_s: float | None = None, end_s: float | None = None
    ) -> tuple[FloatArray, FloatArray]: ...

    @property
    def media_time_s(self) -> float: ...

    def snapshot(self, indicator_window_s: float = 30.0) -> SessionSnapshot: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BundleInfo:
    bundle_id: str
    training_data: str
    non_clinical: bool
    labels: list[str] = field(default_factory=list)
    path: str = ""


class Engine(Protocol):
    info: BundleInfo

    def new_state(self, session_id: str) -> AnalysisState: ...

    def assess(
        self, snapshot: SessionSnapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment: ...

    @property
    def transcript_source(self) -> str: ...


def interviewer_key(session_id: str) -> str:
    """The key of a session's interviewer track in :meth:`CoreEngine.background_asr` / ``stop_asr``."""
    return f"{session_id}#interviewer"


class GatedTranscriber:
    """A session's ASR, switched off for good by :meth:`stop` (source ``auto``: the platform's captions
    for the patient arrived). Called from the session's worker thread; ``stop`` from the event loop."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = str(getattr(inner, "name", "asr"))
        self.low_accuracy = bool(getattr(inner, "low_accuracy", False))
        self._on = threading.Event()
        self._on.set()

    @property
    def active(self) -> bool:
        return self._on.is_set()

    def stop(self) -> None:
        self._on.clear()

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        if not self._on.is_set():
            return []
        lines: list[TranscriptLine] = self.inner.transcribe(samples, start_s)
        return lines


class CoreEngine:
    """A loaded model bundle + Assessor; one per server process, shared by all sessions."""

    def __init__(
        self,
        bundle_path: str | Path,
        *,
        transcript_source: str = "captions",
        whisper_model: str | None = None,
        backend: Any = None,
        asr_threads: int = 1,
        asr_max_backlog_s: float = DEFAULT_MAX_BACKLOG_S,
        model_worker: ModelWorker | None = None,
        eye_pass: bool = True,
    ) -> None:
        """``backend``: an ``LLMBackend``, or ``VLLMSettings`` (a vLLM client built for the bundle);
        default the embedded transformers one.

        ``transcript_source``: ``captions`` (no ASR), ``pocketsphinx``, ``whisper`` (``whisper_model``), or
        ``auto`` (the server's default): ASR on the patient's speech — Whisper when ``whisper_model`` is
        set, else pocketsphinx — until the platform sends a patient caption (:meth:`stop_asr`).

        Speech-to-text runs off the media path, in ``asr_threads`` recogniser processes shared by all
        sessions (:mod:`stream_server.asr`); a session keeps at most ``asr_max_backlog_s`` seconds of
        speech waiting for it.

        ``model_worker``: assessments run in that process (:mod:`stream_server.model_worker`, the embedded
        backend for this bundle) instead of this process's threads; closed with the engine.

        ``eye_pass`` False turns the bundle's full-frame-rate eye-openness pass off (``visual.eye_pass``:
        the blink indicator then reads the analysed frames only; the model's features are unchanged)."""
        if model_worker is not None and backend is not None:
            raise ConfigError("the model worker process runs the embedded backend only; not with a backend")
        if transcript_source not in TRANSCRIPT_SOURCES:
            raise ConfigError(
                f"unknown transcript source {transcript_source!r}; "
                f"expected one of {', '.join(TRANSCRIPT_SOURCES)}"
            )
        if transcript_source == "whisper" and not whisper_model:
            raise ConfigError("transcript source 'whisper' needs whisper_model (a local path or HF id)")
        from mllmdr_core.assess import Assessor
        from mllmdr_core.backends.vllm_backend import VLLMSettings
        from mllmdr_core.bundle import load_bundle

        # with vLLM's plugin (VLLMSettings.native) the LLM runs there: no LLM weights in this process
        llm_weights = not isinstance(backend, VLLMSettings) or backend.llm_weights
        self._bundle: Any = load_bundle(Path(bundle_path), llm_weights=llm_weights)
        if not eye_pass:  # indicators only: every session state and the ingest read this config
            self._bundle.config.visual.eye_pass = False
        if isinstance(backend, VLLMSettings):  # built for this bundle: its max_new_tokens, placeholder ids
            if backend.native:
                from mllmdr_core.backends.vllm_native import native_backend

                backend = native_backend(backend, self._bundle)
            else:
                backend = backend.for_bundle(self._bundle)
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
        self._gates: weakref.WeakValueDictionary[str, GatedTranscriber] = weakref.WeakValueDictionary()
        self._asr: weakref.WeakValueDictionary[str, BackgroundTranscriber] = weakref.WeakValueDictionary()
        self._asr_threads = asr_threads
        self._asr_max_backlog_s = asr_max_backlog_s
        self._asr_executor: ThreadPoolExecutor | None = None
        self._asr_process: AsrProcess | None = None
        self._model_worker = model_worker
        if model_worker is not None:
            model_worker.warm()  # loads the bundle there while this process warms the rest
        self._transcriber()  # starts the speech-to-text process now, so the first segment does not wait
        self._warm_face_tracker()
        if model_worker is not None:  # ready = the worker has loaded the bundle (its load not beside ingest)
            model_worker.pid()

    @property
    def transcript_source(self) -> str:
        """The configured source; for ``auto`` with the ASR it runs, e.g. ``auto:pocketsphinx``."""
        if self._source == "auto":
            return "auto:whisper" if self._whisper_model else "auto:pocketsphinx"
        return self._source

    def _warm_face_tracker(self) -> None:
        """Import mediapipe now: the first import takes ~2 s with the GIL held, which would stall every
        live session when the first video frame arrives (later trackers take ~0.03 s)."""
        from mllmdr_core.features.face import face_tracker_specs, make_face_tracker

        if self.config.visual.spec in face_tracker_specs():  # other specs fail later, with their own error
            make_face_tracker(self.config.visual).close()

    def _transcriber(self, stream: str = "") -> Any:
        """The server's speech-to-text for one ``stream`` (a session's party: its own recogniser state)."""
        if self._source == "captions":
            return None
        asr = self._source
        if asr == "auto":
            asr = "whisper" if self._whisper_model else "pocketsphinx"
        model = self._whisper_model if asr == "whisper" else None
        if self._asr_process is None:
            self._asr_process = AsrProcess(self._asr_threads)
            self._asr_process.warm(asr, model)
        return ProcessTranscriber(asr, model, self._asr_process, stream)

    def close(self) -> None:
        """Idempotent: stop the speech-to-text threads and process, the model worker, and close the LLM
        backend (a vLLM backend's HTTP clients)."""
        self._assessor.backend.close()
        if self._asr_executor is not None:
            self._asr_executor.shutdown(wait=False, cancel_futures=True)
        if self._asr_process is not None:
            self._asr_process.close()
        if self._model_worker is not None:
            self._model_worker.close()

    def new_state(self, session_id: str) -> AnalysisState:
        transcriber = self._transcriber(session_id)
        if transcriber is not None and self._source == "auto":
            transcriber = GatedTranscriber(transcriber)
            self._gates[session_id] = transcriber  # held by the state; gone with it
        if transcriber is not None:
            if self._asr_executor is None:
                self._asr_executor = ThreadPoolExecutor(self._asr_threads, thread_name_prefix="mllmdr-asr")
            transcriber = BackgroundTranscriber(
                transcriber, self._asr_executor, max_backlog_s=self._asr_max_backlog_s
            )
            self._asr[session_id] = transcriber
        state: AnalysisState = self._assessor.new_session_state(session_id, transcriber=transcriber)
        return state

    def new_speech_track(self, session_id: str) -> SpeechTrack | None:
        """The interviewer's track for a session: VAD → this server's speech-to-text (off the media path,
        as the patient's; queue :func:`interviewer_key`), lines labelled clinician. None without ASR."""
        key = interviewer_key(session_id)
        transcriber = self._transcriber(key)
        if transcriber is None:
            return None
        if self._source == "auto":
            transcriber = GatedTranscriber(transcriber)
            self._gates[key] = transcriber
        if self._asr_executor is None:
            self._asr_executor = ThreadPoolExecutor(self._asr_threads, thread_name_prefix="mllmdr-asr")
        background = BackgroundTranscriber(
            SpeakerTranscriber(transcriber, "clinician"),
            self._asr_executor,
            max_backlog_s=self._asr_max_backlog_s,
        )
        self._asr[key] = background
        return SpeechTrack(self.config, background, speaker="clinician")

    def background_asr(self, session_id: str) -> BackgroundTranscriber | None:
        """The session's speech-to-text queue (None when the source is ``captions``)."""
        return self._asr.get(session_id)

    def stop_asr(self, session_id: str) -> bool:
        """Source ``auto``: stop this session's ASR (captions took over). True if it was running."""
        gate = self._gates.get(session_id)
        if gate is None or not gate.active:
            return False
        gate.stop()
        return True

    def assess(
        self, snapshot: SessionSnapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment:
        """The core's one assessment call, one at a time (the model is shared by all sessions); in the
        model worker process when the engine has one (its death: ``ModelWorkerError``, retried)."""
        with self._assess_lock:
            if self._model_worker is not None:
                return self._model_worker.assess(snapshot, session_id=session_id, kind=kind)
            result: Assessment = self._assessor.assess(snapshot, session_id=session_id, kind=kind)
        return result
