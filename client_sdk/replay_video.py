"""The video side of the offline replay: decode and face tracking in a thread, handed to the state.

:class:`VideoThread` decodes the recording's video (``iter_video``: the ingest's thinning, the
thinned-out frames included for the eye pass), applies ``SessionState.push_video``'s slot rule
(:class:`_Slots`), runs the face tracker on the frames the state will analyse and the eye-openness pass
(``features/eye_openness.py``) on every frame, as the server's ingest does (its thinned-out frames go to
``SessionState.push_eye_frame``). :class:`PrecomputedFaces` is the state's face tracker and hands it
those observations in order; the openness values go to ``SessionState.add_eye``. :class:`TrackerPool`
keeps face trackers between replays.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.features.eye_openness import EyeOpenness
from mllmdr_core.features.face import FaceObservation, FaceTracker, make_face_tracker
from mllmdr_core.media import MediaSource, VideoFrame, iter_video

_QUEUE_FRAMES = 1 << 20  # the thread runs ahead freely: items are a time and an observation, no pixels
_NO_PIXELS = np.zeros((1, 1, 3), np.uint8)  # what the state gets: its face tracker is PrecomputedFaces
_END = object()


@dataclass
class FeedTimes:
    """Wall seconds spent per stage outside ``SessionState`` (its own stage times are in its stats)."""

    audio_decode_s: float = 0.0
    video_decode_s: float = 0.0
    face_s: float = 0.0  # the real face tracker's time, in the video thread
    eye_s: float = 0.0  # the eye-openness pass's time, in the video thread
    extra: dict[str, float] = field(default_factory=dict)


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
        eyes = EyeOpenness()
        try:
            slots = _Slots(float(self._visual.analysis_fps))
            frames = iter_video(
                self._path, max_s=self._max_s, analysis_fps=float(self._visual.analysis_fps), eye_frames=True
            )
            while True:
                t = time.perf_counter()
                frame = next(frames, None)
                self._times.video_decode_s += time.perf_counter() - t
                if frame is None:
                    break
                obs = None
                if frame.kept and slots.analysed(frame.t_s):
                    if tracker is None:
                        tracker = self._pool.take(self._visual)
                    t = time.perf_counter()
                    obs = tracker.process(frame.rgb, frame.t_s)
                    self._times.face_s += time.perf_counter() - t
                t = time.perf_counter()
                openness = None
                if self._visual.eye_pass:  # on every frame's luma plane, as the server's ingest
                    if obs is not None:
                        eyes.reference(frame.eye_image, obs.landmarks if obs.present else None)
                    openness = eyes.measure(frame.eye_image) if math.isfinite(frame.t_s) else None
                self._times.eye_s += time.perf_counter() - t
                if not self._put((VideoFrame(_NO_PIXELS, frame.t_s, frame.kept), obs, openness)):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self.done.set()
            if tracker is not None:
                self._pool.give(tracker)

    def frames(self) -> Iterator[tuple[VideoFrame, FaceObservation | None, float | None]]:
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
