"""A loopback aiortc publisher fed from a media file (real peer connection, real codecs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


@dataclass
class Publisher:
    pc: RTCPeerConnection
    player: MediaPlayer | None

    async def close(self) -> None:
        await self.pc.close()
        if self.player is not None:
            for track in (self.player.audio, self.player.video):
                if track is not None:
                    track.stop()


async def publish(
    http: httpx.AsyncClient,
    session_id: str,
    token: str,
    media: Path,
    *,
    audio: bool = True,
    video: bool = True,
) -> Publisher:
    """Offer ``media``'s tracks to the session; returns once the answer is applied."""
    player = MediaPlayer(str(media))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if audio and player.audio is not None:
        pc.addTrack(player.audio)
    if video and player.video is not None:
        pc.addTrack(player.video)
    await pc.setLocalDescription(await pc.createOffer())
    r = await http.post(
        f"/v1/sessions/{session_id}/offer",
        headers={"Authorization": f"Bearer {token}"},
        json={"sdp": pc.localDescription.sdp, "type": "offer"},
    )
    if r.status_code != 200:
        await pc.close()
        raise AssertionError(f"offer refused: {r.status_code} {r.text}")
    await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    return Publisher(pc, player)
