"""Speech-to-text beside the replay: the recogniser runs in its own process, so it overlaps the rest.

``SessionState`` hands each closed speech segment to its transcriber and waits for the lines. Offline
that wait is wasted: the recogniser (pocketsphinx ~0.25 s per second of speech on this CPU) would add
its whole time to the replay. :class:`ProcessTranscriber` sends the segment to a worker process and
returns at once; :meth:`ProcessTranscriber.collect` waits for the remaining lines at the end. One worker
per transcriber, segments in order, one recogniser instance: the same lines as calling it inline
(pocketsphinx adapts its cepstral mean across calls, in the same order here).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from mllmdr_core.errors import ConfigError, MediaError, MllmdrError
from mllmdr_core.frames import FloatArray, TranscriptLine


def make_from_spec(source: str) -> Any:
    """``pocketsphinx``, ``whisper:PATH`` or a local Whisper checkpoint PATH → a Transcriber."""
    from mllmdr_core.features.transcribe import make_transcriber

    if source.startswith("whisper:"):
        return make_transcriber("whisper", model_path=source.split(":", 1)[1])
    if Path(source).exists():
        return make_transcriber("whisper", model_path=source)
    return make_transcriber(source)


def _serve(conn: Connection, requests: Any, source: str) -> None:
    """Worker: build the recogniser, then ``(samples, start_s)`` from ``requests`` → ``("ok", lines,
    busy_s)`` on ``conn``."""
    try:
        inner = make_from_spec(source)
    except BaseException as exc:  # reported to the parent on its first read
        conn.send(("fatal", f"{type(exc).__name__}: {exc}", 0.0))
        return
    conn.send(("ready", (str(inner.name), bool(inner.low_accuracy)), 0.0))
    while True:
        msg = requests.get()
        if msg is None:
            return
        if msg == "reset":  # a new recording: the recogniser's stream state starts over
            reset = getattr(inner, "reset", None)
            if callable(reset):
                reset()
            continue
        samples, start_s = msg
        t = time.perf_counter()
        try:
            lines = inner.transcribe(samples, start_s)
            conn.send(("ok", lines, time.perf_counter() - t))
        except MllmdrError as exc:
            conn.send(("error", str(exc), time.perf_counter() - t))


@dataclass
class Collected:
    lines: list[TranscriptLine]
    errors: int
    busy_s: float  # the recogniser's own time in the worker
    wait_s: float  # how long collect() waited for it


class ProcessTranscriber:
    """A ``Transcriber`` whose recogniser runs in a worker process; results come with :meth:`collect`."""

    def __init__(self, source: str) -> None:
        self.source = source
        ctx = multiprocessing.get_context("spawn")  # torch (in the parent) and fork do not mix
        self._conn, child = ctx.Pipe(duplex=False)
        # segments go through a Queue: its feeder thread sends, so transcribe() never waits for the
        # worker (a Pipe's send blocks once a segment is bigger than the OS pipe buffer)
        self._requests: Any = ctx.Queue()
        self._proc = ctx.Process(
            target=_serve, args=(child, self._requests, source), name="replay-asr", daemon=True
        )
        self._proc.start()
        child.close()
        self._ready: tuple[str, bool] | None = None
        self._pending = 0  # segments sent whose result is not read yet
        self._got: list[tuple[str, Any, float]] = []  # results read early (see transcribe)
        self.busy_s = 0.0

    def _recv(self) -> tuple[str, Any, float]:
        try:
            kind, payload, busy = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise MediaError(f"speech-to-text worker ({self.source}) stopped: {exc}") from exc
        if kind == "fatal":
            raise ConfigError(f"speech-to-text {self.source!r} could not start: {payload}")
        return kind, payload, float(busy)

    def _read_one(self) -> None:
        """One message from the worker: its start-up report, or the result of the oldest segment."""
        kind, payload, busy = self._recv()
        if kind == "ready":
            self._ready = (str(payload[0]), bool(payload[1]))
        else:
            self._got.append((kind, payload, busy))
            self._pending -= 1

    def _wait_ready(self) -> tuple[str, bool]:
        while self._ready is None:
            self._read_one()
        return self._ready

    @property
    def name(self) -> str:
        return self._wait_ready()[0]

    @property
    def low_accuracy(self) -> bool:
        return self._wait_ready()[1]

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        """Queue the segment for the worker and return at once; its lines come with :meth:`collect`.
        Results already back are read first (the result pipe never fills up)."""
        while self._conn.poll():
            self._read_one()
        if not self._proc.is_alive():
            raise MediaError(f"speech-to-text worker ({self.source}) stopped")
        self._requests.put((np.asarray(samples, dtype=np.float32), float(start_s)))
        self._pending += 1
        return []

    def reset(self) -> None:
        """A new recording: the worker's recogniser starts its stream over (queued after earlier segments)."""
        self._requests.put("reset")

    def collect(self) -> Collected:
        """Every queued segment's lines (waits for the worker), in the order the segments came."""
        t = time.perf_counter()
        self._wait_ready()
        lines: list[TranscriptLine] = []
        errors = 0
        busy = 0.0
        while self._pending:
            self._read_one()
        for kind, payload, spent in self._got:
            busy += spent
            if kind == "ok":
                lines.extend(payload)
            else:
                errors += 1
        self._got = []
        self.busy_s += busy
        return Collected(lines, errors, busy, time.perf_counter() - t)

    def discard(self) -> None:
        """Drop the lines of segments queued by an earlier replay that did not collect them."""
        if self._pending or self._got:
            self.collect()

    def close(self) -> None:
        """Idempotent: stops the worker."""
        if self._proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._requests.put(None)
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=5)
        self._conn.close()
        self._requests.cancel_join_thread()  # nothing queued is wanted any more
        self._requests.close()
