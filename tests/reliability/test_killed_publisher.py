"""A publisher process killed with SIGKILL (no BYE, no DTLS close, no end request) does not leave its
session ``live``: silence (``media_timeout_s``) or, once its tracks had ended, the peer's ICE consent
(RFC 7675) puts it in ``reconnecting``; after ``reconnect_grace_s`` the final is marked partial."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from server.conftest import RunningServer, run_server

from .conftest import healthy, make_settings

SCRIPT = Path(__file__).with_name("sdk_publisher_process.py")


async def _kill_publisher(srv: RunningServer, recording: Path, mode: str) -> tuple[str, Any, float]:
    """Start the SDK publisher process, SIGKILL it once the session has media (and, ``to_end``, once
    the file has ended); returns the session id, its clinician's events and the kill time."""
    s = await srv.create_session()
    sid = s["session_id"]
    clin = await srv.events(sid, s["clinician_token"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        srv.base,
        sid,
        s["publisher_token"],
        str(recording),
        mode,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == (b"ended" if mode == "to_end" else b"publishing"), line
        await clin.wait("indicators", 2, timeout=60)
        assert [e["state"] for e in clin.of("session.status")] == ["live"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    return sid, clin, time.monotonic()


async def _expect_partial_final(
    srv: RunningServer, sid: str, clin: Any, killed: float, lost_by_s: float, detail: str
) -> None:
    lost = await clin.wait("session.status", pred=lambda e: e["state"] == "reconnecting", timeout=lost_by_s)
    lost_after = time.monotonic() - killed
    assert lost[0]["detail"].startswith(detail), lost[0]
    grace_s = srv.settings.reconnect_grace_s
    closed = await clin.wait("session.closed", timeout=grace_s + 30)
    closed_after = time.monotonic() - killed
    print(
        f"kill -9: reconnecting after {lost_after:.1f} s ({lost[0]['detail']}), "
        f"closed after {closed_after:.1f} s"
    )
    assert lost_after < lost_by_s and closed_after >= lost_after + grace_s - 0.5
    assert closed[0]["reason"] == "publisher_gone" and closed[0]["partial"] is True
    assert closed[0]["final_assessment"] is True and clin.of("assessment.result")
    info = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.api())).json()
    assert info["state"] == "closed" and info["final_assessment"]["kind"] == "final"
    await healthy(srv)


async def test_publisher_killed_mid_call_is_noticed_within_media_timeout(
    tmp_path: Path, engine: Any, recording: Path
) -> None:
    """Mid-call (the file looping): the server notices the silence after ``media_timeout_s`` (2 s here)."""
    settings = make_settings(tmp_path, media_timeout_s=2.0, reconnect_grace_s=1.5)
    async with run_server(settings, engine) as srv:
        sid, clin, killed = await _kill_publisher(srv, recording, "loop")
        await _expect_partial_final(srv, sid, clin, killed, lost_by_s=2.0 + 3.0, detail="no media for 2 s")


async def test_publisher_killed_after_its_file_ended_is_noticed_by_ice_consent(
    tmp_path: Path, engine: Any, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the file ended (tracks closed with RTCP BYE: no silence timeout applies) only the peer's
    ICE consent checks notice the kill: 6 failed checks, aioice's ``CONSENT_INTERVAL`` apart (5 s: about
    30 s; 0.5 s for this test, in the server's process)."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)
    settings = make_settings(tmp_path, media_timeout_s=2.0, reconnect_grace_s=1.5)
    async with run_server(settings, engine) as srv:
        sid, clin, killed = await _kill_publisher(srv, recording, "to_end")
        await asyncio.sleep(2.0 + 1.0)  # past media_timeout_s: still live (ended tracks are not silence)
        assert [e["state"] for e in clin.of("session.status")] == ["live"]
        await _expect_partial_final(srv, sid, clin, killed, lost_by_s=15.0, detail="connection")
