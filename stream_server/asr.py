"""Speech-to-text off the media path: a session's speech segments queue here and one shared ASR thread
transcribes them, so a slow recogniser delays the transcript, never the indicators. The recogniser itself
runs in a worker process (:class:`AsrProcess`): pocketsphinx holds the GIL while it decodes (measured: the
main thread stood still for 5.9 s during one 5.8 s utterance), which would stall the event loop and every
session's analysis thread.

``SessionState`` calls :meth:`BackgroundTranscriber.transcribe` inline (from the session's analysis
thread) for each closed speech segment; the call only queues the segment and returns no lines. The ASR
thread hands the lines to ``on_lines`` (the live session adds them to its state under its lock). The
queue is bounded in seconds of audio: when the recogniser falls that far behind, the oldest segments are
dropped and counted (the transcript then has gaps, and the session warns once).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllmdr_core.errors import MediaError, MllmdrError
from mllmdr_core.features.transcribe import SAMPLE_RATE  # the recognisers' input rate
from mllmdr_core.frames import TranscriptLine

DEFAULT_MAX_BACKLOG_S = 120.0  # seconds of queued speech per session before the oldest is dropped


@dataclass
class AsrStats:
    """What the background ASR did for one session (read by the session for metrics and warnings)."""

    segments_done: int = 0
    segments_dropped: int = 0
    seconds_dropped: float = 0.0
    errors: int = 0
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
            self.stats.segments_done += 1
            if lines and self.on_lines is not None and not self._closed:
                self.on_lines(lines)


# ---------------------------------------------------------------- the recogniser's process
_WORKER_TRANSCRIBERS: dict[tuple[str, str | None], Any] = {}  # in the worker process: loaded recognisers


def _transcribe_in_worker(
    source: str, model: str | None, samples: np.ndarray, start_s: float
) -> list[TranscriptLine]:
    """Worker process: transcribe with this process's (cached) recogniser for ``source``."""
    transcriber = _WORKER_TRANSCRIBERS.get((source, model))
    if transcriber is None:
        from mllmdr_core.features.transcribe import make_transcriber

        transcriber = make_transcriber(source, model)
        _WORKER_TRANSCRIBERS[(source, model)] = transcriber
    lines: list[TranscriptLine] = transcriber.transcribe(samples, start_s)
    return lines


def _exit_with_parent(parent_pid: int) -> None:
    """Worker process initializer: exit as soon as the server process is gone (also after its kill -9),
    so no recogniser outlives the server that spawned it."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="mllmdr-asr-parent-watch", daemon=True).start()


def _worker_pid() -> int:
    return os.getpid()


class AsrProcess:
    """The recogniser process shared by a server's sessions: spawned on first use, respawned if it dies."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise MediaError("speech-to-text is shut down")
            if self._pool is None:
                # spawn: a fresh interpreter (forking a process that runs aiortc and torch threads is unsafe)
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),)
                )
            return self._pool

    def transcribe(
        self, source: str, model: str | None, samples: np.ndarray, start_s: float
    ) -> list[TranscriptLine]:
        """Blocks the calling (ASR) thread, not the GIL, until the worker answers."""
        pool = self._get()
        try:
            return pool.submit(_transcribe_in_worker, source, model, samples, start_s).result()
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise MediaError(
                f"the speech-to-text process died ({exc}); it restarts with the next segment"
            ) from exc

    def warm(self, source: str, model: str | None) -> None:
        """Start the process and load the recogniser now, in the background (the first segment then
        does not wait for them)."""
        silence = np.zeros(SAMPLE_RATE // 5, dtype=np.float32)  # (3200,) 0.2 s
        self._get().submit(_transcribe_in_worker, source, model, silence, 0.0)

    def pid(self) -> int:
        """The worker's process id (starts it if needed)."""
        return int(self._get().submit(_worker_pid).result())

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Idempotent: stop the worker process (a segment being decoded is finished first)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class ProcessTranscriber:
    """A ``Transcriber`` for ``source`` (``pocketsphinx`` / ``whisper``) run by an :class:`AsrProcess`."""

    def __init__(self, source: str, model: str | None, process: AsrProcess) -> None:
        from mllmdr_core.features.transcribe import make_transcriber

        local = make_transcriber(source, model)  # for its name and label only; it loads nothing until used
        self.name = str(local.name)
        self.low_accuracy = bool(local.low_accuracy)
        self.source = source
        self.model = model
        self._process = process

    def transcribe(self, samples: np.ndarray, start_s: float) -> list[TranscriptLine]:
        return self._process.transcribe(self.source, self.model, samples, start_s)
