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

import contextlib
import multiprocessing
import os
import threading
import time
import zlib
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
        """Idempotent: drop what is queued; a segment being transcribed finishes, its lines are discarded;
        the recogniser state of the stream is released (``release`` of the wrapped transcriber)."""
        with self._lock:
            was_closed, self._closed = self._closed, True
            self._queue.clear()
            self._queued_samples = 0
        inner = self.inner
        while inner is not None and not was_closed:  # the stream's recogniser state is forgotten
            release = getattr(inner, "release", None)
            if callable(release):
                release()
                break
            inner = getattr(inner, "inner", None)

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
_WORKER_TRANSCRIBERS: dict[tuple[str, str | None, str], Any] = {}  # in the worker: one per stream
MAX_WORKER_STREAMS = 256  # recognisers kept per worker (pocketsphinx ~90 MB each); the oldest is dropped


def _transcribe_in_worker(
    source: str, model: str | None, stream: str, samples: np.ndarray, start_s: float
) -> list[TranscriptLine]:
    """Worker process: transcribe with ``stream``'s recogniser for ``source``. A recogniser that keeps
    per-stream state (pocketsphinx adapts to its speaker: it has ``reset``) is made per stream (~90 MB
    while the stream lives, released when its session's speech-to-text closes), so each session's party
    starts fresh, as in a replay; one without (Whisper) is shared by every stream."""
    key = (source, model, stream)
    transcriber = _WORKER_TRANSCRIBERS.get(key) or _WORKER_TRANSCRIBERS.get((source, model, ""))
    if transcriber is None:
        from mllmdr_core.features.transcribe import make_transcriber

        transcriber = make_transcriber(source, model)
        if not hasattr(transcriber, "reset"):
            key = (source, model, "")
        if len(_WORKER_TRANSCRIBERS) >= MAX_WORKER_STREAMS:
            _WORKER_TRANSCRIBERS.pop(next(iter(_WORKER_TRANSCRIBERS)))
        _WORKER_TRANSCRIBERS[key] = transcriber
    lines: list[TranscriptLine] = transcriber.transcribe(samples, start_s)
    return lines


def _release_in_worker(source: str, model: str | None, stream: str) -> None:
    """Worker process: forget ``stream``'s recogniser state (its session ended)."""
    _WORKER_TRANSCRIBERS.pop((source, model, stream), None)


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
    """The recogniser processes shared by a server's sessions: ``processes`` single-process pools, each
    spawned on first use and respawned if it dies. A stream (a session's party) always goes to the same
    one (by a stable hash of its key), so its recogniser state stays in one place and its segments are
    decoded in order."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self._pools: list[ProcessPoolExecutor | None] = [None] * self.processes
        self._lock = threading.Lock()
        self._closed = False

    def _index(self, stream: str) -> int:
        return zlib.crc32(stream.encode()) % self.processes

    def _get(self, index: int = 0) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise MediaError("speech-to-text is shut down")
            pool = self._pools[index]
            if pool is None:
                # spawn: a fresh interpreter (forking a process that runs aiortc and torch threads is unsafe)
                ctx = multiprocessing.get_context("spawn")
                pool = self._pools[index] = ProcessPoolExecutor(
                    1, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),)
                )
            return pool

    def transcribe(
        self, source: str, model: str | None, samples: np.ndarray, start_s: float, stream: str = ""
    ) -> list[TranscriptLine]:
        """Blocks the calling (ASR) thread, not the GIL, until the worker answers."""
        index = self._index(stream)
        pool = self._get(index)
        try:
            return pool.submit(_transcribe_in_worker, source, model, stream, samples, start_s).result()
        except BrokenProcessPool as exc:
            self._discard(index, pool)
            raise MediaError(
                f"the speech-to-text process died ({exc}); it restarts with the next segment"
            ) from exc

    def release(self, source: str, model: str | None, stream: str) -> None:
        """Forget ``stream``'s recogniser state in its worker (queued after its last segment)."""
        with self._lock:
            pool = None if self._closed else self._pools[self._index(stream)]
        if pool is not None:
            with contextlib.suppress(RuntimeError, BrokenProcessPool):
                pool.submit(_release_in_worker, source, model, stream)

    def warm(self, source: str, model: str | None) -> None:
        """Start the processes and load the recogniser now, in the background (the first segment then
        does not wait for them); the warm-up's own stream is forgotten at once."""
        silence = np.zeros(SAMPLE_RATE // 5, dtype=np.float32)  # (3200,) 0.2 s
        for index in range(self.processes):
            pool = self._get(index)
            pool.submit(_transcribe_in_worker, source, model, "warm-up", silence, 0.0)
            pool.submit(_release_in_worker, source, model, "warm-up")

    def pid(self) -> int:
        """The first worker's process id (starts it if needed)."""
        return int(self._get(0).submit(_worker_pid).result())

    def _discard(self, index: int, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pools[index] is pool:
                self._pools[index] = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Idempotent: stop the worker processes (a segment being decoded is finished first)."""
        with self._lock:
            self._closed = True
            pools, self._pools = self._pools, [None] * self.processes
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


class ProcessTranscriber:
    """A ``Transcriber`` for ``source`` (``pocketsphinx`` / ``whisper``) run by an :class:`AsrProcess`,
    for one ``stream`` (a session's party: its own recogniser state in the worker)."""

    def __init__(self, source: str, model: str | None, process: AsrProcess, stream: str = "") -> None:
        from mllmdr_core.features.transcribe import make_transcriber

        local = make_transcriber(source, model)  # for its name and label only; it loads nothing until used
        self.name = str(local.name)
        self.low_accuracy = bool(local.low_accuracy)
        self.source = source
        self.model = model
        self.stream = stream
        self._process = process

    def transcribe(self, samples: np.ndarray, start_s: float) -> list[TranscriptLine]:
        return self._process.transcribe(self.source, self.model, samples, start_s, self.stream)

    def release(self) -> None:
        """The stream ended: its recogniser state in the worker is forgotten."""
        self._process.release(self.source, self.model, self.stream)
