"""Odd and corrupt media through the server's analysis path with the real core engine: each case is
analysed or refused with a typed error event, the server stays healthy, and the session still ends with a
final assessment.

Frames are put into the session's ingest queues exactly as ``stream_server.ingest.TrackDrain`` does after
RTP decode (aiortc's decoders cannot be made to emit most of these shapes over a real peer); one case
goes over a real aiortc peer connection (8 kHz mono audio + 16x16 video, encoded by aiortc).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from server.conftest import RunningServer

from stream_server.ingest import QueuedAudio, QueuedVideo

from .conftest import healthy

RATE = 48000


def _tone(rate: int, seconds: float, channels: int = 1, amp: float = 3000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (amp * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return np.repeat(mono, channels) if channels > 1 else mono


def _video(width: int, height: int, t_s: float, value: int = 128) -> QueuedVideo:
    rgb = np.full((height, width, 3), value, np.uint8)
    return QueuedVideo(av.VideoFrame.from_ndarray(rgb, format="rgb24"), t_s, time.monotonic())


def _audio(samples: np.ndarray, rate: int, channels: int) -> list[QueuedAudio]:
    """20 ms frames (the last may be short), interleaved as aiortc delivers them."""
    step = rate * channels // 50
    return [
        QueuedAudio(samples[i : i + step], rate, channels, time.monotonic())
        for i in range(0, max(len(samples), 1), step)
    ]


def _raw(samples: np.ndarray, rate: int, channels: int) -> QueuedAudio:
    return QueuedAudio(samples, rate, channels, time.monotonic())


def _cases() -> dict[str, Callable[[float], tuple[list[QueuedAudio], list[QueuedVideo]]]]:
    square = np.where(np.sin(np.arange(RATE * 2) / 20) > 0, 32767, -32768).astype(np.int16)
    return {
        "zero-size audio frames": lambda t: (
            [QueuedAudio(np.zeros(0, np.int16), RATE, 2, time.monotonic())] * 5,
            [],
        ),
        "1x1 video": lambda t: ([], [_video(1, 1, t + i * 0.2) for i in range(5)]),
        "2x2 and odd 641x479 video": lambda t: ([], [_video(2, 2, t), _video(641, 479, t + 0.2)]),
        "1920x1080 video": lambda t: ([], [_video(1920, 1080, t, value=30)]),
        "8 kHz mono": lambda t: (_audio(_tone(8000, 2.0), 8000, 1), []),
        "silence 48 kHz stereo": lambda t: (_audio(np.zeros(RATE * 2 * 2, np.int16), RATE, 2), []),
        "clipping square wave": lambda t: (_audio(np.repeat(square, 2), RATE, 2), []),
        "sample-rate changes mid-stream": lambda t: (
            _audio(_tone(RATE, 0.5, 2), RATE, 2)
            + _audio(_tone(16000, 0.5), 16000, 1)
            + _audio(_tone(44100, 0.5, 2), 44100, 2)
            + _audio(_tone(8000, 0.5), 8000, 1)
            + _audio(_tone(RATE, 0.5, 2), RATE, 2),
            [],
        ),
        "6-channel audio": lambda t: (_audio(_tone(RATE, 1.0, 6), RATE, 6), []),
        "video timestamps going backwards": lambda t: (
            [],
            [_video(64, 48, max(0.0, t - k)) for k in range(4)],
        ),
        "odd-length interleaved stereo": lambda t: (
            [QueuedAudio(_tone(RATE, 0.02, 2)[:-1], RATE, 2, time.monotonic())],
            [],
        ),
    }


async def _drain(live: Any) -> None:
    for _ in range(3000):
        if not live.ingest.queues.audio and not live.ingest.queues.video:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the batch the worker took


async def test_odd_media_is_analysed_or_refused_with_a_typed_error(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    live = server.app.state.server.manager.sessions[sid]
    outcomes: Counter[str] = Counter()
    for name, make in _cases().items():
        errors_before = len(clin.of("error"))
        audio, video = make(float(live.media_time_s))
        for a in audio:
            live.ingest.queues.put_audio(a)
        for v in video:
            live.ingest.queues.put_video(v)
        live.ingest.queues.wake.set()
        await _drain(live)
        await live.feed.emit()
        await clin.wait("indicators", sum(outcomes.values()) + 1, timeout=30)
        new_errors = clin.of("error")[errors_before:]
        assert all(e["code"] in ("media_invalid",) and e["fatal"] is False for e in new_errors), (
            name,
            new_errors,
        )
        values = clin.of("indicators")[-1]["values"]
        assert all(np.isfinite(v) for v in values.values()), (name, values)
        outcomes["refused (media_invalid)" if new_errors else "analysed"] += 1
        if new_errors:
            print(f"odd media: {name!r} refused: {new_errors[0]['message'][:120]}")
        await healthy(server)
    print(f"odd media: {len(_cases())} cases, {dict(outcomes)}")
    assert not [e for e in clin.of("error") if e["code"] == "internal"]
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert r.json()["state"] == "closed" and r.json()["assessment"]["kind"] == "final"
    await clin.close()


class _SyntheticTrack(MediaStreamTrack):  # type: ignore[misc]
    """8 kHz mono tone (audio) or 16x16 grey frames (video), paced in real time."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self._start is None:
            self._start = time.monotonic()
        if self.kind == "audio":
            samples = _tone(8000, 0.02).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = 8000
            frame.pts, frame.time_base = self._n * 160, fractions.Fraction(1, 8000)
            due = self._n * 0.02
        else:
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 100, np.uint8), format="rgb24")
            frame.pts, frame.time_base = self._n * 6000, fractions.Fraction(1, 90000)
            due = self._n / 15
        self._n += 1
        await asyncio.sleep(max(0.0, self._start + due - time.monotonic()))
        return frame


async def test_8khz_mono_and_tiny_video_over_a_real_peer(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(_SyntheticTrack("audio"))
    pc.addTrack(_SyntheticTrack("video"))
    await pc.setLocalDescription(await pc.createOffer())
    r = await server.http.post(
        f"/v1/sessions/{sid}/offer",
        headers=server.bearer(s["publisher_token"]),
        json={"sdp": pc.localDescription.sdp, "type": "offer"},
    )
    assert r.status_code == 200, r.text
    await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    events = await clin.wait("indicators", 2, timeout=60)
    assert events[-1]["media_time_s"] > 0
    assert not clin.of("error")
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert r.json()["assessment"]["kind"] == "final"
    await pc.close()
    await clin.close()
    await healthy(server)
