"""The publisher's side: the aiortc peer connection, offers and re-offers, track drains, reconnect grace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from stream_server.ice import ice_servers_for
from stream_server.ingest import TrackDrain
from stream_server.live.events import SessionEvents
from stream_server.live.media import MediaIngest
from stream_server.live.tasks import TaskSet
from stream_server.protocol import Answer, Offer, protocol_error, to_rtc
from stream_server.sdp_check import check_offer_sdp
from stream_server.services import Services

log = logging.getLogger("stream_server.session")


class PublisherConnection:
    """At most one live peer; a new offer replaces it. Reports ``connected`` / ``lost`` / ``gone`` upward."""

    def __init__(
        self,
        session_id: str,
        services: Services,
        ingest: MediaIngest,
        events: SessionEvents,
        *,
        on_connected: Callable[[], Awaitable[None]],
        on_lost: Callable[[str], Awaitable[None]],
        on_gone: Callable[[], None],
    ) -> None:
        self.session_id = session_id
        self.svc = services
        self.ingest = ingest
        self.events = events
        self.pc: RTCPeerConnection | None = None
        self.drains: list[TrackDrain] = []
        self.tasks = TaskSet(f"{session_id}:connection")
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._on_gone = on_gone

    @property
    def connected(self) -> bool:
        return self.pc is not None

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(d.kind for d in self.drains)

    @property
    def in_grace(self) -> bool:
        return self.tasks.running("grace")

    def silent(self, timeout_s: float) -> bool:
        """Every track still open has gone ``timeout_s`` without a frame. False without drains, and when
        the publisher ended all its tracks (a file sent to its end: RTCP BYE), which is no sign of a lost
        publisher: it ends the session next, or its peer's ICE consent lapses (``docs/server.md``)."""
        now = time.monotonic()
        open_drains = [d for d in self.drains if not d.ended]
        return bool(open_drains) and all(now - d.last_frame_at > timeout_s for d in open_drains)

    async def accept(self, offer: Offer) -> Answer:
        """Answer ``offer``; the whole negotiation happens before the new peer replaces the current one."""
        check_offer_sdp(offer.sdp)  # bad_sdp naming the rule, before aiortc parses it
        ice = to_rtc(ice_servers_for(self.svc.settings, self.session_id))  # configured STUN/TURN, fresh
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        kinds: list[str] = []
        received: list[Any] = []
        new_drains: list[TrackDrain] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            kinds.append(track.kind)
            if track.kind in ("audio", "video"):
                received.append(track)

        def make_drains() -> None:  # after the remote description: every track and its mid are known
            if not received:
                raise ValueError("offer has no audio or video track")
            roles = audio_roles(pc, [t for t in received if t.kind == "audio"], offer.tracks)
            for track in received:
                new_drains.append(self.ingest.drain_for(track, roles.get(id(track), "patient")))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            if pc.connectionState == "connected":
                await self._on_connected()
            elif pc.connectionState in ("failed", "closed"):
                await self._on_lost(f"connection {pc.connectionState}")

        await self._negotiate(pc, offer, make_drains)
        await self.drop()
        self.pc, self.drains = pc, new_drains
        for d in new_drains:
            d.start()
        self.tasks.cancel("grace")
        if "audio" not in kinds:
            await self.events.warn(
                "no_audio_track", "publisher sent no audio track: no speech indicators", once=False
            )
        if any(d.role == "interviewer" for d in new_drains) and self.ingest.interviewer is None:
            await self.events.warn(
                "interviewer_not_transcribed",
                "the interviewer's track is received but not transcribed: this server runs without "
                "speech-to-text (transcript source captions)",
            )
        if "video" not in kinds:
            await self.events.warn(
                "no_video_track", "publisher sent no video track: no facial indicators", once=False
            )
        local = pc.localDescription
        return Answer(sdp=local.sdp, type="answer")

    @staticmethod
    async def _negotiate(pc: RTCPeerConnection, offer: Offer, make_drains: Callable[[], None]) -> None:
        """Remote offer → local answer. A bad offer (aiortc raises ValueError/KeyError/... at any step,
        or the track roles do not fit) closes ``pc`` and answers ``bad_sdp``, never a 500; the publisher
        that is live stays untouched."""
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
            make_drains()
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            with contextlib.suppress(Exception):
                await pc.close()
            raise protocol_error("bad_sdp", f"cannot use SDP offer: {type(exc).__name__}: {exc}") from exc

    async def drop(self) -> None:
        """Stop the current peer's drains and close it (no-op without one)."""
        drains, self.drains = self.drains, []
        pc, self.pc = self.pc, None
        for d in drains:
            await d.stop()
        if pc is not None:
            try:
                await pc.close()
            except Exception:
                log.warning("session %s: closing the peer connection failed", self.session_id, exc_info=True)

    def start_grace(self, seconds: float) -> None:
        """Wait ``seconds`` for a re-offer; then report the publisher gone."""
        self.tasks.start("grace", self._grace(seconds))

    async def _grace(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.pc is None:
            self._on_gone()

    async def aclose(self) -> None:
        """Idempotent: grace timer cancelled, drains stopped, peer closed."""
        await self.tasks.aclose()
        await self.drop()


def audio_roles(pc: RTCPeerConnection, audio: list[Any], labels: Mapping[str, str]) -> dict[int, str]:
    """``id(track)`` → role for the offer's audio tracks (see ``protocol.Offer``): a label, keyed by the
    transceiver mid or the msid track id, wins; unlabelled tracks in m-line order are the patient's,
    then the interviewer's. ``ValueError`` for a role given twice or a third audio track."""
    mids = {id(t.receiver.track): str(t.mid) for t in pc.getTransceivers() if t.receiver.track is not None}
    roles: dict[int, str] = {}
    for track in audio:
        role = labels.get(mids.get(id(track), "")) or labels.get(str(track.id))
        if role is not None:
            roles[id(track)] = role
    for track in audio:
        if id(track) not in roles:
            free = [r for r in ("patient", "interviewer") if r not in roles.values()]
            if not free:
                raise ValueError("more audio tracks than roles (one patient, one interviewer)")
            roles[id(track)] = free[0]
    taken = list(roles.values())
    for role in ("patient", "interviewer"):
        if taken.count(role) > 1:
            raise ValueError(f"two audio tracks labelled {role}")
    return roles
