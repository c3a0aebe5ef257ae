"""``MediaIngest``: after a restart, media time continues where the session stopped (issue 21 item 8)."""

from __future__ import annotations

import time

import av
import numpy as np
from skimage import data

from stream_server.ingest import QueuedAudio, QueuedVideo
from stream_server.live.events import SessionEvents
from stream_server.live.media import MediaIngest
from stream_server.live.state import GuardedState
from stream_server.services import Services


def _ingest(services: Services) -> MediaIngest:
    state = GuardedState(services.engine.new_state("s_test"))
    events = SessionEvents("s_test", services, link=lambda: (False, frozenset()))
    return MediaIngest("s_test", services, state, events)


def _second_of_tone() -> list[QueuedAudio]:
    t = np.arange(16000) / 16000
    samples = (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return [QueuedAudio(samples, 16000, 1, time.monotonic())]


async def test_resumed_media_time_continues(services: Services) -> None:
    fresh = _ingest(services)
    fresh._process(_second_of_tone(), [])
    assert 0.5 < fresh.media_time_s < 1.5  # a new session starts at 0

    resumed = _ingest(services)
    resumed.resume_at(12.0)
    resumed._process(_second_of_tone(), [])
    resumed._process(_second_of_tone(), [])
    assert 13.5 < resumed.media_time_s < 14.5
    with resumed.state.locked() as state:
        assert state.media_time_s == resumed.media_time_s  # the analysis state itself continued


async def test_thinned_frames_reach_the_eye_pass_as_luma(services: Services) -> None:
    """The worker hands the analysed frame (RGB for the mesh, its luma for the eye reference) and the
    thinned-out ones (luma only) to the state in time order; every one gets an eye-openness value."""
    face = np.ascontiguousarray(data.astronaut())
    frames = [av.VideoFrame.from_ndarray(face, format="rgb24").reformat(format="yuv420p") for _ in range(12)]
    now = time.monotonic()
    kept = [QueuedVideo(frames[0], 0.0, now)]
    thinned = [QueuedVideo(f, k / 30.0, now) for k, f in enumerate(frames[1:], start=1)]
    ingest = _ingest(services)
    ingest._process([], kept, None, thinned[::-1])
    with ingest.state.locked() as state:
        stats = state.stats
        eye = [v for _, v in state._tracker._eye]
    assert stats["video_frames_analysed"] == 1 and stats["faces_found"] == 1 and stats["eye_frames"] == 12
    assert len(eye) == 12 and all(0.9 < v < 1.1 for v in eye)  # a still face with open eyes: ≈ 1
