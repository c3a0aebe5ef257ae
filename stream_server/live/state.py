"""The session's ``SessionState`` behind one lock: one worker thread at a time touches it."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

from mllmdr_core.errors import MllmdrError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.snapshot import SessionSnapshot
from stream_server.engine import AnalysisState


class GuardedState:
    """Every method runs in a worker thread (never on the event loop)."""

    def __init__(self, state: AnalysisState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self.without_asr = False  # patient captions took over: its ASR lines stay stored, leave the prompts
        self.interviewer_captioned = False  # clinician captions took over from the interviewer track's ASR

    @contextlib.contextmanager
    def locked(self) -> Iterator[AnalysisState]:
        with self._lock:
            yield self._state

    def add_line(self, line: TranscriptLine) -> None:
        with self._lock:
            self._state.add_transcript(line)

    def add_lines(self, lines: list[TranscriptLine]) -> None:
        """Lines join the state; a state closed meanwhile (the session is over) drops them."""
        with self._lock:
            for line in lines:
                with contextlib.suppress(MllmdrError):
                    self._state.add_transcript(line)

    def lines(self, source_prefix: str) -> list[TranscriptLine]:
        with self._lock:
            return [line for line in self._state.transcript if line.source.startswith(source_prefix)]

    def snapshot(self, indicator_window_s: float) -> SessionSnapshot:
        with self._lock:
            snap = self._state.snapshot(indicator_window_s)
        if not (self.without_asr or self.interviewer_captioned):
            return snap
        kept = tuple(line for line in snap.transcript if not self._asr_left_out(line))
        return dataclasses.replace(snap, transcript=kept)

    def _asr_left_out(self, line: TranscriptLine) -> bool:
        """An ASR line of a party whose captions took over."""
        if not line.source.startswith("asr"):
            return False
        return self.interviewer_captioned if line.speaker == "clinician" else self.without_asr

    def flush(self) -> None:
        """End of media: close the open speech segment and encode the last window."""
        flush = getattr(self._state, "flush", None)
        if flush is not None:
            with self._lock:
                flush()

    def close(self) -> None:
        with self._lock:
            self._state.close()
