"""The offline feed of one recording into ``SessionState``, arranged for speed (replay's inner loop).

Same features as the live path (``tests/sdk/test_equivalence.py``), three differences in *how*:

- **Audio in larger chunks.** The 20 ms frames the server pushes are joined into 200 ms chunks that
  end on the indicator-sampling grid (``indicator_interval_s``). Resampling is chunk-independent (the
  polyphase resampler equals ``resample_poly`` of the whole signal), VAD runs on fixed ``vad.frame_ms`` frames
  and the encoder on a fixed window grid, so the features are the same, and Python's per-call cost is
  paid 10× less often. Longer chunks were measured slower (the resampler's gather leaves the cache),
  so a chunk completes at most one encoder window: windows are not batched beyond that.
- **Video beside the audio** (``client_sdk/replay_video.py``). A thread decodes the video, keeps
  the frames the state will analyse (its ``1 / analysis_fps`` slot rule, applied to the frames the
  ingest's thinning kept) and runs the face tracker on them; decoding (PyAV) and the face mesh
  (mediapipe) release the GIL, so on two cores the audio path and the video path overlap. The state
  gets those observations through :class:`PrecomputedFaces`, in the same order, from the same
  tracker: the same vectors (the queue holds times and observations, not pixels, so the thread may
  run ahead without a memory bound).
- **Timing per stage** (decode, face tracker) is measured where it runs and returned with the series.

Frames that are not analysed are still decoded (inter frames need their references; measured on a
60-s 640x480 h264 file: 0.17 s for all 900 frames, ``skip_frame="NONREF"`` no faster, ``"NONKEY"``
only the keyframes); the RGB conversion is skipped for frames the ingest's thinning drops
(``iter_video``).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.replay_video import FeedTimes, PrecomputedFaces, TrackerPool, VideoThread
from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import MediaError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.media import AudioFrame, MediaSource, iter_audio, iter_video

CHUNK_S = 0.2  # audio chunk length (measured: longer chunks resample slower, the gather leaves the cache)
SPARE_A_CORE = True  # torch runs one thread fewer while the video thread works (see Fast.run)


@dataclass
class IndicatorSample:
    """The live indicators at one media time of a replay (the series replay writes)."""

    media_time_s: float
    values: dict[str, float]


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
            streams.append((f.t_s, 1, (f, obs, eye)) for f, obs, eye in video.frames())
        else:
            fps = float(visual.analysis_fps)
            plain = iter_video(src.video, max_s=max_s, analysis_fps=fps, eye_frames=True)
            streams.append((f.t_s, 1, (f, None, None)) for f in plain)
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
                frame, obs, eye = item
                if not frame.kept:  # thinned out of the analysis rate: the eye-openness pass only
                    if faces is not None:
                        state.add_eye(frame.t_s, eye)
                    else:
                        state.push_eye_frame(frame.eye_image, frame.t_s)
                    continue
                if faces is not None:
                    faces.expect(obs)
                state.push_video(frame.rgb, frame.t_s, eye=frame.luma)
                if faces is not None:
                    state.add_eye(frame.t_s, eye)
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
        """Feed the recording; the indicator series as ``IndicatorSample``."""
        import torch

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
