"""Ingest helpers on real PyAV frames: layouts, scaling, bounded queues with drop counters."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from stream_server.engine import CoreEngine
from stream_server.ingest import (
    MediaQueues,
    QueuedAudio,
    QueuedVideo,
    TrackDrain,
    audio_frame_to_array,
    video_frame_to_rgb,
)
from stream_server.settings import Settings


def _audio_frame(fmt: str, layout: str, samples: np.ndarray, rate: int = 48000) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def test_audio_frames_become_interleaved_arrays() -> None:
    left = np.arange(960, dtype=np.int16)
    right = -left
    packed = np.stack([left, right], axis=1).reshape(1, -1)  # s16 packed: (1, N*C) interleaved
    q = audio_frame_to_array(_audio_frame("s16", "stereo", packed))
    assert (q.sample_rate, q.channels, q.samples.shape) == (48000, 2, (1920,))
    assert np.array_equal(q.samples[:4], [0, 0, 1, -1])
    planar = np.stack([left, right]).astype(np.float32) / 32768  # fltp: (C, N)
    q = audio_frame_to_array(_audio_frame("fltp", "stereo", planar, rate=44100))
    assert (q.sample_rate, q.channels) == (44100, 2)
    assert np.allclose(q.samples[:4] * 32768, [0, 0, 1, -1])
    mono = audio_frame_to_array(_audio_frame("s16", "mono", left.reshape(1, -1), rate=8000))
    assert (mono.channels, mono.samples.shape) == (1, (960,))


def test_video_frames_are_scaled_to_analysis_width() -> None:
    big = av.VideoFrame.from_ndarray(np.full((720, 1280, 3), 200, np.uint8), format="rgb24").reformat(
        format="yuv420p"
    )
    rgb = video_frame_to_rgb(big)
    assert rgb.shape == (360, 640, 3) and rgb.dtype == np.uint8 and abs(int(rgb.mean()) - 200) <= 2
    tiny = av.VideoFrame.from_ndarray(np.zeros((2, 2, 3), np.uint8), format="rgb24").reformat(
        format="yuv420p"
    )
    assert video_frame_to_rgb(tiny).shape == (2, 2, 3)


async def test_queues_are_bounded_and_count_drops() -> None:
    q = MediaQueues(audio_max=5, video_max=2)
    audio = [QueuedAudio(np.zeros(10, np.int16), 48000, 1, time.monotonic()) for _ in range(8)]
    dropped = [q.put_audio(a) for a in audio]
    assert dropped == [False] * 5 + [True] * 3 and q.audio_dropped == 3 and len(q.audio) == 5
    assert list(q.audio) == audio[3:]  # the oldest went first
    frame = av.VideoFrame(width=16, height=16, format="yuv420p")
    for i in range(5):
        q.put_video(QueuedVideo(frame, float(i), time.monotonic()))
    assert q.video_dropped == 3 and [v.t_s for v in q.video] == [3.0, 4.0]
    assert q.wake.is_set()
    a, v = q.take(max_audio=4)
    assert len(a) == 4 and len(v) == 2 and len(q.audio) == 1 and not q.video


class _FrameTrack:
    """A remote video track stand-in: ``n`` real PyAV frames at 30 fps, then the end of the stream."""

    kind = "video"

    def __init__(self, n: int) -> None:
        self._frames = []
        for i in range(n):
            frame = av.VideoFrame(width=16, height=16, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            self._frames.append(frame)

    async def recv(self) -> av.VideoFrame:
        if not self._frames:
            raise MediaStreamError
        return self._frames.pop(0)


async def test_thinned_frames_go_to_the_bounded_eye_queue() -> None:
    """The analysis rate keeps 1 frame in 12 (2.5 fps of 30); every other frame goes to the eye pass's
    queue (bounded, oldest dropped and counted) instead of being discarded."""
    q = MediaQueues(audio_max=5, video_max=100)
    drain = TrackDrain(
        _FrameTrack(60), q, time_base_s=0.0, analysis_fps=2.5, on_frame=lambda k: None,
        on_drop=lambda k, n: None,
    )
    await drain._run()
    kept = [round(v.t_s, 3) for v in q.video]
    assert kept == [0.0, 0.367, 0.733, 1.1, 1.467, 1.833]  # the ingest's thinning, unchanged
    assert len(q.eye) + q.eye_dropped == 60 - len(kept) and len(q.eye) == min(54, q.eye_max)
    eye = q.take_eye()
    assert all(t.t_s not in kept for t in eye) and not q.eye and q.wake.is_set()
    q.eye_max = 3
    for item in eye[:5]:
        q.put_eye(item)
    assert [v.t_s for v in q.eye] == [v.t_s for v in eye[2:5]] and q.eye_dropped == 2
    q.clear()
    assert not q.eye


async def test_eye_pass_off_lets_thinned_frames_go() -> None:
    """``visual.eye_pass`` off (server setting ``eye_pass``): the analysis rate's frames as before, the
    thinned-out ones are not queued for anything."""
    q = MediaQueues(audio_max=5, video_max=100)
    drain = TrackDrain(
        _FrameTrack(60), q, time_base_s=0.0, analysis_fps=2.5, on_frame=lambda k: None,
        on_drop=lambda k, n: None, eye_pass=False,
    )
    await drain._run()
    assert [round(v.t_s, 3) for v in q.video] == [0.0, 0.367, 0.733, 1.1, 1.467, 1.833]
    assert not q.eye and q.eye_dropped == 0 and q.video_dropped == 0


def test_server_setting_turns_the_bundles_eye_pass_off(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLMDR_EYE_PASS", "0")
    assert Settings.from_env().eye_pass is False and Settings().eye_pass is True
    engine = CoreEngine(tiny_bundle, eye_pass=False)
    try:
        assert engine.config.visual.eye_pass is False
        state = engine.new_state("s")
        frame = np.full((64, 64, 3), 90, np.uint8)
        for k in range(10):
            state.push_video(frame, k / 30.0)
        state.push_eye_frame(frame, 0.5)
        stats = state.stats  # type: ignore[attr-defined]
        assert stats["eye_frames"] == 0 and stats["video_frames_in"] == 10
    finally:
        engine.close()
