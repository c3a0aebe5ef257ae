"""``MediaIngest``: after a restart, media time continues where the session stopped (issue 21 item 8)."""

from __future__ import annotations

import time

import numpy as np

from stream_server.ingest import QueuedAudio
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
