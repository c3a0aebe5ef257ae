"""WebRTC publishing for the Python SDK: media sources → one aiortc peer connection, re-offered on loss.

Sources are aiortc tracks: from a recording via ``MediaPlayer`` (any container ffmpeg reads, or a wav
+ y4m pair), from a camera/microphone device, or tracks you made. They are fed through a
``MediaRelay`` so that, when the peer connection fails (network loss), a new connection re-offers the
same live sources to the same session; media produced while disconnected is not sent (as in a call).
Each connection asks ``ice_servers`` (the server's STUN/TURN list, fresh TURN credentials) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mllmdr_core.errors import MediaError, MllmdrError
from stream_server.protocol import AudioProcessingIn, IceServer, Offer, TrackRole, to_rtc

Channel = Literal["left", "right"]

log = logging.getLogger("client_sdk.publisher")


@dataclass
class TrackSources:
    """The local tracks to publish and the players that own them."""

    audio: Any = None  # aiortc MediaStreamTrack (kind "audio"): the patient
    video: Any = None  # aiortc MediaStreamTrack (kind "video")
    players: list[Any] = field(default_factory=list)
    interviewer: Any = None  # aiortc audio track: the interviewer (two-party capture), labelled in the offer

    def tracks(self) -> list[Any]:
        return [t for t in (self.audio, self.video, self.interviewer) if t is not None]

    def ended(self) -> bool:
        tracks = self.tracks()
        return bool(tracks) and all(t.readyState == "ended" for t in tracks)

    def stop(self) -> None:
        for track in self.tracks():
            track.stop()


class _StereoSplit:
    """Reads a stereo track once and hands each channel, as a mono frame, to its ``ChannelTrack``."""

    MAX_QUEUED = 250  # frames (5 s of 20 ms) a consumer may fall behind before its oldest are dropped

    def __init__(self, source: Any) -> None:
        self.source = source
        self.queues: dict[int, list[Any]] = {0: [], 1: []}
        self._lock = asyncio.Lock()

    async def next(self, channel: int) -> Any:
        async with self._lock:
            if not self.queues[channel]:
                frame = await self.source.recv()  # MediaStreamError at the end: the channel track ends
                for ch, frames in self.queues.items():
                    frames.append(mono_channel(frame, ch))
                    del frames[: max(0, len(frames) - self.MAX_QUEUED)]
            return self.queues[channel].pop(0)


def mono_channel(frame: Any, channel: int) -> Any:
    """One channel of a packed s16 stereo ``av.AudioFrame`` as a mono frame (same pts and rate)."""
    import av

    data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
    if data.shape[1] < 2:
        raise MediaError("a recording with one party per channel needs stereo audio")
    mono = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data[:, channel]).reshape(1, -1), format="s16", layout="mono"
    )
    mono.sample_rate, mono.pts, mono.time_base = frame.sample_rate, frame.pts, frame.time_base
    return mono


def channel_tracks(stereo: Any, interviewer: Channel) -> tuple[Any, Any]:
    """A stereo aiortc audio track → (patient track, interviewer track), one party per channel."""
    from aiortc.mediastreams import MediaStreamTrack

    split = _StereoSplit(stereo)

    class ChannelTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, channel: int) -> None:
            super().__init__()
            self.channel = channel

        async def recv(self) -> Any:
            try:
                return await split.next(self.channel)
            except Exception:
                self.stop()
                raise

    theirs = 0 if interviewer == "left" else 1
    return ChannelTrack(1 - theirs), ChannelTrack(theirs)


def file_sources(
    path: str | Path,
    *,
    video: str | Path | None = None,
    loop: bool = False,
    interviewer_channel: Channel | None = None,
    interviewer: str | Path | None = None,
) -> TrackSources:
    """Tracks from a recording: one file with audio and/or video, or an audio file + a video file
    (``video=``, or a same-stem ``.y4m`` beside a ``.wav``). Two-party recordings: one party per stereo
    channel (``interviewer_channel`` names the interviewer's), or the interviewer's own audio file
    (``interviewer=``)."""
    from aiortc.contrib.media import MediaPlayer

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: no such file")
    second = Path(video) if video is not None else None
    if second is None and p.suffix.lower() == ".wav" and p.with_suffix(".y4m").is_file():
        second = p.with_suffix(".y4m")
    try:
        main = MediaPlayer(str(p), loop=loop)
        players = [main]
        out = TrackSources(audio=main.audio, video=main.video, players=players)
        if second is not None:
            extra = MediaPlayer(str(second), loop=loop)
            players.append(extra)
            out.video = extra.video
    except (OSError, ValueError) as exc:
        raise MediaError(f"{p}: cannot open for publishing: {exc}") from exc
    if out.audio is None and out.video is None:
        raise MediaError(f"{p}: holds neither audio nor video")
    if interviewer_channel is not None:
        if out.audio is None:
            raise MediaError(f"{p}: no audio to split into the two parties' channels")
        out.audio, out.interviewer = channel_tracks(out.audio, interviewer_channel)
    elif interviewer is not None:
        q = Path(interviewer)
        if not q.is_file():
            raise MediaError(f"{q}: no such file")
        try:
            theirs = MediaPlayer(str(q), loop=loop)
        except (OSError, ValueError) as exc:
            raise MediaError(f"{q}: cannot open for publishing: {exc}") from exc
        if theirs.audio is None:
            raise MediaError(f"{q}: holds no audio")
        out.players.append(theirs)
        out.interviewer = theirs.audio
    return out


def camera_sources(
    video_device: str | None = "default",
    audio_device: str | None = "default",
    *,
    size: str = "640x480",
    fps: int = 15,
) -> TrackSources:
    """Tracks from local devices: v4l2 + pulse on Linux, avfoundation on macOS, dshow on Windows.

    ``video_device`` ``"default"`` is ``/dev/video0`` on Linux; ``None`` skips the camera or microphone.
    """
    from aiortc.contrib.media import MediaPlayer

    system = platform.system()
    options = {"video_size": size, "framerate": str(fps)}
    out = TrackSources()
    try:
        if system == "Darwin":
            cam = "default" if video_device in (None, "default") else video_device
            mic = "default" if audio_device in (None, "default") else audio_device
            spec = (
                f"{cam if video_device is not None else 'none'}:{mic if audio_device is not None else 'none'}"
            )
            player = MediaPlayer(spec, format="avfoundation", options=options)
            out.players.append(player)
            out.audio, out.video = player.audio, player.video
            return out
        if video_device is not None:
            if system == "Windows":
                player = MediaPlayer(f"video={video_device}", format="dshow", options=options)
            else:
                dev = "/dev/video0" if video_device == "default" else video_device
                player = MediaPlayer(dev, format="v4l2", options=options)
            out.players.append(player)
            out.video = player.video
        if audio_device is not None:
            fmt = "dshow" if system == "Windows" else "pulse"
            name = f"audio={audio_device}" if system == "Windows" else audio_device
            player = MediaPlayer(name, format=fmt)
            out.players.append(player)
            out.audio = player.audio
    except (OSError, ValueError) as exc:
        raise MediaError(
            f"cannot open the camera/microphone ({video_device}, {audio_device}): {exc}"
        ) from exc
    return out


OfferFn = Callable[[Offer], Awaitable[dict[str, Any]]]
# what this SDK reports for each audio track it publishes: files and devices are read as they are
# (aiortc applies no echo cancellation, noise suppression or gain control)
UNPROCESSED = AudioProcessingIn(
    source="python_sdk", echo_cancellation=False, noise_suppression=False, auto_gain_control=False
)
IceServersFn = Callable[[], Awaitable[list[IceServer]]]


def rtc_configuration(servers: list[IceServer]) -> Any:
    """aiortc ``RTCConfiguration`` for the server's ICE servers (aiortc uses one STUN and one TURN URL)."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=to_rtc(servers))


class Publisher:
    """One publishing peer connection to the server, replaced by a new offer when it fails."""

    def __init__(
        self,
        offer: OfferFn,
        *,
        reconnect: bool = True,
        reconnect_timeout_s: float = 20.0,
        ice_servers: IceServersFn | None = None,
    ) -> None:
        self._offer = offer
        self._ice_servers = ice_servers
        self.reconnect = reconnect
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sources: TrackSources | None = None
        self.pc: Any = None
        self._relay: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._byes: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self.error: MllmdrError | None = None
        self.state = "new"

    async def start(self, sources: TrackSources) -> None:
        """Connect and start sending ``sources`` (raises on the first failure)."""
        if self.sources is not None:
            raise MediaError("this session is already publishing; end it or use a new session")
        from aiortc.contrib.media import MediaRelay

        self.sources = sources
        self._relay = MediaRelay()
        try:
            await self._connect()
        except BaseException:
            sources.stop()
            raise
        self._watch = asyncio.ensure_future(self._watchdog())

    async def _connect(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        assert self.sources is not None and self._relay is not None
        servers = await self._ice_servers() if self._ice_servers is not None else []
        pc = RTCPeerConnection(rtc_configuration(servers))
        self.pc = pc
        self._lost.clear()

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            self.state = pc.connectionState
            if pc is self.pc and pc.connectionState in ("failed", "closed") and not self._closed:
                self._lost.set()

        for track in (self.sources.audio, self.sources.video):
            if track is not None:
                pc.addTrack(self._relay.subscribe(track))
        labels: dict[str, TrackRole] = {}
        if self.sources.interviewer is not None:
            sender = pc.addTrack(self._relay.subscribe(self.sources.interviewer))
            labels[sender.track.id] = "interviewer"  # the msid track id the server reads
        for sender in pc.getSenders():
            self._bye_when_ended(pc, sender)
        await pc.setLocalDescription(await pc.createOffer())
        roles: list[TrackRole] = ["patient"] if self.sources.audio is not None else []
        roles += ["interviewer"] if self.sources.interviewer is not None else []
        processing = {role: UNPROCESSED for role in roles}
        answer = await self._offer(
            Offer(sdp=pc.localDescription.sdp, tracks=labels, audio_processing=processing)
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    def _bye_when_ended(self, pc: Any, sender: Any) -> None:
        """When a source ends (a file sent to its end) stop its sender, which sends RTCP BYE: the server
        then knows the track ended and does not take the silence after it for a lost publisher."""

        @sender.track.on("ended")
        def _ended() -> None:
            if pc is self.pc and not self._closed:
                task = asyncio.ensure_future(sender.stop())
                self._byes.add(task)
                task.add_done_callback(self._byes.discard)

    async def _watchdog(self) -> None:
        while not self._closed:
            await self._lost.wait()
            if self._closed:
                return
            if not self.reconnect:
                self.error = MediaError("WebRTC connection lost")
                return
            if self.sources is not None and self.sources.ended():
                return  # sent to the end: nothing left to re-offer (the session is ended next)
            log.info("publisher connection %s; re-offering", self.state)
            with contextlib.suppress(Exception):
                await self.pc.close()
            deadline = time.monotonic() + self.reconnect_timeout_s
            delay = 0.25
            while not self._closed:
                try:
                    await self._connect()
                    self.reconnects += 1
                    break
                except MllmdrError as exc:
                    code = getattr(exc, "code", "")
                    if code in ("not_found", "session_closed", "auth_failed", "forbidden", "token_expired"):
                        self.error = exc
                        return
                    if time.monotonic() > deadline:
                        self.error = exc
                        return
                    log.info("re-offer failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def drop_connection(self) -> None:
        """Close the current peer connection as a network loss would (tests, manual failover)."""
        if self.pc is not None:
            await self.pc.close()

    async def wait_ended(self, poll_s: float = 0.2) -> None:
        """Return once every source track has ended (a file was sent to its end)."""
        while self.sources is not None and not self.sources.ended() and not self._closed:
            if self.error is not None:
                raise self.error
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        """Stop sending and release the tracks and connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._lost.set()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.pc is not None:
            await self.pc.close()
        if self.sources is not None:
            self.sources.stop()
