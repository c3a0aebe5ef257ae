"""Sessions that end (issue 21 item 7): unused sessions expire, an orphaned live session is finalised
(marked partial) after the reconnect grace, and a file that ends normally ends without a
``publisher_lost`` detour."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from server.conftest import API_KEY, run_server
from server.peers import publish

from client_sdk.session import Session
from client_sdk.synth import make_recording

from .conftest import healthy, make_settings


async def test_unused_session_expires_and_used_one_stays(tmp_path: Path, engine: Any) -> None:
    async with run_server(make_settings(tmp_path, unused_session_ttl_s=1.5), engine) as srv:
        unused, used = await srv.create_session(), await srv.create_session()
        r = await srv.http.post(
            f"/v1/sessions/{used['session_id']}/captions",
            json={"text": "hello", "start_s": 0, "end_s": 1},
            headers=srv.bearer(used["publisher_token"]),
        )
        assert r.status_code == 200
        clin = await srv.events(unused["session_id"], unused["clinician_token"])
        closed = await clin.wait("session.closed", timeout=15)
        assert closed[0]["reason"] == "expired" and closed[0]["final_assessment"] is False
        assert not clin.of("assessment.result")
        await asyncio.wait_for(clin.closed.wait(), 5)
        info = (await srv.http.get(f"/v1/sessions/{unused['session_id']}", headers=srv.api())).json()
        assert info["state"] == "closed"
        info = (await srv.http.get(f"/v1/sessions/{used['session_id']}", headers=srv.api())).json()
        assert info["state"] == "created"  # a caption came: not expired
        await healthy(srv)


async def test_unused_session_expires_with_its_tokens(tmp_path: Path, engine: Any) -> None:
    async with run_server(make_settings(tmp_path), engine) as srv:  # unused_session_ttl_s: 900 s
        s = await srv.create_session(ttl_s=10)
        sid = s["session_id"]
        state = ""
        for _ in range(60):  # its tokens (and the sockets opened with them) end at 10 s: so does it
            await asyncio.sleep(0.5)
            state = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.api())).json()["state"]
            if state == "closed":
                break
        assert state == "closed"
        export = (await srv.http.get(f"/v1/sessions/{sid}/export", headers=srv.api())).json()
        closed = [e for e in export["events"] if e["type"] == "session.closed"]
        assert closed and closed[0]["reason"] == "expired" and export["assessment"] is None


async def test_publisher_that_never_returns_gets_a_partial_final(
    tmp_path: Path, engine: Any, recording: Path
) -> None:
    async with run_server(make_settings(tmp_path, reconnect_grace_s=1.0), engine) as srv:
        s = await srv.create_session()
        sid = s["session_id"]
        clin = await srv.events(sid, s["clinician_token"])
        pub = await publish(srv.http, sid, s["publisher_token"], recording)
        await clin.wait("indicators", 1, timeout=60)
        await pub.close()  # the publisher goes away and never re-offers
        closed = await clin.wait("session.closed", timeout=60)
        assert closed[0]["reason"] == "publisher_gone" and closed[0]["partial"] is True
        assert closed[0]["final_assessment"] is True and clin.of("assessment.result")
        assert [w["code"] for w in clin.of("warning")].count("publisher_lost") == 1
        info = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.api())).json()
        assert info["state"] == "closed" and info["final_assessment"]["kind"] == "final"


async def test_sdk_file_that_ends_normally_ends_without_publisher_lost(
    tmp_path: Path, engine: Any, recording: Path
) -> None:
    """The SDK ends the session before it closes its peer connection (2 of 8 runs went ``reconnecting``)."""
    async with run_server(make_settings(tmp_path, reconnect_grace_s=30.0), engine) as srv:
        for slow_close in (False, True):
            async with await Session.create(srv.base, API_KEY) as session:
                clin = await srv.events(session.session_id, session.created.clinician_token)  # type: ignore[union-attr]
                await session.publish_file(recording)
                if slow_close:  # the peer's close reaches the server well before anything sent after it
                    publisher = session._publisher
                    close = publisher.close

                    async def close_then_wait(close: Any = close) -> None:
                        await close()
                        await asyncio.sleep(1.5)

                    publisher.close = close_then_wait
                final = await session.end(timeout_s=60)
                assert final is not None and final.kind == "final"
                closed = await clin.wait("session.closed", timeout=30)
                assert closed[0]["reason"] == "ended" and closed[0]["partial"] is False
                states = [e["state"] for e in clin.of("session.status")]
                assert "reconnecting" not in states, states
                assert "publisher_lost" not in [w["code"] for w in clin.of("warning")]
                await clin.close()


@pytest.fixture(scope="module")
def short_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5 s synthetic interview (h264/aac mp4)."""
    rec = make_recording(tmp_path_factory.mktemp("short"), duration_s=2.5, fps=15, size=(320, 240))
    assert rec.video is not None
    return rec.video


async def test_file_sent_to_its_end_never_goes_reconnecting(
    tmp_path: Path, engine: Any, short_recording: Path
) -> None:
    """8 SDK publishes of a 2.5 s file, each to its end, then ``end()``: at once (the old race: the peer's
    close reached the server before the end request) or after a pause longer than ``media_timeout_s``
    (the silence after a file's end read as a lost publisher). The SDK stops each finished track's
    sender (RTCP BYE); the server does not count ended tracks as silent. Every run: live → ending →
    closed, no ``publisher_lost``."""
    media_timeout_s = 1.5
    settings = make_settings(tmp_path, media_timeout_s=media_timeout_s, reconnect_grace_s=30.0)
    async with run_server(settings, engine) as srv:
        for run in range(8):
            pause_s = 0.0 if run % 2 == 0 else media_timeout_s + 1.0
            async with await Session.create(srv.base, API_KEY) as session:
                clin = await srv.events(session.session_id, session.created.clinician_token)  # type: ignore[union-attr]
                await session.publish_file(short_recording)
                await session.wait_media_ended(timeout_s=30)
                await asyncio.sleep(pause_s)
                final = await session.end(timeout_s=60)
                assert final is not None and final.kind == "final"
                closed = await clin.wait("session.closed", timeout=30)
                states = [e["state"] for e in clin.of("session.status")]
                assert states == ["live", "ending", "closed"], (run, pause_s, states)
                assert "publisher_lost" not in [w["code"] for w in clin.of("warning")], run
                assert closed[0]["reason"] == "ended" and closed[0]["partial"] is False
                assert closed[0]["media_time_s"] > 2.0  # the whole file was received
                assert session.publisher.reconnects == 0
                await clin.close()
