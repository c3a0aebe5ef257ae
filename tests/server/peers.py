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


async def publish_two_party(
    http: httpx.AsyncClient,
    session_id: str,
    token: str,
    patient: Path,
    interviewer: Path,
    *,
    label: str | None = "interviewer",
) -> list[Publisher]:
    """Offer the patient's and the interviewer's audio as two tracks; ``label`` (or None: m-line order,
    the second audio track is the interviewer's) names the second one's role by its msid track id."""
    players = [MediaPlayer(str(patient)), MediaPlayer(str(interviewer))]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(players[0].audio)
    sender = pc.addTrack(players[1].audio)
    await pc.setLocalDescription(await pc.createOffer())
    body: dict[str, object] = {"sdp": pc.localDescription.sdp, "type": "offer"}
    if label is not None:
        body["tracks"] = {sender.track.id: label}
    r = await http.post(
        f"/v1/sessions/{session_id}/offer", headers={"Authorization": f"Bearer {token}"}, json=body
    )
    if r.status_code != 200:
        await pc.close()
        raise AssertionError(f"offer refused: {r.status_code} {r.text}")
    await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    return [Publisher(pc, players[0]), Publisher(pc, players[1])]
