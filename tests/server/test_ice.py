"""Configured STUN/TURN: start-up validation, coturn REST credentials, real aiortc peers using them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from client_sdk.session import Session
from mllmdr_core.errors import ConfigError
from stream_server.engine import Engine
from stream_server.ice import credentials_expire_at, ice_servers_for, turn_rest_credentials
from stream_server.protocol import IceServer, to_rtc
from stream_server.settings import Settings

from .conftest import API_KEY, make_settings, run_server
from .turn_probe import TurnProbe


def test_turn_rest_credentials_are_coturns_hmac_scheme() -> None:
    # expected value from: printf '%s' "1764163600:s_3f9c2a7e1b" | openssl dgst -sha1 -hmac \
    #   north-wind-secret -binary | base64
    username, credential = turn_rest_credentials("north-wind-secret", "s_3f9c2a7e1b", 3600, now=1764160000.4)
    assert username == "1764163600:s_3f9c2a7e1b"
    assert credential == "SC0wPvBvIuoBDdDWfzKnbbZep3k="


def test_ice_servers_for_mints_only_where_needed() -> None:
    settings = Settings(
        ice_servers=[
            IceServer(urls=["stun:stun.example.org"]),
            IceServer(urls=["turn:turn.example.org:3478", "turns:turn.example.org:443?transport=tcp"]),
            IceServer(urls="turn:static.example.org", username="u", credential="p"),
        ],
        turn_secret="s3cret",
        turn_ttl_s=600,
    )
    stun, minted, static = ice_servers_for(settings, "s_a", now=1000.0)
    assert stun == IceServer(urls=["stun:stun.example.org"])
    assert minted.username == "1600:s_a"
    assert minted.credential == turn_rest_credentials("s3cret", "s_a", 600, now=1000)[1]
    assert (static.username, static.credential) == ("u", "p")
    assert ice_servers_for(settings, "s_b", now=1000.0)[1].username == "1600:s_b"  # per session
    assert credentials_expire_at(settings, now=1000.0) == 1600.0
    assert credentials_expire_at(Settings(ice_servers=[IceServer(urls=["stun:x"])])) is None
    rtc = to_rtc(ice_servers_for(settings, "s_a", now=1000.0))
    assert [r.urls for r in rtc][1] == [
        "turn:turn.example.org:3478",
        "turns:turn.example.org:443?transport=tcp",
    ]


@pytest.mark.parametrize(
    ("raw", "secret", "message"),
    [
        ('[{"urls": "turn:t.example.org"', None, "MLLMDR_ICE_SERVERS is not valid JSON"),
        ('{"urls": "stun:s.example.org"}', None, "must be a JSON list"),
        ('[{"username": "u"}]', None, "ice_servers.0.urls"),
        ('[{"urls": []}]', None, "ice_servers.0.urls"),
        ('[{"urls": ["http://turn.example.org"]}]', None, "'http://turn.example.org' is not a STUN/TURN URL"),
        ('[{"urls": ["turn:t.example.org:99999"]}]', None, "is not a STUN/TURN URL"),
        ('[{"urls": ["turn:t.example.org?transport=sctp"]}]', None, "is not a STUN/TURN URL"),
        ('[{"urls": ["turn:t.example.org"]}]', None, "TURN server without username/credential"),
        ('[{"urls": ["turn:t.example.org"], "username": "u"}]', "x", "username and credential together"),
        ('[{"urls": ["stun:s.example.org"], "password": "p"}]', None, "ice_servers.0.password"),
    ],
)
def test_malformed_ice_servers_fail_at_start_up_with_config_error(
    monkeypatch: pytest.MonkeyPatch, raw: str, secret: str | None, message: str
) -> None:
    monkeypatch.setenv("MLLMDR_ICE_SERVERS", raw)
    monkeypatch.setenv("MLLMDR_API_KEY", "key-must-not-leak")
    if secret:
        monkeypatch.setenv("MLLMDR_TURN_SECRET", secret)
    with pytest.raises(ConfigError) as err:
        Settings.from_env()
    assert message in str(err.value) and err.value.code == "config_invalid"
    assert "key-must-not-leak" not in str(err.value)


def test_ice_servers_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MLLMDR_ICE_SERVERS",
        '[{"urls": "stun:[2001:db8::1]:3478"}, {"urls": ["turn:t.example.org:3478?transport=udp"]}]',
    )
    monkeypatch.setenv("MLLMDR_TURN_SECRET", "s3cret")
    monkeypatch.setenv("MLLMDR_TURN_TTL_S", "900")
    settings = Settings.from_env()
    assert [s.urls for s in settings.ice_servers] == [
        ["stun:[2001:db8::1]:3478"],
        ["turn:t.example.org:3478?transport=udp"],
    ]
    assert settings.turn_secret == "s3cret" and settings.turn_ttl_s == 900
    monkeypatch.setenv("MLLMDR_ICE_SERVERS", " ")
    assert Settings.from_env().ice_servers == []  # set but empty: none
    rtc = to_rtc(ice_servers_for(settings, "s_x"))
    assert [r.urls for r in rtc] == [["turn:t.example.org:3478?transport=udp"]]  # aiortc: no IPv6 literals


async def test_peers_use_configured_turn_and_still_connect_on_loopback(
    tmp_path: Path, engine: Engine, recording: Path
) -> None:
    """The server's and the SDK publisher's aiortc peers both try the configured TURN server with
    per-session credentials (the probe checks them as coturn would, then refuses); media flows directly."""
    async with TurnProbe(secret="probe-secret") as turn:
        settings = make_settings(
            tmp_path, ice_servers=[IceServer(urls=[turn.url])], turn_secret="probe-secret", turn_ttl_s=900
        )
        async with run_server(settings, engine) as server:
            t0 = time.time()
            async with await Session.create(server.base, API_KEY) as session:
                sid = session.session_id
                assert session.created is not None
                [given] = session.created.ice_servers
                assert given.urls == [turn.url] and given.username is not None
                expiry, named = given.username.split(":", 1)
                assert named == sid and int(t0) + 900 <= int(expiry) <= time.time() + 900

                # the refresh endpoint: publisher token or API key, never a clinician token
                token = {"Authorization": f"Bearer {session.created.clinician_token}"}
                r = await server.http.get(f"/v1/sessions/{sid}/ice-servers", headers=token)
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
                r = await server.http.get(f"/v1/sessions/{sid}/ice-servers", headers=server.api())
                assert r.status_code == 200 and r.json()["ice_servers"][0]["username"].endswith(f":{sid}")
                assert r.json()["expires_at"] == pytest.approx(time.time() + 900, abs=5)

                events = await server.events(sid, session.created.clinician_token)
                t1 = time.perf_counter()
                await session.publish_file(recording)
                await events.wait("indicators", 1, timeout=30)
                print(
                    f"\n[ice] publish → first indicators, TURN configured: {time.perf_counter() - t1:.2f} s"
                )
                assert session.publisher.state == "connected"
                await session.end()
                await events.close()
            published = len(turn.attempts)
            assert all(a.username.endswith(f":{sid}") for a in turn.attempts)

            # the server's own peer connection: a peer offering with no ICE servers at all
            other = await server.create_session()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            before = len(turn.attempts)
            r = await server.http.post(
                f"/v1/sessions/{other['session_id']}/offer",
                headers=server.bearer(other["publisher_token"]),
                json={"sdp": pc.localDescription.sdp, "type": "offer"},
            )
            assert r.status_code == 200, r.text
            await pc.close()
            assert [a.username.split(":", 1)[1] for a in turn.attempts[before:]] == [other["session_id"]]
        # the server's answer makes one relay attempt (above), so the SDK publisher made the others
        assert published >= 2, turn.attempts
        # every relay request carried credentials coturn would accept
        assert all(a.integrity_ok for a in turn.attempts), turn.attempts
