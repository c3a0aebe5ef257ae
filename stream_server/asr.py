"""Speech-to-text off the media path: a session's speech segments queue here and one shared ASR thread
transcribes them, so a slow recogniser delays the transcript, never the indicators.

``SessionState`` calls :meth:`BackgroundTranscriber.transcribe` inline (from the session's analysis
thread) for each closed speech segment; the call only queues the segment and returns no lines. The ASR
thread hands the lines to ``on_lines`` (the live session adds them to its state under its lock). The
queue is bounded in seconds of audio: when the recogniser falls that far behind, the oldest segments are
dropped and counted (the transcript then has gaps, and the session warns once).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllmdr_core.errors import MllmdrError
from mllmdr_core.frames import TranscriptLine

SAMPLE_RATE = 16_000
DEFAULT_MAX_BACKLOG_S = 120.0  # seconds of queued speech per session before the oldest is dropped


@dataclass
class AsrStats:
    """What the background ASR did for one session (read by the session for metrics and warnings)."""

    segments_done: int = 0
    segments_dropped: int = 0
    seconds_dropped: float = 0.0
    errors: int = 0
    busy_s: float = 0.0
    last_error: str = ""


class BackgroundTranscriber:
    """A ``Transcriber`` whose work runs on ``executor``; one segment at a time per session, in order."""

    def __init__(
        self,
        inner: Any,
        executor: Executor,
        *,
        max_backlog_s: float = DEFAULT_MAX_BACKLOG_S,
    ) -> None:
        self.inner = inner
        self.name = str(getattr(inner, "name", "asr"))
        self.low_accuracy = bool(getattr(inner, "low_accuracy", False))
        self.on_lines: Callable[[list[TranscriptLine]], None] | None = None
        self.on_drop: Callable[[int], None] | None = None  # called with the session's total drops
        self.on_error: Callable[[str], None] | None = None  # called with the error's message
        self.stats = AsrStats()
        self._executor = executor
        self._max_backlog_samples = int(max_backlog_s * SAMPLE_RATE)
        self._queue: deque[tuple[np.ndarray, float]] = deque()  # (samples (N,) float 16 kHz, start_s)
        self._queued_samples = 0
        self._lock = threading.Lock()
        self._running = False
        self._closed = False

    def transcribe(self, samples: np.ndarray, start_s: float) -> list[TranscriptLine]:
        """Queue one speech segment; its lines arrive later through ``on_lines``."""
        dropped = 0
        with self._lock:
            if self._closed:
                return []
            self._queue.append((np.array(samples, copy=True), float(start_s)))
            self._queued_samples += len(samples)
            while self._queued_samples > self._max_backlog_samples and len(self._queue) > 1:
                old, _ = self._queue.popleft()
                self._queued_samples -= len(old)
                self.stats.segments_dropped += 1
                self.stats.seconds_dropped += len(old) / SAMPLE_RATE
                dropped = self.stats.segments_dropped
            start = not self._running
            self._running = True
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        if start:
            try:
                self._executor.submit(self._drain)
            except RuntimeError:  # the server is shutting down: the executor takes no more work
                with self._lock:
                    self._running = False
        return []

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being transcribed."""
        with self._lock:
            return not self._running

    @property
    def backlog_s(self) -> float:
        with self._lock:
            return self._queued_samples / SAMPLE_RATE

    def close(self) -> None:
        """Idempotent: drop what is queued; a segment being transcribed finishes, its lines are discarded."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._queued_samples = 0

    def _drain(self) -> None:
        """ASR thread: transcribe queued segments in order until the queue is empty."""
        while True:
            with self._lock:
                if not self._queue or self._closed:
                    self._running = False
                    return
                samples, start_s = self._queue.popleft()
                self._queued_samples -= len(samples)
            t0 = time.perf_counter()
            try:
                lines: list[TranscriptLine] = self.inner.transcribe(samples, start_s)
            except Exception as exc:  # a recogniser failure must not stop the session's transcript for good
                lines = []
                self.stats.errors += 1
                self.stats.last_error = (
                    str(exc) if isinstance(exc, MllmdrError) else f"{type(exc).__name__}: {exc}"
                )
                if self.on_error is not None:
                    self.on_error(self.stats.last_error)
            self.stats.busy_s += time.perf_counter() - t0
            self.stats.segments_done += 1
            if lines and self.on_lines is not None and not self._closed:
                self.on_lines(lines)
