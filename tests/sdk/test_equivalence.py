"""Live = replay: a file published live through the server and the same file replayed offline give the
same stored features, within a stated tolerance.

The server runs in-process with its real ``CoreEngine`` over the tiny bundle; the engine is wrapped
only to keep a copy of each session's features when the server closes the session state (what it
stored for the session). Differences left between the two paths are the WebRTC codecs (Opus audio at
48 kHz stereo, VP8 video) versus the file's own decode, and Opus' few ms of delay.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client_sdk.replay import Replayer
from client_sdk.session import Session
from client_sdk.synth import SyntheticRecording
from mllmdr_core.frames import FloatArray

from .server_fixture import API_KEY, run_server, sdk_settings

# Stated tolerances (see the module docstring for where the differences come from).
MIN_AUDIO_COSINE = 0.95  # mean cosine of pooled audio frames (HuBERT ⊕ prosody) at the same media times
MIN_VISUAL_COSINE = 0.98  # mean cosine of visual vectors (mediapipe-face-v1) at the same analysis slots
MAX_SLOT_COUNT_DIFF = 2  # pooled audio frames (5 Hz) in one but not the other (Opus delay at the edges)
MIN_VISUAL_SLOTS = 8  # analysis slots (5 fps) found in both, of 30
MAX_SPEECH_RATIO_DIFF = 0.05


class _KeepingState:
    """Delegates to the real SessionState; before close() copies out its stored features per time slot.

    Slots are 1 / pool_hz (audio) and 1 / analysis_fps (video) wide, read back with the public
    ``features(start_s, end_s)``, so live and replay are compared at the same media times even when
    the live server dropped video frames under load.
    """

    def __init__(self, inner: Any, kept: dict[str, Any]) -> None:
        self._inner = inner
        self._kept = kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        inner = self._inner
        if "audio" not in self._kept and not getattr(inner, "_closed", False):
            inner.flush()  # end of stream (replay flushes too); the assessment is already made
            cfg = inner.config
            end = float(inner.media_time_s) + 1.0
            self._kept.update(
                audio=_slots(inner, cfg.audio.pool_hz, end, 0),
                visual=_slots(inner, cfg.visual.analysis_fps, end, 1),
                indicators=dict(inner.indicators(window_s=1e6)),
                stats=dict(inner.stats),
            )
        inner.close()


def _slots(state: Any, rate: float, end_s: float, which: int) -> dict[int, FloatArray]:
    out: dict[int, FloatArray] = {}
    for k in range(int(end_s * rate) + 1):
        frames = state.features(k / rate, (k + 1) / rate)[which]
        if len(frames):
            out[k] = frames[0]
    return out


class _KeepingEngine:
    """The server's real engine; only new_state is wrapped (to keep the features at close)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.kept: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def new_state(self, session_id: str) -> Any:
        return _KeepingState(self._inner.new_state(session_id), self.kept.setdefault(session_id, {}))


class _KeepingAssessor:
    """The replay's real Assessor; only new_session_state is wrapped, as for the server."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.kept: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def new_session_state(self, session_id: str, transcriber: object | None = None, **kw: Any) -> Any:
        inner = self._inner.new_session_state(session_id, transcriber=transcriber, **kw)
        return _KeepingState(inner, self.kept)


def _compare(live: dict[int, FloatArray], replay: dict[int, FloatArray]) -> tuple[int, float]:
    """(number of slots in both, mean cosine over them)."""
    common = sorted(set(live) & set(replay))
    if not common:
        return 0, 0.0
    a = np.stack([live[k] for k in common])
    b = np.stack([replay[k] for k in common])
    return len(common), _mean_cosine(a, b)


def _mean_cosine(a: FloatArray, b: FloatArray) -> float:
    n = min(len(a), len(b))
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    num = np.sum(x * y, axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    both_zero = den == 0
    cos = np.where(both_zero, 1.0, num / np.where(both_zero, 1.0, den))
    return float(np.mean(cos))


async def test_live_features_equal_replay(
    tmp_path: Path, engine: Any, tiny_bundle: Path, recording: SyntheticRecording
) -> None:
    assert recording.video is not None
    keeping = _KeepingEngine(engine)
    async with (
        run_server(sdk_settings(tmp_path), keeping) as url,
        await Session.create(url, API_KEY) as session,
    ):
        await session.publish_file(recording.video)
        for line in recording.lines:
            await session.send_caption(
                line.text, speaker=line.speaker, start_s=line.start_s, end_s=line.end_s
            )
        await session.wait_media_ended(timeout_s=30)
        await asyncio.sleep(1.0)
        live_final = await session.end()
    live = keeping.kept[session.session_id]
    replayer = Replayer(tiny_bundle)
    keeper = _KeepingAssessor(replayer.assessor)
    replayer.assessor = keeper  # type: ignore[assignment]
    replay = await asyncio.to_thread(replayer.replay, recording.video)
    offline = keeper.kept
    n_audio, audio_cos = _compare(live["audio"], offline["audio"])
    n_visual, visual_cos = _compare(live["visual"], offline["visual"])
    report = {
        "audio_slots": (len(live["audio"]), len(offline["audio"]), n_audio),
        "visual_slots": (len(live["visual"]), len(offline["visual"]), n_visual),
        "audio_cosine": round(audio_cos, 4),
        "visual_cosine": round(visual_cos, 4),
        "speech_ratio": (live["indicators"].get("speech_ratio"), offline["indicators"].get("speech_ratio")),
        "live_video_dropped": live["stats"].get("video_frames_dropped"),
    }
    print("live vs replay:", report)
    # audio is never dropped live (bounded queue of 60 s): every pooled slot is in both
    assert abs(len(live["audio"]) - len(offline["audio"])) <= MAX_SLOT_COUNT_DIFF, report
    assert n_audio >= len(offline["audio"]) - MAX_SLOT_COUNT_DIFF, report
    assert audio_cos >= MIN_AUDIO_COSINE, report
    # video may be dropped live when analysis falls behind; compare the slots analysed in both
    assert n_visual >= MIN_VISUAL_SLOTS, report
    assert visual_cos >= MIN_VISUAL_COSINE, report
    assert abs(live["indicators"]["speech_ratio"] - offline["indicators"]["speech_ratio"]) <= (
        MAX_SPEECH_RATIO_DIFF
    ), report
    assert live_final is not None and live_final.kind == replay.assessment.kind == "final"
    assert [ln.text for ln in replay.transcript] == [ln.text for ln in recording.lines]


def test_cosine_helper() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    assert _mean_cosine(a, a) == pytest.approx(1.0)
    assert _mean_cosine(a, np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)) == pytest.approx(0.5)
