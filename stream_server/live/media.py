"""Media ingest: bounded queues → a worker thread → ``SessionState`` (and the optional audio recording)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np

from mllmdr_core.media import luma_plane
from mllmdr_core.speech_track import SpeechTrack
from stream_server.ingest import MediaQueues, QueuedAudio, QueuedVideo, TrackDrain, video_frame_to_rgb
from stream_server.live.events import SessionEvents
from stream_server.live.state import GuardedState
from stream_server.live.tasks import TaskSet
from stream_server.protocol import WarningEvent
from stream_server.recorder import AudioRecorder
from stream_server.services import Services

INGEST_BATCH_S = 0.1  # frames gather this long before a worker job (50 audio frames/s per session)


class MediaIngest:
    """Owns the session's queues and the worker task that empties them into the state."""

    def __init__(
        self, session_id: str, services: Services, state: GuardedState, events: SessionEvents
    ) -> None:
        cfg = services.settings
        self.session_id = session_id
        self.svc = services
        self.state = state
        self.events = events
        self.queues = MediaQueues(cfg.audio_queue_frames, cfg.video_queue_frames)
        # Two-party capture: the interviewer's audio, its own queue (same wake-up), VAD + ASR only.
        self.interviewer_queues = MediaQueues(cfg.audio_queue_frames, 0)
        self.interviewer_queues.wake = self.queues.wake
        new_track = getattr(services.engine, "new_speech_track", None)
        self.interviewer: SpeechTrack | None = new_track(session_id) if new_track is not None else None
        self.media_time_s = 0.0
        self._audio_t0: float | None = None  # session time of the next audio sample, once (a resume)
        self.last_lag_s: float | None = None
        self.recorder = AudioRecorder(cfg.var_path / "recordings", session_id) if cfg.record_audio else None
        visual = getattr(getattr(services.engine, "config", None), "visual", None)
        self.analysis_fps = float(getattr(visual, "analysis_fps", 5.0))
        self.eye_pass = bool(getattr(visual, "eye_pass", True))
        self.tasks = TaskSet(f"{session_id}:media")
        self._closed = False

    def start(self) -> None:
        self.tasks.start("worker", self._worker())

    def resume_at(self, media_time_s: float) -> None:
        """After a restart: media time continues from ``media_time_s`` (audio and video)."""
        self.media_time_s = max(self.media_time_s, media_time_s)
        self._audio_t0 = self.media_time_s

    def drain_for(self, track: Any, role: str = "patient") -> TrackDrain:
        """A drain feeding this session's queues from ``track`` (media time continues after a re-offer);
        an ``interviewer`` audio track feeds the interviewer's queue."""
        interviewer = role == "interviewer" and track.kind == "audio"
        return TrackDrain(
            track,
            self.interviewer_queues if interviewer else self.queues,
            role="interviewer" if interviewer else "patient",
            time_base_s=self.media_time_s,
            analysis_fps=self.analysis_fps,
            eye_pass=self.eye_pass,
            on_frame=self._on_frame,
            on_drop=self._on_drop,
        )

    def _on_frame(self, kind: str) -> None:
        self.svc.metrics.frames.inc(1.0, kind)

    def _on_drop(self, kind: str, total: int) -> None:
        self.svc.metrics.dropped.inc(1.0, kind)
        if kind == "audio" and self.events.claim_once("audio_behind"):
            warning = WarningEvent(
                session_id=self.session_id,
                code="audio_behind",
                message="analysis is far behind: oldest audio dropped",
                detail={"dropped": total},
            )
            self.events.spawn(self.events.publish(warning))

    async def _worker(self) -> None:
        """Moves queued frames into the worker thread, batch by batch, until stopped."""
        while True:
            await self.queues.wake.wait()
            await asyncio.sleep(INGEST_BATCH_S)  # gather frames: one worker job per batch, not per frame
            self.queues.wake.clear()
            await self.process_queued()

    async def process_queued(self) -> None:
        """Everything queued → the state (an error event per failed batch; the next batch still runs)."""
        while self.queues.audio or self.queues.video or self.queues.eye or self.interviewer_queues.audio:
            audio, video = self.queues.take()
            eye = self.queues.take_eye()
            theirs, _ = self.interviewer_queues.take()
            try:
                await self.svc.run(self._process, audio, video, theirs, eye)
            except Exception as exc:
                await self.events.error(exc)

    def _process(
        self,
        audio: list[QueuedAudio],
        video: list[QueuedVideo],
        theirs: list[QueuedAudio] | None = None,
        eye: list[QueuedVideo] | None = None,
    ) -> None:
        """Worker thread: frames → SessionState; the interviewer's audio → its speech track; the frames
        thinned out of the analysis rate (``eye``) → the eye-openness pass, in time order with the rest;
        that pass reads every frame's luma plane (a thinned-out frame is never converted to RGB)."""
        m = self.svc.metrics
        with self.state.locked() as state:
            if self.interviewer is not None:
                for group in audio_groups(theirs or []):
                    samples = np.concatenate([a.samples for a in group])
                    self.interviewer.push_audio(samples, group[0].sample_rate, channels=group[0].channels)
            for group in audio_groups(audio):
                t0 = time.perf_counter()
                samples = np.concatenate([a.samples for a in group])
                t_s, self._audio_t0 = self._audio_t0, None
                state.push_audio(samples, group[0].sample_rate, channels=group[0].channels, t_s=t_s)
                if self.recorder is not None:
                    self.recorder.write(samples, group[0].sample_rate, group[0].channels)
                m.stage_seconds.observe(time.perf_counter() - t0, "audio")
            kept = {id(v) for v in video}
            for item in sorted([*video, *(eye or [])], key=lambda v: v.t_s):
                t0 = time.perf_counter()
                luma = luma_plane(item.frame) if self.eye_pass else None
                if id(item) in kept:
                    rgb = video_frame_to_rgb(item.frame)
                    m.stage_seconds.observe(time.perf_counter() - t0, "video_decode")
                    t1 = time.perf_counter()
                    state.push_video(rgb, item.t_s, eye=luma)
                    m.stage_seconds.observe(time.perf_counter() - t1, "video")
                else:  # the eye pass's own cost: its luma view (RGB only for a format without luma)
                    image = luma if luma is not None else video_frame_to_rgb(item.frame)
                    m.stage_seconds.observe(time.perf_counter() - t0, "eye_decode")
                    t1 = time.perf_counter()
                    state.push_eye_frame(image, item.t_s)
                    m.stage_seconds.observe(time.perf_counter() - t1, "eye")
            self.media_time_s = max(
                self.media_time_s, float(state.media_time_s), max((v.t_s for v in video), default=0.0)
            )
        now = time.monotonic()
        newest = max([a.received_at for a in audio] + [v.received_at for v in video], default=None)
        if newest is not None:
            self.last_lag_s = now - newest
            m.lag_seconds.observe(self.last_lag_s, "media")

    async def stop(self) -> None:
        """The worker stops; what is still queued stays for ``finish``."""
        await self.tasks.aclose()

    async def finish(self) -> None:
        """End of media: the worker stops, the queues are processed, the state flushed."""
        await self.stop()
        await self.process_queued()
        await self.svc.run(self.state.flush)
        if self.interviewer is not None:
            await self.svc.run(self._flush_interviewer)

    def _flush_interviewer(self) -> None:
        with self.state.locked():
            if self.interviewer is not None:
                self.interviewer.flush()

    async def aclose(self) -> None:
        """Idempotent: worker stopped, queues cleared, recording closed."""
        await self.stop()
        self.queues.clear()
        self.interviewer_queues.clear()
        if self.recorder is not None and not self._closed:
            with contextlib.suppress(Exception):
                await self.svc.run(self._close_recorder)
        self._closed = True

    def _close_recorder(self) -> None:
        with self.state.locked():  # a batch still in a worker thread may be writing
            if self.recorder is not None:
                self.recorder.close()


def audio_groups(audio: list[QueuedAudio]) -> list[list[QueuedAudio]]:
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
