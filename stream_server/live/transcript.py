"""The session's transcript: captions and speech-to-text lines, stored, fed to the state, published.

With transcript source ``auto``, once the platform captions the patient, captions take over: the
session's ASR stops and its earlier lines leave the assessments' input (they stay stored). Two-party
capture: the same holds per party — a clinician caption stops the interviewer track's ASR and its
earlier lines leave the assessments; the patient's ASR goes on until a patient caption comes.
"""

from __future__ import annotations

import asyncio
import time

from mllmdr_core.frames import TranscriptLine
from stream_server.asr import BackgroundTranscriber
from stream_server.engine import interviewer_key
from stream_server.live.events import SessionEvents
from stream_server.live.state import GuardedState
from stream_server.protocol import (
    TranscriptAckEvent,
    TranscriptEvent,
    TranscriptLineModel,
    protocol_error,
)
from stream_server.services import Services


class TranscriptLog:
    """Owns the caption lock, the session's background ASR and which ASR lines are already published."""

    def __init__(
        self, session_id: str, services: Services, state: GuardedState, events: SessionEvents
    ) -> None:
        self.session_id = session_id
        self.svc = services
        self.state = state
        self.events = events
        self.prefer_captions = str(services.engine.transcript_source).startswith("auto")
        self._lock = asyncio.Lock()
        self._asr_seen = 0  # ASR lines already stored and published
        self.asr = self._attach_asr(session_id)
        self.interviewer_asr = self._attach_asr(interviewer_key(session_id))

    @property
    def patient_captioned(self) -> bool:
        return self.state.without_asr

    def _attach_asr(self, key: str) -> BackgroundTranscriber | None:
        """A background speech-to-text queue of the session (None: captions only, or no such track)."""
        lookup = getattr(self.svc.engine, "background_asr", None)
        asr: BackgroundTranscriber | None = lookup(key) if lookup is not None else None
        if asr is not None:
            asr.on_lines = self.state.add_lines  # ASR thread: lines join the state; the tick publishes
            asr.on_drop = self._on_asr_drop
            asr.on_error = self._on_asr_error
        return asr

    def _on_asr_drop(self, total: int) -> None:
        """ASR thread: speech-to-text fell ``asr_max_backlog_s`` behind and dropped its oldest segment."""
        self.svc.metrics.dropped.inc(1.0, "asr_segment")
        message = "speech-to-text is behind; the oldest speech was not transcribed (transcript has gaps)"
        self.events.warn_soon("asr_behind", message, segments_dropped=total)

    def _on_asr_error(self, message: str) -> None:
        """ASR thread: the recogniser failed on a segment (the session goes on without its text)."""
        self.events.warn_soon("asr_error", f"speech-to-text failed on a segment: {message}"[:300])

    @staticmethod
    def check_caption(line: TranscriptLineModel) -> None:
        """Checks a caption must pass before it is stored (``invalid_message`` otherwise)."""
        if line.end_s < line.start_s:
            raise protocol_error("invalid_message", "end_s must not be before start_s")

    async def add_caption(self, line: TranscriptLineModel, ref: str | None = None) -> TranscriptAckEvent:
        """Store (committed), feed the state, broadcast; the returned ack is also broadcast."""
        self.check_caption(line)
        if self.prefer_captions and line.speaker != "clinician" and not self.patient_captioned:
            await self.captions_take_over()
        if self.prefer_captions and line.speaker == "clinician" and not self.state.interviewer_captioned:
            await self.interviewer_captions_take_over()
        async with self._lock:
            index = await self.svc.store.add_transcript(self.session_id, line)
            await self.svc.run(self.state.add_line, line.to_line())
            await self.events.publish(TranscriptEvent(session_id=self.session_id, line=line))
            ack = TranscriptAckEvent(
                session_id=self.session_id, ref=ref, line_index=index, start_s=line.start_s, end_s=line.end_s
            )
            published: TranscriptAckEvent = await self.events.publish(ack)
        return published

    async def captions_take_over(self) -> None:
        """Source ``auto``: the platform captions the patient, so this session's ASR stops."""
        self.state.without_asr = True
        stop = getattr(self.svc.engine, "stop_asr", None)
        if callable(stop):
            stop(self.session_id)
        await self.events.warn(
            "asr_stopped",
            "the platform sends captions for the patient: speech recognition stopped for this session; "
            "its earlier lines stay in the transcript but are left out of assessments",
        )

    async def interviewer_captions_take_over(self) -> None:
        """Source ``auto``: the platform captions the clinician, so the interviewer track's ASR stops
        (a warning only when such a track is being transcribed)."""
        self.state.interviewer_captioned = True
        stop = getattr(self.svc.engine, "stop_asr", None)
        if callable(stop) and stop(interviewer_key(self.session_id)):
            await self.events.warn(
                "interviewer_asr_stopped",
                "the platform sends captions for the clinician: speech recognition of the interviewer's "
                "track stopped; its earlier lines stay in the transcript but are left out of assessments",
            )

    async def restore(self, lines: list[TranscriptLineModel]) -> None:
        """A resumed session: its stored lines join the state (stored already: not re-published)."""
        for line in lines:
            self.state.add_line(line.to_line())
            self._asr_seen += line.source.startswith("asr")
            if self.prefer_captions and line.source == "captions" and line.speaker != "clinician":
                await self.captions_take_over()
            if self.prefer_captions and line.source == "captions" and line.speaker == "clinician":
                self.state.interviewer_captioned = True

    def new_asr_lines(self) -> list[TranscriptLine]:
        """Worker thread: ASR lines not yet stored and published."""
        asr = self.state.lines("asr")
        new, self._asr_seen = asr[self._asr_seen :], len(asr)
        return new

    async def publish_asr(self, lines: list[TranscriptLine]) -> None:
        """Speech-to-text output: stored and shown like captions (``transcript`` events)."""
        for line in lines:
            model = TranscriptLineModel.from_line(line)
            async with self._lock:
                await self.svc.store.add_transcript(self.session_id, model)
            await self.events.publish(TranscriptEvent(session_id=self.session_id, line=model))

    async def publish_new_asr(self) -> None:
        await self.publish_asr(await self.svc.run(self.new_asr_lines))

    async def finish(self, timeout_s: float) -> None:
        """End of session: queued speech gets up to ``timeout_s`` (polled), then its lines are published."""
        deadline = time.monotonic() + timeout_s
        for asr in (self.asr, self.interviewer_asr):
            if asr is None:
                continue
            while not asr.idle and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not asr.idle:
                left = asr.backlog_s
                asr.close()
                await self.events.warn(
                    "asr_incomplete",
                    f"speech-to-text did not finish within {timeout_s:.0f} s; "
                    f"{left:.1f} s of speech left out",
                    seconds_left_out=round(left, 1),
                )
        await self.publish_new_asr()  # the last segment's text

    async def aclose(self) -> None:
        """Idempotent: the session's speech-to-text queues are dropped."""
        for asr in (self.asr, self.interviewer_asr):
            if asr is not None:
                asr.close()
