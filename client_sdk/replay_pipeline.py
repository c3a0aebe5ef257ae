"""The offline feed of one recording into ``SessionState``, arranged for speed (replay's inner loop).

Same features as the live path (``tests/sdk/test_equivalence.py``), three differences in *how*:

- **Audio in larger chunks.** The 20 ms frames the server pushes are joined into chunks that end on
  the indicator-sampling grid (``indicator_interval_s``). Resampling is chunk-independent (the
  polyphase resampler equals ``resample_poly`` of the whole signal), VAD runs on fixed 30 ms frames
  and the encoder on a fixed window grid, so the features are the same; Python's per-call cost is
  paid 50–100× less often, and several encoder windows ready at once go through HuBERT as one batch.
- **Video beside the audio.** A thread decodes the video, keeps the frames the state will analyse
  (its ``1 / analysis_fps`` slot rule, applied to the frames the ingest's thinning kept) and runs the
  face tracker on them; decoding (PyAV) and the face mesh (mediapipe) release the GIL, so on two cores
  the audio path and the video path overlap. The state gets those observations through
  :class:`PrecomputedFaces`, in the same order, from the same tracker: the same vectors (the queue
  holds times and observations, not pixels, so the thread may run ahead without a memory bound).
- **Timing per stage** (decode, face tracker) is measured where it runs and returned with the series.

Frames that are not analysed are still decoded (inter frames need their references; measured on a
60-s 640x480 h264 file: 0.17 s for all 900 frames, ``skip_frame="NONREF"`` no faster, ``"NONKEY"``
only the keyframes); the RGB conversion is skipped for frames the ingest's thinning drops
(``iter_video``).
"""

from __future__ import annotations

import heapq
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.features.face import FaceObservation, FaceTracker, make_face_tracker
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.media import AudioFrame, MediaSource, VideoFrame, iter_audio, iter_video

CHUNK_S = 0.2  # audio chunk length (measured: longer chunks resample slower, the gather leaves the cache)
SPARE_A_CORE = True  # torch runs one thread fewer while the video thread works (see Fast.run)
_QUEUE_FRAMES = 1 << 20  # the thread runs ahead freely: items are a time and an observation, no pixels
_NO_PIXELS = np.zeros((1, 1, 3), np.uint8)  # what the state gets: its face tracker is PrecomputedFaces
_END = object()


@dataclass
class FeedTimes:
    """Wall seconds spent per stage outside ``SessionState`` (its own stage times are in its stats)."""

    audio_decode_s: float = 0.0
    video_decode_s: float = 0.0
    face_s: float = 0.0  # the real face tracker's time, in the video thread
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioChunk:
    """Consecutive 20 ms source frames joined: (N, C) s16 at the source rate, starting at ``t_s``."""

    samples: np.ndarray
    sample_rate: int
    channels: int
    t_s: float

    @property
    def end_s(self) -> float:
        return self.t_s + len(self.samples) / self.sample_rate


def audio_chunks(
    frames: Iterator[AudioFrame], grid_s: float, times: FeedTimes
) -> Iterator[AudioChunk]:
    """Join ``frames`` into chunks that end at the first frame end at or past each multiple of ``grid_s``
    (a change of rate or layout also ends a chunk); decode time goes to ``times.audio_decode_s``."""
    parts: list[np.ndarray] = []
    head: AudioFrame | None = None
    boundary: float | None = None
    while True:
        t = time.perf_counter()
        frame = next(frames, None)
        times.audio_decode_s += time.perf_counter() - t
        if frame is None:
            break
        if head is not None and (frame.sample_rate, frame.channels) != (head.sample_rate, head.channels):
            yield AudioChunk(np.concatenate(parts), head.sample_rate, head.channels, head.t_s)
            parts, head = [], None
        if head is None:
            head = frame
        if boundary is None:  # the first grid point after the first sample
            boundary = (math.floor(frame.t_s / grid_s + 1e-9) + 1) * grid_s
        parts.append(frame.samples)
        end = frame.t_s + len(frame.samples) / frame.sample_rate
        if end >= boundary - 1e-9:
            yield AudioChunk(np.concatenate(parts), head.sample_rate, head.channels, head.t_s)
            parts, head = [], None
            while boundary <= end + 1e-9:
                boundary += grid_s
    if head is not None:
        yield AudioChunk(np.concatenate(parts), head.sample_rate, head.channels, head.t_s)


class PrecomputedFaces:
    """A ``FaceTracker`` handing the state the observations the video thread computed, frame by frame."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._next: FaceObservation | None = None

    def expect(self, obs: FaceObservation | None) -> None:
        self._next = obs

    def process(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        obs, self._next = self._next, None
        if obs is None or abs(obs.t_s - t_s) > 1e-9:
            raise MediaError(f"replay: no precomputed face observation for the frame at {t_s:.3f} s")
        return obs

    def close(self) -> None:
        self._next = None


class _Slots:
    """``SessionState.push_video``'s rule: analyse a frame when it enters a new ``1 / fps`` slot."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._last_slot: int | None = None
        self._last_t: float | None = None

    def analysed(self, t_s: float) -> bool:
        if not math.isfinite(t_s) or (self._last_t is not None and t_s < self._last_t):
            return False
        self._last_t = t_s
        slot = math.floor(t_s * self.fps + 1e-6)
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True


class TrackerPool:
    """Face trackers kept between replays (building a face mesh costs ~0.3–0.5 s): ``take`` one, ``give``
    it back; a tracker without ``reset()`` (a fresh stream) is closed instead of kept."""

    def __init__(self) -> None:
        self._idle: dict[str, list[FaceTracker]] = {}
        self._lock = threading.Lock()

    def take(self, visual: VisualConfig) -> FaceTracker:
        with self._lock:
            idle = self._idle.get(visual.spec)
            if idle:
                return idle.pop()
        return make_face_tracker(visual)

    def give(self, tracker: FaceTracker) -> None:
        reset = getattr(tracker, "reset", None)
        if not callable(reset):
            tracker.close()
            return
        reset()
        with self._lock:
            self._idle.setdefault(tracker.spec, []).append(tracker)

    def warm(self, visual: VisualConfig) -> None:
        """Build one tracker now (during the model load); a spec without a tracker fails later, when a
        recording with video needs one, as it would without the pool."""
        try:
            self.give(self.take(visual))
        except ConfigError:
            return

    def close(self) -> None:
        with self._lock:
            trackers = [t for idle in self._idle.values() for t in idle]
            self._idle.clear()
        for tracker in trackers:
            tracker.close()


class VideoThread:
    """Decodes the video and runs the face tracker on the analysed frames, ahead of the audio path."""

    def __init__(
        self,
        src: MediaSource,
        visual: VisualConfig,
        max_s: float | None,
        times: FeedTimes,
        pool: TrackerPool | None = None,
    ) -> None:
        assert src.video is not None
        self._pool = pool or TrackerPool()
        self._path = src.video
        self._visual = visual
        self._max_s = max_s
        self._times = times
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._stop = threading.Event()
        self.done = threading.Event()  # every frame decoded and analysed (or it failed)
        self._thread = threading.Thread(target=self._run, name="replay-video", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        tracker: FaceTracker | None = None
        try:
            slots = _Slots(float(self._visual.analysis_fps))
            frames = iter_video(self._path, max_s=self._max_s, analysis_fps=float(self._visual.analysis_fps))
            while True:
                t = time.perf_counter()
                frame = next(frames, None)
                self._times.video_decode_s += time.perf_counter() - t
                if frame is None:
                    break
                obs = None
                if slots.analysed(frame.t_s):
                    if tracker is None:
                        tracker = self._pool.take(self._visual)
                    t = time.perf_counter()
                    obs = tracker.process(frame.rgb, frame.t_s)
                    self._times.face_s += time.perf_counter() - t
                if not self._put((VideoFrame(_NO_PIXELS, frame.t_s), obs)):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self.done.set()
            if tracker is not None:
                self._pool.give(tracker)

    def frames(self) -> Iterator[tuple[VideoFrame, FaceObservation | None]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class Sample:
    media_time_s: float
    values: dict[str, float]


def feed(
    state: Any,
    src: MediaSource,
    lines: Sequence[TranscriptLine],
    *,
    max_s: float | None,
    interval_s: float,
    window_s: float,
    faces: PrecomputedFaces | None,
    times: FeedTimes,
    on_video_done: Callable[[], None] | None = None,
    pool: TrackerPool | None = None,
) -> list[Sample]:
    """Push the whole recording into ``state`` (transcript lines once media time passes their end) and
    sample its indicators every ``interval_s`` of media time. ``faces`` is the state's face tracker
    (video analysed in a thread) or None (the state runs its own tracker on the video, in this thread);
    ``on_video_done`` is called once the video thread has finished."""
    visual: VisualConfig = state.config.visual
    # (time, kind, item): an audio chunk at its end time, kind 0, so that video frames inside it go first
    # and a frame at exactly its end goes after it (the live order: audio up to t, then the frame at t).
    streams: list[Iterator[tuple[float, int, Any]]] = []
    video: VideoThread | None = None
    if src.audio is not None:
        grid = interval_s / math.ceil(interval_s / CHUNK_S - 1e-9)  # a chunk boundary at every sample time
        chunks = audio_chunks(iter_audio(src.audio, max_s=max_s), grid, times)
        streams.append((c.end_s, 0, c) for c in chunks)  # after the video frames it spans
    if src.video is not None:
        if faces is not None:
            video = VideoThread(src, visual, max_s, times, pool)
            streams.append((f.t_s, 1, (f, obs)) for f, obs in video.frames())
        else:
            plain = iter_video(src.video, max_s=max_s, analysis_fps=float(visual.analysis_fps))
            streams.append((f.t_s, 1, (f, None)) for f in plain)
    if not streams:
        raise MediaError(f"{src.session_id}: nothing to decode (no audio, no video)")
    pending = sorted(lines, key=lambda ln: ln.end_s)
    k = 0
    series: list[Sample] = []
    next_sample = interval_s
    media_t = 0.0
    first_audio = True
    try:
        for _key, kind, item in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            if on_video_done is not None and video is not None and video.done.is_set():
                on_video_done()  # the video thread's core is free again
                on_video_done = None
            if kind == 0:
                # As the server: interleaved samples; continuous audio after the first chunk.
                state.push_audio(
                    item.samples.reshape(-1), item.sample_rate, channels=item.channels,
                    t_s=item.t_s if first_audio else None,
                )
                first_audio = False
                media_t = max(media_t, item.end_s)
            else:
                frame, obs = item
                if faces is not None:
                    faces.expect(obs)
                state.push_video(frame.rgb, frame.t_s)
                media_t = max(media_t, frame.t_s)
            while k < len(pending) and pending[k].end_s <= media_t:
                state.add_transcript(pending[k])
                k += 1
            while media_t >= next_sample:
                series.append(Sample(next_sample, dict(state.indicators(window_s=window_s))))
                next_sample += interval_s
    finally:
        if video is not None:
            video.close()
    for line in pending[k:]:
        state.add_transcript(line)
    return series


class Fast:
    """One replay's offline pipeline: the face tracker it hands the state, the feed, the transcript."""

    def __init__(
        self, visual: VisualConfig, src: MediaSource, opts: Any, transcriber: Any, pool: TrackerPool | None
    ) -> None:
        discard = getattr(transcriber, "discard", None)
        if callable(discard):  # a worker still holding segments of a replay that failed
            discard()
        self.src = src
        self.opts = opts
        self.times = FeedTimes()
        self.faces = PrecomputedFaces(visual.spec) if src.video is not None else None
        self.pool = pool

    def run(self, state: Any, lines: Sequence[TranscriptLine]) -> list[Any]:
        """Feed the recording; the indicator series as ``replay.IndicatorSample``."""
        import torch

        from client_sdk.replay import IndicatorSample

        # While the video thread works it takes a core: torch's intra-op threads would spin against it
        # (measured: the demo encoder 5-10x slower on a busy 2-core machine); they come back as soon as
        # the video is done (a HuBERT-base encoder outlasts the video: 8.5x vs 5.9x real time).
        threads = torch.get_num_threads()
        spare = self.faces is not None and threads > 1 and SPARE_A_CORE
        if spare:
            torch.set_num_threads(threads - 1)
        try:
            series = feed(
                state, self.src, lines, max_s=self.opts.max_s, interval_s=self.opts.indicator_interval_s,
                window_s=self.opts.indicator_window_s, faces=self.faces, times=self.times,
                on_video_done=(lambda: torch.set_num_threads(threads)) if spare else None,
                pool=self.pool,
            )
        finally:
            torch.set_num_threads(threads)
        return [IndicatorSample(s.media_time_s, s.values) for s in series]

    def collect_transcript(self, state: Any, transcriber: Any) -> None:
        """After ``flush``: the worker's speech-to-text lines into ``state`` (a no-op for inline ones)."""
        collect = getattr(transcriber, "collect", None)
        if not callable(collect):
            return
        got = collect()
        for line in got.lines:
            state.add_transcript(line)
        self.times.extra.update(
            speech_to_text_s=got.busy_s, speech_to_text_wait_s=got.wait_s,
            speech_to_text_errors=float(got.errors),
        )
