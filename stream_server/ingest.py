"""Media ingest: drain aiortc tracks continuously into bounded queues; convert frames in worker threads.

The event loop only moves frames: ``TrackDrain`` awaits ``track.recv()`` and appends to a
``MediaQueues`` (video: drop oldest when full, after thinning to the analysis rate; the thinned-out
frames go to a separate bounded ``eye`` queue for the eye-openness pass (blink rate, indicators only),
dropped oldest without a warning; audio: kept unless more than ``audio_max`` frames behind, then
dropped oldest and counted). ``frames_to_arrays`` runs in a
worker thread and turns queued frames into numpy arrays for ``SessionState``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

MAX_ANALYSIS_WIDTH = 640  # frames are scaled down to at most this width before face tracking
EYE_QUEUE_FRAMES = 64  # thinned-out frames waiting for the eye-openness pass (~2 s at 30 fps)


@dataclass
class QueuedAudio:
    samples: np.ndarray  # (N * C,) interleaved int16/float
    sample_rate: int
    channels: int
    received_at: float  # time.monotonic()


@dataclass
class QueuedVideo:
    frame: av.VideoFrame
    t_s: float  # session media time
    received_at: float


def audio_frame_to_array(frame: av.AudioFrame) -> QueuedAudio:
    """Interleaved samples of one decoded audio frame (aiortc gives s16 packed stereo 48 kHz)."""
    channels = len(frame.layout.channels)
    arr = frame.to_ndarray()  # packed: (1, N*C); planar: (C, N)
    if frame.format.is_planar and channels > 1:
        arr = arr.T
    samples = np.ascontiguousarray(arr).reshape(-1)
    return QueuedAudio(samples, int(frame.sample_rate), channels, time.monotonic())


def video_frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, scaled down to at most ``MAX_ANALYSIS_WIDTH`` wide (worker thread)."""
    if frame.width > MAX_ANALYSIS_WIDTH:
        height = max(2, round(frame.height * MAX_ANALYSIS_WIDTH / frame.width / 2) * 2)
        return frame.reformat(width=MAX_ANALYSIS_WIDTH, height=height, format="rgb24").to_ndarray()
    return frame.to_ndarray(format="rgb24")


class MediaQueues:
    """Bounded per-session queues with drop counters (touched only on the event loop)."""

    def __init__(self, audio_max: int, video_max: int) -> None:
        self.audio: deque[QueuedAudio] = deque()
        self.video: deque[QueuedVideo] = deque()
        self.audio_max = audio_max
        self.video_max = video_max
        self.audio_dropped = 0
        self.video_dropped = 0
        self.eye: deque[QueuedVideo] = deque()  # frames thinned out of the analysis rate (eye pass)
        self.eye_max = EYE_QUEUE_FRAMES
        self.eye_dropped = 0
        self.wake = asyncio.Event()

    def put_audio(self, item: QueuedAudio) -> bool:
        """Append; returns True when an old frame had to be dropped (far behind)."""
        self.audio.append(item)
        dropped = False
        while len(self.audio) > self.audio_max:
            self.audio.popleft()
            self.audio_dropped += 1
            dropped = True
        self.wake.set()
        return dropped

    def put_video(self, item: QueuedVideo) -> bool:
        self.video.append(item)
        dropped = False
        while len(self.video) > self.video_max:
            self.video.popleft()
            self.video_dropped += 1
            dropped = True
        self.wake.set()
        return dropped

    def put_eye(self, item: QueuedVideo) -> None:
        self.eye.append(item)
        while len(self.eye) > self.eye_max:
            self.eye.popleft()
            self.eye_dropped += 1
        self.wake.set()

    def take_eye(self) -> list[QueuedVideo]:
        eye = list(self.eye)
        self.eye.clear()
        return eye

    def take(self, max_audio: int = 250) -> tuple[list[QueuedAudio], list[QueuedVideo]]:
        audio = [self.audio.popleft() for _ in range(min(max_audio, len(self.audio)))]
        video = list(self.video)
        self.video.clear()
        return audio, video

    def clear(self) -> None:
        self.audio.clear()
        self.video.clear()
        self.eye.clear()


class TrackDrain:
    """Reads one remote track until it ends, feeding ``MediaQueues``; ``on_drop`` reports drops."""

    def __init__(
        self,
        track: MediaStreamTrack,
        queues: MediaQueues,
        *,
        time_base_s: float,
        analysis_fps: float,
        on_frame: Callable[[str], None],
        on_drop: Callable[[str, int], None],
        role: str = "patient",
        eye_pass: bool = True,
    ) -> None:
        self.track = track
        self.kind = track.kind
        self.role = role  # "patient" or "interviewer" (an audio track of two-party capture)
        self._queues = queues
        self._base = time_base_s
        self._min_dt = 0.9 / analysis_fps if analysis_fps > 0 else 0.0
        self._eye_pass = eye_pass  # False: thinned-out frames are let go (no eye-openness pass)
        self._on_frame = on_frame
        self._on_drop = on_drop
        self._first_time: float | None = None
        self._last_kept = -1e9
        self.frames = 0
        self.last_frame_at = time.monotonic()
        self.ended = False  # the sender ended the track (RTCP BYE, or its transport closed): not silence
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame: Any = await self.track.recv()
            except MediaStreamError:
                self.ended = True
                return
            self.frames += 1
            self.last_frame_at = time.monotonic()
            self._on_frame(self.kind)
            if self.kind == "audio":
                if self._queues.put_audio(audio_frame_to_array(frame)):
                    self._on_drop("audio", self._queues.audio_dropped)
                continue
            t = float(frame.time) if frame.time is not None else self.frames / 30.0
            if self._first_time is None:
                self._first_time = t
            t_s = self._base + t - self._first_time
            if t_s - self._last_kept < self._min_dt:  # thinned to the analysis rate: not a drop
                if self._eye_pass:
                    self._queues.put_eye(QueuedVideo(frame, t_s, time.monotonic()))  # the eye pass only
                continue
            self._last_kept = t_s
            if self._queues.put_video(QueuedVideo(frame, t_s, time.monotonic())):
                self._on_drop("video", self._queues.video_dropped)

    async def stop(self) -> None:
        if self.task and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
