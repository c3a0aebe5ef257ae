"""SDP offer checks (stream_server/sdp_check.py): a real aiortc offer passes; each rule, broken on its
own, is refused as ``bad_sdp`` naming it; through the server, refused offers leave no background error."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from server.conftest import RunningServer

from mllmdr_core.errors import ProtocolError
from stream_server.sdp_check import check_offer_sdp, usable_fingerprint

from .conftest import healthy


@pytest.fixture
async def offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def _sub(sdp: str, pattern: str, repl: str) -> str:
    out, n = re.subn(pattern, repl, sdp, flags=re.MULTILINE)
    assert n > 0, pattern  # the mutation really happened
    return out


def _rule_of(sdp: str) -> str:
    with pytest.raises(ProtocolError) as info:
        check_offer_sdp(sdp)
    assert info.value.code == "bad_sdp"
    return str(info.value).split(":", 1)[0]


def test_a_real_aiortc_offer_passes(offer: str) -> None:
    check_offer_sdp(offer)
    check_offer_sdp(offer.replace("\r\n", "\n"))  # bare LF line ends are tolerated
    # only sha-256 left (browsers send just that) is enough; so is one session-level fingerprint
    only256 = _sub(offer, r"^a=fingerprint:sha-(384|512) .*\r\n", "")
    check_offer_sdp(only256)
    fp = re.search(r"^a=fingerprint:sha-256 [^\r\n]*", offer, re.MULTILINE)
    assert fp is not None
    no_media_fp = _sub(offer, r"^a=fingerprint:.*\r\n", "")
    check_offer_sdp(no_media_fp.replace("t=0 0\r\n", f"t=0 0\r\n{fp.group().strip()}\r\n", 1))


@pytest.mark.parametrize(
    ("pattern", "repl", "rule"),
    [
        (r"\Av=0\r\n", "", "version"),
        (r"\Av=0", "v=1", "version"),
        (r"^s=-", "s -", "syntax"),
        (r"^a=setup:", "A=setup:", "syntax"),
        (r"^a=fingerprint:.*\r\n", "", "fingerprint"),
        (r"^a=fingerprint:sha-\d+ ", "a=fingerprint:md5 ", "fingerprint"),
        (r"^a=fingerprint:sha-\d+ ", "a=fingerprint:sha-999 ", "fingerprint"),
        (r"^(a=fingerprint:sha-\d+) \S+", r"\1 ZZ:ZZ", "fingerprint"),
        (r"^(a=fingerprint:sha-\d+) (\S+):\S\S(?=\r)", r"\1 \2", "fingerprint"),  # one hex pair short
        (r"^a=ice-ufrag:[^\r\n]*", "a=ice-ufrag:a", "ice-ufrag"),
        (r"^a=ice-ufrag:[^\r\n]*", "a=ice-ufrag:" + "u" * 257, "ice-ufrag"),
        (r"^a=ice-ufrag:[^\r\n]*", "a=ice-ufrag:ab cd", "ice-ufrag"),
        (r"^a=ice-ufrag:.*\r\n", "", "ice-ufrag"),
        (r"^a=ice-pwd:[^\r\n]*", "a=ice-pwd:abcd", "ice-pwd"),
        (r"^a=ice-pwd:[^\r\n]*", "a=ice-pwd:" + "p" * 257, "ice-pwd"),
        (r"^a=ice-pwd:.*\r\n", "", "ice-pwd"),
        (r"^m=audio \d+", "m=audio 70000", "port"),
        (r"^m=video \d+", "m=video -1", "port"),
        (r"^m=video \d+", "m=video 99999999999999999999", "port"),
        (r"^m=audio [^\r\n]*", "m=audio 9", "port"),
        (r"^a=rtcp:\d+", "a=rtcp:65536", "port"),
        (r"^(a=candidate:\S+ 1 udp \d+ \S+) \d+", r"\1 99999", "candidate"),
        (r"^(a=candidate:\S+) 1 ", r"\1 0 ", "candidate"),
        (r"^(a=candidate:\S+ 1 udp) \d+", r"\1 99999999999", "candidate"),
        (r" typ host(?=\r)", " host", "candidate"),
        (r" typ host(?=\r)", " typ host rport 70000", "candidate"),
        (r"^a=candidate:[^\r\n]*", "a=candidate:garbage", "candidate"),
    ],
)
def test_each_rule_refuses_its_mutation_and_names_itself(
    offer: str, pattern: str, repl: str, rule: str
) -> None:
    assert _rule_of(_sub(offer, pattern, repl)) == rule


def test_one_media_section_without_a_fingerprint_is_enough_to_refuse(offer: str) -> None:
    audio, video = offer.split("m=video", 1)
    video = re.sub(r"^a=fingerprint:.*\r\n", "", video, flags=re.MULTILINE)
    with pytest.raises(ProtocolError, match=r"fingerprint: media section 1 \(video\)"):
        check_offer_sdp(audio + "m=video" + video)


def test_usable_fingerprint() -> None:
    assert usable_fingerprint("sha-256 " + ":".join(["AB"] * 32))
    assert usable_fingerprint("SHA-512 " + ":".join(["0f"] * 64))
    assert not usable_fingerprint("sha-1 " + ":".join(["AB"] * 20))
    assert not usable_fingerprint("sha-256 " + ":".join(["AB"] * 31))
    assert not usable_fingerprint("sha-256 " + "AB" * 32)
    assert not usable_fingerprint("sha-256")


async def test_refused_offers_get_bad_sdp_and_leave_no_background_error(
    server: RunningServer, offer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    s = await server.create_session()
    sid, pub = s["session_id"], server.bearer(s["publisher_token"])
    bad = {
        "fingerprint": _sub(offer, r"^a=fingerprint:.*\r\n", ""),
        "port": _sub(offer, r"^m=audio \d+", "m=audio 70000"),
        "candidate": _sub(offer, r"^(a=candidate:\S+ 1 udp \d+ \S+) \d+", r"\1 99999"),
        "ice-pwd": _sub(offer, r"^a=ice-pwd:[^\r\n]*", "a=ice-pwd:abcd"),
    }
    for rule, sdp in bad.items():
        r = await server.http.post(
            f"/v1/sessions/{sid}/offer", headers=pub, json={"sdp": sdp, "type": "offer"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "bad_sdp"
        assert r.json()["error"]["message"].startswith(f"{rule}:")
    await asyncio.sleep(1.0)  # background tasks of a half-negotiated connection would fail by now
    await healthy(server)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    info = (await server.http.get(f"/v1/sessions/{sid}", headers=server.api())).json()
    assert info["state"] == "created" and info["publisher_connected"] is False
