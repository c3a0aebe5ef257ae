"""One live session: WebRTC peer → bounded queues → worker thread → SessionState → events and store.

Lifecycle: ``created`` → ``live`` (publisher connected) ⇄ ``reconnecting`` (publisher lost; a new offer
within ``reconnect_grace_s`` continues the same session) → ``ending`` → ``closed``. ``end()`` is
idempotent: it stops media, drains the queues, runs the final assessment in a worker thread, stores it
and publishes ``assessment.result`` then ``session.closed``. Every failure becomes an ``error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from mllmdr_core.assessment import DISCLAIMER, Assessment
from mllmdr_core.errors import BackendError, MllmdrError, StorageError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.retry import RetryPolicy, assess_with_retry
from mllmdr_core.snapshot import SessionSnapshot, finite
from stream_server.asr import BackgroundTranscriber
from stream_server.bus import EventBus
from stream_server.engine import AnalysisState, Engine
from stream_server.ice import ice_servers_for, to_rtc
from stream_server.ingest import MediaQueues, QueuedAudio, QueuedVideo, TrackDrain, video_frame_to_rgb
from stream_server.metrics import ServerMetrics
from stream_server.pending import PendingAssessments
from stream_server.protocol import (
    Answer,
    AssessmentResultEvent,
    CheckpointResultEvent,
    ErrorEvent,
    IndicatorsEvent,
    Offer,
    SessionClosedEvent,
    SessionCreatedEvent,
    SessionStateName,
    SessionStatusEvent,
    TranscriptAckEvent,
    TranscriptEvent,
    TranscriptLineModel,
    WarningEvent,
    error_code_of,
    protocol_error,
)
from stream_server.recorder import AudioRecorder
from stream_server.sdp_check import check_offer_sdp
from stream_server.settings import Settings
from stream_server.store import Store

log = logging.getLogger("stream_server.session")
T = TypeVar("T")
INGEST_BATCH_S = 0.1  # frames gather this long before a worker job (50 audio frames/s per session)
ASR_DRAIN_TIMEOUT_S = 60.0  # at the end, queued speech gets this long to be transcribed
ASSESS_ATTEMPTS = 3  # final/checkpoint assessment tries when the LLM backend fails
CloseReason = Literal["ended", "publisher_gone", "error", "server_shutdown"]


class Services:
    """What every session shares: settings, engine, store, bus, metrics, the analysis thread pool."""

    def __init__(
        self, settings: Settings, engine: Engine, store: Store, bus: EventBus, metrics: ServerMetrics
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mllmdr-analysis")
        self.assess_slots = asyncio.Semaphore(1)  # assessments are CPU-heavy: one at a time per process
        self.pending = PendingAssessments(self)  # final assessments waiting for the LLM backend

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class LiveSession:
    def __init__(self, session_id: str, services: Services, *, checkpoint_interval_s: float | None) -> None:
        self.id = session_id
        self.svc = services
        cfg = services.settings
        self.checkpoint_interval_s = checkpoint_interval_s
        self.status: SessionStateName = "created"
        self.state: AnalysisState = services.engine.new_state(session_id)
        self._state_lock = threading.Lock()  # SessionState is used from one worker thread at a time
        self.queues = MediaQueues(cfg.audio_queue_frames, cfg.video_queue_frames)
        self.pc: RTCPeerConnection | None = None
        self.drains: list[TrackDrain] = []
        self.media_time_s = 0.0
        self.last_lag_s: float | None = None
        self.final: Assessment | None = None
        self.closed = asyncio.Event()
        self._ending = False
        self._caption_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._grace: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        self._asr_seen = 0  # ASR transcript lines already stored and published
        # source auto: once the platform captions the patient, ASR stops and its lines leave the prompts
        self._prefer_captions = str(services.engine.transcript_source).startswith("auto")
        self._patient_captioned = False
        self.recorder = AudioRecorder(cfg.var_path / "recordings", session_id) if cfg.record_audio else None
        self._background: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start(); ASR callbacks post to it
        self.asr = self._attach_asr(services.engine, session_id)
        self._analysis_fps = float(
            getattr(getattr(getattr(services.engine, "config", None), "visual", None), "analysis_fps", 5.0)
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, announce: bool) -> None:
        self._loop = asyncio.get_running_loop()
        if announce:
            info = self.svc.engine.info
            await self.publish(
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
        self._tasks = [asyncio.ensure_future(self._worker()), asyncio.ensure_future(self._indicator_loop())]
        if self.checkpoint_interval_s:
            self._tasks.append(asyncio.ensure_future(self._checkpoint_loop(self.checkpoint_interval_s)))

    def _attach_asr(self, engine: Any, session_id: str) -> BackgroundTranscriber | None:
        """The session's background speech-to-text queue, wired to this session (None: captions only)."""
        lookup = getattr(engine, "background_asr", None)
        asr: BackgroundTranscriber | None = lookup(session_id) if lookup is not None else None
        if asr is not None:
            asr.on_lines = self._on_asr_lines
            asr.on_drop = self._on_asr_drop
            asr.on_error = self._on_asr_error
        return asr

    def _on_asr_lines(self, lines: list[TranscriptLine]) -> None:
        """ASR thread: recognised lines join the state (the indicator loop stores and publishes them)."""
        with self._state_lock:
            for line in lines:
                with contextlib.suppress(MllmdrError):  # the state closed meanwhile: the session is over
                    self.state.add_transcript(line)

    def _on_asr_drop(self, total: int) -> None:
        """ASR thread: speech-to-text fell ``asr_max_backlog_s`` behind and dropped its oldest segment."""
        self.svc.metrics.dropped.inc(1.0, "asr_segment")
        message = "speech-to-text is behind; the oldest speech was not transcribed (transcript has gaps)"
        self._warn_from_thread("asr_behind", message, segments_dropped=total)

    def _on_asr_error(self, message: str) -> None:
        """ASR thread: the recogniser failed on a segment (counted; the session goes on without its text)."""
        self._warn_from_thread("asr_error", f"speech-to-text failed on a segment: {message}"[:300])

    def _warn_from_thread(self, code: str, message: str, **detail: float | int | str) -> None:
        """A warning event (once per code) raised from a worker thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._warn(code, message, True, **detail)))

    async def _wait_asr_idle(self, timeout_s: float) -> None:
        """End of session: give queued speech up to ``timeout_s`` to be transcribed (polls, never blocks)."""
        if self.asr is None:
            return
        deadline = time.monotonic() + timeout_s
        while not self.asr.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.asr.idle:
            left = self.asr.backlog_s
            self.asr.close()
            await self._warn(
                "asr_incomplete",
                f"speech-to-text did not finish within {timeout_s:.0f} s; {left:.1f} s of speech left out",
                seconds_left_out=round(left, 1),
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def publish(self, event: Any, *, persist: bool = True) -> Any:
        return await self.svc.bus.publish(event, persist=persist)

    async def _status(self, state: SessionStateName, detail: str = "") -> None:
        self.status = state
        with contextlib.suppress(MllmdrError):
            await self.svc.store.set_state(self.id, state, ended=state == "closed")
        kinds = {d.kind for d in self.drains}
        await self.publish(
            SessionStatusEvent(
                session_id=self.id,
                state=state,
                publisher_connected=self.pc is not None and state == "live",
                audio="audio" in kinds,
                video="video" in kinds,
                detail=detail,
            )
        )

    async def _warn(self, code: str, message: str, once: bool = True, **detail: float | int | str) -> None:
        if once and code in self._warned:
            return
        self._warned.add(code)
        await self.publish(WarningEvent(session_id=self.id, code=code, message=message, detail=detail))

    async def _error(self, exc: BaseException, *, fatal: bool = False) -> None:
        code = error_code_of(exc)
        log.warning("session %s: %s: %s", self.id, code, exc, exc_info=code == "internal")
        event = ErrorEvent(
            session_id=self.id,
            code=code,  # type: ignore[arg-type]
            message=str(exc)[:500] or type(exc).__name__,
            fatal=fatal,
        )
        try:
            await self.publish(event)
        except StorageError:
            # the store itself is failing (disk full, read-only): still tell the live subscribers
            with contextlib.suppress(Exception):
                await self.publish(event, persist=False)
        except Exception:
            log.exception("session %s: could not publish an error event", self.id)

    # ------------------------------------------------------------------ WebRTC
    async def accept_offer(self, offer: Offer) -> Answer:
        """Answer a publisher's offer; a second offer (reconnect) replaces the previous connection."""
        if self._ending:
            raise protocol_error("session_closed", f"session {self.id} has ended")
        check_offer_sdp(offer.sdp)  # bad_sdp naming the rule, before aiortc parses it
        ice = to_rtc(ice_servers_for(self.svc.settings, self.id))  # configured STUN/TURN, fresh credentials
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        kinds: list[str] = []
        new_drains: list[TrackDrain] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            kinds.append(track.kind)
            if track.kind not in ("audio", "video"):
                return
            drain = TrackDrain(
                track,
                self.queues,
                time_base_s=self.media_time_s,
                analysis_fps=self._analysis_fps,
                on_frame=self._on_frame,
                on_drop=self._on_drop,
            )
            new_drains.append(drain)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            if pc.connectionState == "connected":
                await self._status("live")
            elif pc.connectionState in ("failed", "closed"):
                await self.publisher_lost(f"connection {pc.connectionState}")

        try:
            # The whole negotiation happens before the new connection replaces the current one, so a
            # bad offer (aiortc raises ValueError/KeyError/... at any of these steps) leaves the
            # publisher that is live untouched and answers bad_sdp, never a 500.
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
            if not new_drains:
                raise ValueError("offer has no audio or video track")
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            with contextlib.suppress(Exception):
                await pc.close()
            raise protocol_error("bad_sdp", f"cannot use SDP offer: {type(exc).__name__}: {exc}") from exc
        old_pc, old_drains = self.pc, self.drains
        self.pc, self.drains = pc, new_drains
        for d in old_drains:
            await d.stop()
        if old_pc is not None:
            with contextlib.suppress(Exception):
                await old_pc.close()
        for d in new_drains:
            d.start()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if "audio" not in kinds:
            await self._warn(
                "no_audio_track", "publisher sent no audio track: no speech indicators", once=False
            )
        if "video" not in kinds:
            await self._warn(
                "no_video_track", "publisher sent no video track: no facial indicators", once=False
            )
        local = pc.localDescription
        return Answer(sdp=local.sdp, type="answer")

    def _on_frame(self, kind: str) -> None:
        self.svc.metrics.frames.inc(1.0, kind)

    def _on_drop(self, kind: str, total: int) -> None:
        self.svc.metrics.dropped.inc(1.0, kind)
        if kind == "audio" and "audio_behind" not in self._warned:
            self._warned.add("audio_behind")
            self._spawn(
                self.publish(
                    WarningEvent(
                        session_id=self.id,
                        code="audio_behind",
                        message="analysis is far behind: oldest audio dropped",
                        detail={"dropped": total},
                    )
                )
            )

    async def publisher_lost(self, why: str) -> None:
        """The publisher's connection ended: wait ``reconnect_grace_s`` for a re-offer, then end."""
        if self._ending or self._grace is not None:
            return
        pc, self.pc = self.pc, None
        for d in self.drains:
            await d.stop()
        self.drains = []
        if pc is not None:
            await pc.close()
        await self._status("reconnecting", why)
        await self._warn(
            "publisher_lost",
            f"publisher disconnected ({why}); waiting for reconnection",
            once=False,
            grace_s=self.svc.settings.reconnect_grace_s,
        )
        self._grace = asyncio.ensure_future(self._grace_timer())

    async def _grace_timer(self) -> None:
        await asyncio.sleep(self.svc.settings.reconnect_grace_s)
        self._grace = None
        if self.pc is None and not self._ending:
            self._spawn(self.end("publisher_gone"))

    # ------------------------------------------------------------------ analysis
    async def _worker(self) -> None:
        """Moves queued frames into the worker thread, batch by batch, until the session ends."""
        while True:
            await self.queues.wake.wait()
            await asyncio.sleep(INGEST_BATCH_S)  # gather frames: one worker job per batch, not per frame
            self.queues.wake.clear()
            await self._process_pending()

    async def _process_pending(self) -> None:
        while self.queues.audio or self.queues.video:
            audio, video = self.queues.take()
            try:
                await self.svc.run(self._process, audio, video)
            except MllmdrError as exc:
                await self._error(exc)
            except Exception as exc:
                await self._error(exc)

    def _process(self, audio: list[QueuedAudio], video: list[QueuedVideo]) -> None:
        """Worker thread: frames → SessionState."""
        m = self.svc.metrics
        with self._state_lock:
            for group in _audio_groups(audio):
                t0 = time.perf_counter()
                samples = np.concatenate([a.samples for a in group])
                self.state.push_audio(samples, group[0].sample_rate, channels=group[0].channels)
                if self.recorder is not None:
                    self.recorder.write(samples, group[0].sample_rate, group[0].channels)
                m.stage_seconds.observe(time.perf_counter() - t0, "audio")
            for item in video:
                t0 = time.perf_counter()
                rgb = video_frame_to_rgb(item.frame)
                m.stage_seconds.observe(time.perf_counter() - t0, "video_decode")
                t1 = time.perf_counter()
                self.state.push_video(rgb, item.t_s)
                m.stage_seconds.observe(time.perf_counter() - t1, "video")
            self.media_time_s = max(
                self.media_time_s, float(self.state.media_time_s), max((v.t_s for v in video), default=0.0)
            )
        now = time.monotonic()
        newest = max([a.received_at for a in audio] + [v.received_at for v in video], default=None)
        if newest is not None:
            self.last_lag_s = now - newest
            m.lag_seconds.observe(self.last_lag_s, "media")

    def _snapshot_indicators(self) -> tuple[dict[str, float], list[TranscriptLine]]:
        """Indicator values, plus transcript lines the ASR (if any) produced since the last call."""
        with self._state_lock:
            t0 = time.perf_counter()
            values = finite(self.state.indicators(self.svc.settings.indicator_window_s))
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - t0, "indicators")
        return values, self._new_asr_lines()

    def _new_asr_lines(self) -> list[TranscriptLine]:
        """Worker thread: ASR lines not yet stored and published."""
        with self._state_lock:
            asr = [line for line in self.state.transcript if line.source.startswith("asr")]
        new, self._asr_seen = asr[self._asr_seen :], len(asr)
        return new

    async def _publish_asr(self, lines: list[TranscriptLine]) -> None:
        """Speech-to-text output: stored and shown like captions (``transcript`` events)."""
        for line in lines:
            model = TranscriptLineModel.from_line(line)
            async with self._caption_lock:
                await self.svc.store.add_transcript(self.id, model)
            await self.publish(TranscriptEvent(session_id=self.id, line=model))

    async def _indicator_loop(self) -> None:
        last_media = 0.0  # nothing before the first processed media
        while True:
            await asyncio.sleep(self.svc.settings.indicator_interval_s)
            if self.pc is None:
                continue
            silent = [
                d
                for d in self.drains
                if time.monotonic() - d.last_frame_at > self.svc.settings.media_timeout_s
            ]
            if self.drains and len(silent) == len(self.drains) and self.status == "live":
                await self.publisher_lost(f"no media for {self.svc.settings.media_timeout_s:.0f} s")
                continue
            if self.media_time_s <= last_media:
                if self.asr is not None:  # speech-to-text lags the media: its lines may come after it
                    await self._publish_asr(await self.svc.run(self._new_asr_lines))
                continue
            last_media = self.media_time_s
            try:
                await self.emit_indicators()
            except Exception as exc:
                await self._error(exc)

    async def emit_indicators(self) -> None:
        values, asr_lines = await self.svc.run(self._snapshot_indicators)
        await self._publish_asr(asr_lines)
        event = IndicatorsEvent(
            session_id=self.id,
            media_time_s=self.media_time_s,
            window_s=self.svc.settings.indicator_window_s,
            values=values,
            lag_s=self.last_lag_s,
        )
        await self.svc.store.add_indicators(self.id, event.media_time_s, event.ts, values)
        await self.publish(event)

    async def _checkpoint_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.pc is not None:
                with contextlib.suppress(MllmdrError):
                    await self.checkpoint(trigger="schedule")

    def _snapshot(self) -> SessionSnapshot:
        with self._state_lock:
            snap = self.state.snapshot(self.svc.settings.indicator_window_s)
        if self._patient_captioned:  # captions took over from ASR: no doubled text in the prompts
            snap = snap.without_sources("asr")
        return snap

    def _retry_warning(self, kind: str) -> Callable[[int, BackendError], None]:
        """Worker thread → loop: an ``assessment_retry`` warning before each wait of the retry loop."""

        def warn(failures: int, exc: BackendError) -> None:
            message = f"{kind} assessment failed ({exc}); retrying"
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(
                    lambda: self._spawn(self._warn("assessment_retry", message, once=False, attempt=failures))
                )

        return warn

    async def _assess(
        self, kind: Literal["checkpoint", "final"], taken: SessionSnapshot | None = None
    ) -> Assessment:
        settings = self.svc.settings
        policy = RetryPolicy(ASSESS_ATTEMPTS, settings.assess_retry_base_s, settings.pending_retry_max_s)
        async with self.svc.assess_slots:
            t0 = time.perf_counter()
            snap = taken if taken is not None else await self.svc.run(self._snapshot)
            # not in the analysis pool: the back-off between tries must not hold an ingest worker
            result = await asyncio.to_thread(
                lambda: assess_with_retry(
                    self.svc.engine,
                    snap,
                    session_id=self.id,
                    kind=kind,
                    policy=policy,
                    on_retry=self._retry_warning(kind),
                )
            )
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - t0, f"assess_{kind}")
        self.svc.metrics.assessments.inc(1.0, kind)
        await self.svc.store.add_assessment(result)
        return result

    async def checkpoint(
        self, *, trigger: Literal["request", "schedule"] = "request", ref: str | None = None
    ) -> Assessment:
        if self._ending:
            raise protocol_error("session_closed", f"session {self.id} has ended")
        try:
            result = await self._assess("checkpoint")
        except Exception as exc:
            await self._error(exc)
            raise
        await self.publish(
            CheckpointResultEvent(session_id=self.id, ref=ref, trigger=trigger, assessment=result)
        )
        return result

    # ------------------------------------------------------------------ transcript
    async def add_caption(self, line: TranscriptLineModel, ref: str | None = None) -> TranscriptAckEvent:
        """Store (committed), feed the state, broadcast; the returned ack is also broadcast."""
        if self._ending:
            raise protocol_error("session_closed", f"session {self.id} has ended")
        if line.end_s < line.start_s:
            raise protocol_error("invalid_message", "end_s must not be before start_s")
        if self._prefer_captions and line.speaker != "clinician" and not self._patient_captioned:
            await self._captions_take_over()
        async with self._caption_lock:
            index = await self.svc.store.add_transcript(self.id, line)
            core_line = line.to_line()

            def add() -> None:
                with self._state_lock:
                    self.state.add_transcript(core_line)

            await self.svc.run(add)
            await self.publish(TranscriptEvent(session_id=self.id, line=line))
            ack = TranscriptAckEvent(
                session_id=self.id, ref=ref, line_index=index, start_s=line.start_s, end_s=line.end_s
            )
            published: TranscriptAckEvent = await self.publish(ack)
        return published

    async def _captions_take_over(self) -> None:
        """Source ``auto``: the platform captions the patient, so this session's ASR stops."""
        self._patient_captioned = True
        stop = getattr(self.svc.engine, "stop_asr", None)
        if callable(stop):
            stop(self.id)
        await self._warn(
            "asr_stopped",
            "the platform sends captions for the patient: speech recognition stopped for this session; "
            "its earlier lines stay in the transcript but are left out of assessments",
        )

    # ------------------------------------------------------------------ end
    async def end(self, reason: CloseReason = "ended") -> Assessment | None:
        """Idempotent: stop media, finish analysis, final assessment, close. Returns the assessment."""
        if self._ending:
            await self.closed.wait()
            return self.final
        self._ending = True
        t_end = time.perf_counter()
        pending = False
        try:
            await self._status("ending", reason)
            if self._grace is not None:
                self._grace.cancel()
            for d in self.drains:
                await d.stop()
            pc, self.pc = self.pc, None
            if pc is not None:
                await pc.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._process_pending()
            await self.svc.run(self._flush_state)
            await self._wait_asr_idle(ASR_DRAIN_TIMEOUT_S)
            await self._publish_asr(await self.svc.run(self._new_asr_lines))  # the last segment's text
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - t_end, "end_drain")
            snap = await self.svc.run(self._snapshot)  # after the flush: the last window and segment
            try:
                self.final = await self._assess("final", snap)
                self.svc.metrics.stage_seconds.observe(time.perf_counter() - t_end, "end_to_final")
                await self.publish(AssessmentResultEvent(session_id=self.id, assessment=self.final))
            except BackendError as exc:  # still down after the retries: keep the features, retry later
                pending = await self._park(snap, reason, exc)
            except Exception as exc:
                await self._error(exc)
            if not pending:
                await self._status("closed", reason)
                await self.publish(
                    SessionClosedEvent(
                        session_id=self.id,
                        reason=reason,
                        final_assessment=self.final is not None,
                        media_time_s=self.media_time_s,
                    )
                )
        except Exception as exc:
            await self._error(exc, fatal=True)
        finally:
            if not pending:  # a pending session's subscribers wait for its assessment
                self.svc.bus.close_session(self.id)
            self.queues.clear()
            if self.asr is not None:
                self.asr.close()
            with contextlib.suppress(Exception):
                await self.svc.run(self._close_state)
            self.closed.set()
        return self.final

    async def _park(self, snap: SessionSnapshot, reason: CloseReason, exc: BackendError) -> bool:
        """Backend down at the end: session ``pending``, features kept, assessment retried. False if the
        features could not be kept (then the session closes without a final assessment)."""
        try:
            await self.svc.pending.park(self.id, snap, reason=reason, media_time_s=self.media_time_s)
        except MllmdrError as store_exc:
            await self._error(exc)
            await self._error(store_exc)
            return False
        await self._status("pending", "final assessment waits for the LLM backend")
        await self._warn(
            "assessment_pending",
            f"final assessment failed ({exc}); the session's features are kept and the assessment is "
            "retried in the background; it will arrive as assessment.result",
        )
        return True

    async def stop(self) -> None:
        """Shutdown without ending: media and tasks stop; the stored session can be resumed."""
        self._ending = True
        for d in self.drains:
            await d.stop()
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.svc.bus.close_session(self.id)
        with contextlib.suppress(Exception):
            await self.svc.run(self._close_state)
        self.closed.set()

    def _flush_state(self) -> None:
        """End of media: close the open speech segment and encode the last window."""
        flush = getattr(self.state, "flush", None)
        if flush is not None:
            with self._state_lock:
                flush()

    def _close_state(self) -> None:
        with self._state_lock:
            self.state.close()
            if self.recorder is not None:
                self.recorder.close()


def _audio_groups(audio: list[QueuedAudio]) -> list[list[QueuedAudio]]:
    """Consecutive frames with the same rate and layout (a mid-stream change starts a new group)."""
    groups: list[list[QueuedAudio]] = []
    for item in audio:
        if groups and (groups[-1][0].sample_rate, groups[-1][0].channels, groups[-1][0].samples.dtype) == (
            item.sample_rate,
            item.channels,
            item.samples.dtype,
        ):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def new_session_id() -> str:
    return "s_" + secrets.token_hex(8)


class SessionManager:
    """Live sessions of this process; sessions known only to the store are resumed on demand."""

    def __init__(self, services: Services) -> None:
        self.svc = services
        self.sessions: dict[str, LiveSession] = {}
        self._lock = asyncio.Lock()
        services.metrics.sessions_live.fn = self._count_live
        services.metrics.queue_depth.fn = self._queue_depths

    def _count_live(self) -> dict[tuple[str, ...], float]:
        return {(): float(sum(1 for s in self.sessions.values() if not s.closed.is_set()))}

    def _queue_depths(self) -> dict[tuple[str, ...], float]:
        live = list(self.sessions.values())
        return {
            ("audio",): float(sum(len(s.queues.audio) for s in live)),
            ("video",): float(sum(len(s.queues.video) for s in live)),
        }

    async def create(self, *, external_id: str | None, checkpoint_interval_s: float | None) -> LiveSession:
        live = sum(1 for s in self.sessions.values() if not s.closed.is_set())
        if live >= self.svc.settings.max_sessions:
            raise protocol_error("rate_limited", f"server is at its limit of {live} live sessions")
        sid = new_session_id()
        interval = checkpoint_interval_s or self.svc.settings.checkpoint_interval_s
        await self.svc.store.create_session(
            sid,
            self.svc.engine.info.bundle_id,
            {"external_id": external_id, "checkpoint_interval_s": interval},
        )
        session = await self.svc.run(lambda: LiveSession(sid, self.svc, checkpoint_interval_s=interval))
        self.sessions[sid] = session
        await session.start(announce=True)
        self.svc.metrics.sessions_started.inc()
        return session

    async def get_live(self, session_id: str) -> LiveSession:
        """The live session, resuming one from the store (after a restart); errors if unknown or ended."""
        async with self._lock:
            session = self.sessions.get(session_id)
            if session is not None and not session.closed.is_set():
                return session
            row = await self.svc.store.get_session(session_id)
            if row is None:
                raise protocol_error("not_found", f"unknown session {session_id}")
            if row["state"] in ("closed", "pending") or session is not None:
                raise protocol_error("session_closed", f"session {session_id} has ended")
            interval = row["meta"].get("checkpoint_interval_s")
            session = await self.svc.run(
                lambda: LiveSession(session_id, self.svc, checkpoint_interval_s=interval)
            )
            for line in await self.svc.store.transcript(session_id):
                session.state.add_transcript(line.to_line())
                session._asr_seen += line.source.startswith("asr")  # stored already: not re-published
                if session._prefer_captions and line.source == "captions" and line.speaker != "clinician":
                    await session._captions_take_over()
            self.sessions[session_id] = session
            await session.start(announce=False)
            await session._warn(
                "session_resumed",
                "server restarted: session resumed; earlier media "
                "features were not kept (transcript, indicators and checkpoints were)",
            )
            return session

    async def close(self) -> None:
        """Server shutdown: stop media; sessions stay open in the store and resume on the next offer."""
        await asyncio.gather(
            *(s.stop() for s in self.sessions.values() if not s.closed.is_set()), return_exceptions=True
        )
