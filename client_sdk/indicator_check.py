"""A recording's whole-session panel indicators through one of the two feeds, without a model.

``live``: the server's frame-by-frame loop (``replay._push_all``: 20-ms audio frames, the ingest's video
thinning, thinned-out frames to the eye-openness pass, all in the state); ``replay``: the offline pipeline
(``replay_pipeline.feed``: 200-ms audio chunks, video decode + face tracker + eye pass in a thread). Both
push into a fresh ``SessionState`` built from ``config`` with ``encoder`` (any HuBERT: indicators read
only the prosody and VAD, which do not depend on it). Used by ``bench/panel_indicators.py`` and its test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from client_sdk.replay import ReplayOptions, _push_all
from client_sdk.replay_pipeline import feed
from client_sdk.replay_video import FeedTimes, PrecomputedFaces
from mllmdr_core.config import MllmdrConfig
from mllmdr_core.features.encoder import StreamingHubertEncoder
from mllmdr_core.media import MediaSource
from mllmdr_core.session_state import SessionState

Mode = Literal["live", "replay"]
# Stated tolerance, live loop vs offline pipeline of one file (the same decoded media, different audio
# chunking and threading), absolute, in each indicator's unit; measured differences were 0.
LIVE_REPLAY_TOL = {
    "head_pitch_deg": 0.1, "head_motion": 0.1, "blink_rate_per_min": 0.5, "smile_ratio": 0.01,
    "speech_level_db": 0.1, "speech_level_sd_db": 0.1, "speech_ratio": 0.01, "f0_mean_hz": 0.5,
}
# Bounds on |measured − planted| on the planted sessions (training/synth/planted.py), bench and test.
MAX_ABS_ERROR = {
    "head_pitch_deg": 6.0, "head_motion": 1.5, "blink_rate_per_min": 2.0, "smile_ratio": 0.1,
    "speech_level_db": 3.0, "speech_level_sd_db": 1.5,
}


@dataclass
class IndicatorRun:
    values: dict[str, float]  # whole-session indicators (NaN: not available)
    unavailable: dict[str, str]
    media_s: float
    wall_s: float
    face_s: float  # face mesh (analysed frames)
    eye_s: float  # eye-openness pass (every frame)
    eye_frames: int
    analysed_frames: int


def measure_indicators(src: MediaSource, config: MllmdrConfig, hubert: Any, mode: Mode) -> IndicatorRun:
    """Feed ``src`` through ``mode``; the indicators over the whole session after the stream ends."""
    faces = PrecomputedFaces(config.visual.spec) if mode == "replay" and src.video is not None else None
    state = SessionState(
        config, session_id=src.session_id, audio_encoder=StreamingHubertEncoder(config.audio, hubert),
        face_tracker=faces,  # replay: the state's tracker hands it the video thread's observations
    )
    times = FeedTimes()
    started = time.perf_counter()
    try:
        if mode == "live":
            _push_all(state, src, [], ReplayOptions(), float(config.visual.analysis_fps))
        else:
            feed(
                state, src, [], max_s=None, interval_s=5.0, window_s=30.0, faces=faces, times=times,
            )
        state.flush()
        media_s = float(state.media_time_s)
        values = state.indicators(window_s=media_s)
        unavailable = state.unavailable(window_s=media_s)
        stats = state.stats
    finally:
        state.close()
    return IndicatorRun(
        values={k: float(v) for k, v in values.items()},
        unavailable=unavailable,
        media_s=media_s,
        wall_s=time.perf_counter() - started,
        face_s=float(stats["face_s"]) + times.face_s,
        eye_s=float(stats["eye_s"]) + times.eye_s,
        eye_frames=int(stats["eye_frames"]),
        analysed_frames=int(stats["video_frames_analysed"]),
    )
