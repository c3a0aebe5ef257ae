"""One live session: a thin coordinator over parts with one job each (``stream_server/live/``).

Lifecycle: ``created`` → ``live`` (publisher connected) ⇄ ``reconnecting`` (publisher lost; a new offer
within ``reconnect_grace_s`` continues the same session) → ``ending`` → ``closed`` (or ``pending`` when
the LLM backend is down at the end). ``end()`` and ``stop()`` are idempotent and share one teardown in a
fixed order: publisher connection → tick loops → (end only: queued media, last speech, final
assessment) → transcript → media → state → the session's event stream. Every failure becomes an
``error`` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Literal

from mllmdr_core.assessment import DISCLAIMER, Assessment
from stream_server.audio_processing import META_KEY, reported, to_meta
from stream_server.live.assessment import AssessmentScheduler
from stream_server.live.connection import PublisherConnection
from stream_server.live.events import SessionEvents
from stream_server.live.indicators import IndicatorFeed
from stream_server.live.media import MediaIngest
from stream_server.live.state import GuardedState
from stream_server.live.tasks import TaskSet
from stream_server.live.transcript import TranscriptLog
from stream_server.pending import PendingAssessments
from stream_server.protocol import (
    Answer,
    CloseReason,
    Offer,
    SessionClosedEvent,
    SessionCreatedEvent,
    SessionStateName,
    TranscriptAckEvent,
    TranscriptLineModel,
    protocol_error,
)
from stream_server.services import Services

__all__ = ["CloseReason", "LiveSession"]
log = logging.getLogger("stream_server.session")
ASR_DRAIN_TIMEOUT_S = 60.0  # at the end, queued speech gets this long to be transcribed


class LiveSession:
    """Wires the parts and owns their lifecycle; the routes call only its public methods."""

    def __init__(
        self,
        session_id: str,
        services: Services,
        pending: PendingAssessments,
        *,
        checkpoint_interval_s: float | None,
    ) -> None:
        self.id = session_id
        self.svc = services
        self.checkpoint_interval_s = checkpoint_interval_s
        self.final: Assessment | None = None
        self.closed = asyncio.Event()
        self._ending = False
        self.used = False  # an offer or a caption came (a session nobody used expires: SessionManager)
        self.tasks = TaskSet(session_id)
        self.state = GuardedState(services.engine.new_state(session_id))
        self.events = SessionEvents(
            session_id, services, link=lambda: (self.connection.connected, self.connection.kinds)
        )
        self.ingest = MediaIngest(session_id, services, self.state, self.events)
        self.connection = PublisherConnection(
            session_id,
            services,
            self.ingest,
            self.events,
            on_connected=lambda: self.events.status("live"),
            on_lost=self.publisher_lost,
            on_gone=self._publisher_gone,
        )
        self.transcript = TranscriptLog(session_id, services, self.state, self.events)
        self.feed = IndicatorFeed(
            session_id,
            services,
            state=self.state,
            ingest=self.ingest,
            transcript=self.transcript,
            connection=self.connection,
            events=self.events,
            on_silent=self.publisher_lost,
        )
        self.assessments = AssessmentScheduler(
            session_id,
            services,
            pending,
            state=self.state,
            events=self.events,
            interval_s=checkpoint_interval_s,
            connected=lambda: self.connection.connected,
        )

    # ------------------------------------------------------------------ read-outs
    @property
    def status(self) -> SessionStateName:
        return self.events.state

    @property
    def media_time_s(self) -> float:
        return self.ingest.media_time_s

    @property
    def publisher_connected(self) -> bool:
        return self.connection.connected and self.status == "live"

    @property
    def has_media(self) -> bool:
        """A publisher connected at least once (what the live-session cap counts)."""
        return self.status != "created"

    @property
    def live(self) -> bool:
        """Not closed yet (an ending session still counts)."""
        return not self.closed.is_set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, announce: bool) -> None:
        self.events.bind_loop()
        if announce:
            info = self.svc.engine.info
            await self.events.publish(
                SessionCreatedEvent(
                    session_id=self.id,
                    bundle_id=info.bundle_id,
                    training_data=info.training_data,
                    non_clinical=info.non_clinical,
                    labels=list(info.labels),
                    disclaimer=DISCLAIMER,
                    indicator_interval_s=self.svc.settings.indicator_interval_s,
                    checkpoint_interval_s=self.checkpoint_interval_s,
                    transcript_source=self.svc.engine.transcript_source,
                )
            )
        self.ingest.start()
        self.feed.start()
        self.assessments.start()

    async def resume_from(self, transcript: list[TranscriptLineModel], media_time_s: float = 0.0) -> None:
        """After a restart: the stored transcript rejoins the state, media time continues from
        ``media_time_s``, then the session starts again."""
        await self.transcript.restore(transcript)
        self.ingest.resume_at(media_time_s)
        await self.start(announce=False)
        await self.events.warn(
            "session_resumed",
            "server restarted: session resumed; earlier media "
            "features were not kept (transcript, indicators and checkpoints were)",
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, kept referenced by the session until it finishes."""
        return self.tasks.spawn(coro)

    def _assert_open(self) -> None:
        if self._ending:
            raise protocol_error("session_closed", f"session {self.id} has ended")

    # ------------------------------------------------------------------ what clients do
    async def accept_offer(self, offer: Offer) -> Answer:
        """Answer a publisher's offer; a second offer (reconnect) replaces the previous connection."""
        self._assert_open()
        self.used = True
        answer = await self.connection.accept(offer)
        if offer.audio_processing:  # a re-offer that reports nothing keeps what was reported
            processing = reported(offer.audio_processing)
            self.assessments.audio_processing = processing
            await self.svc.store.update_meta(self.id, **{META_KEY: to_meta(processing)})
        return answer

    async def add_caption(self, line: TranscriptLineModel, ref: str | None = None) -> TranscriptAckEvent:
        """Store (committed), feed the state, broadcast; the returned ack is also broadcast."""
        self._assert_open()
        self.used = True
        return await self.transcript.add_caption(line, ref)

    async def checkpoint(
        self, *, trigger: Literal["request", "schedule"] = "request", ref: str | None = None
    ) -> Assessment:
        self._assert_open()
        return await self.assessments.checkpoint(trigger=trigger, ref=ref)

    # ------------------------------------------------------------------ publisher lost
    async def publisher_lost(self, why: str) -> None:
        """The publisher's connection ended: wait ``reconnect_grace_s`` for a re-offer, then end."""
        if self._ending or self.connection.in_grace:
            return
        await self.connection.drop()
        await self.events.status("reconnecting", why)
        grace_s = self.svc.settings.reconnect_grace_s
        await self.events.warn(
            "publisher_lost",
            f"publisher disconnected ({why}); waiting for reconnection",
            once=False,
            grace_s=grace_s,
        )
        self.connection.start_grace(grace_s)

    def _publisher_gone(self) -> None:
        if not self._ending:
            self.spawn(self.end("publisher_gone"))

    # ------------------------------------------------------------------ end
    async def end(self, reason: CloseReason = "ended") -> Assessment | None:
        """Idempotent: stop media, finish analysis, final assessment, close. Returns the assessment."""
        if self._ending:
            await self.closed.wait()
            return self.final
        self._ending = True
        await self._teardown(reason)
        return self.final

    async def stop(self) -> None:
        """Shutdown without ending: media and tasks stop; the stored session can be resumed."""
        self._ending = True
        await self._teardown(None)

    async def _teardown(self, reason: CloseReason | None) -> None:
        """The one teardown, in a fixed order; ``reason`` None (shutdown) skips the final assessment."""
        t_end = time.perf_counter()
        pending = False
        try:
            if reason is not None:
                await self.events.status("ending", reason)
            await self.connection.aclose()  # no new media
            await self.feed.aclose()  # no new work
            await self.assessments.aclose()
            await self.ingest.stop()
            if reason is not None:
                pending = await self._finish(reason, t_end)
        except Exception as exc:
            if reason is None:
                log.warning("session %s: stopping failed: %s", self.id, exc, exc_info=True)
            else:
                await self.events.error(exc, fatal=True)
        finally:
            if not pending:  # a pending session's subscribers wait for its assessment
                self.svc.bus.close_session(self.id)
            await self.transcript.aclose()
            await self.ingest.aclose()
            try:
                await self.svc.run(self.state.close)
            except Exception:
                log.debug("session %s: closing the state failed", self.id, exc_info=True)
            await self.events.aclose()
            self.closed.set()

    async def _finish(self, reason: CloseReason, t_end: float) -> bool:
        """Queued media and speech in, final assessment out; True when it was parked (``pending``)."""
        await self.ingest.finish()
        await self.transcript.finish(ASR_DRAIN_TIMEOUT_S)
        self.svc.metrics.stage_seconds.observe(time.perf_counter() - t_end, "end_drain")
        if reason == "expired":  # never used: nothing to assess
            self.final, pending = None, False
        else:
            self.final, pending = await self.assessments.final(
                reason, media_time_s=self.media_time_s, started=t_end
            )
        if not pending:
            await self.events.status("closed", reason)
            await self.events.publish(
                SessionClosedEvent(
                    session_id=self.id,
                    reason=reason,
                    final_assessment=self.final is not None,
                    media_time_s=self.media_time_s,
                    partial=reason == "publisher_gone",
                )
            )
        return pending
