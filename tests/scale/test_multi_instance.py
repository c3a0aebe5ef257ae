"""Two real server processes on one real Postgres: the WebRTC publisher on instance A, the clinician
on instance B; B's clinician socket gets every event of A's session, in order; either instance restarts
without losing data (and the clinician resumes with ``after_seq``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import PgCluster, free_port

REPO = Path(__file__).resolve().parents[2]
# the server tests' subprocess server: every instance has the same API key and JWT secret, as a
# deployment must, so a token issued by one instance is accepted by the other
SERVE = REPO / "tests" / "server" / "serve_subprocess.py"
sys.path.insert(0, str(REPO / "tests"))

from server.conftest import Events, RunningServer  # noqa: E402
from server.peers import Publisher  # noqa: E402


async def publish_looped(http: httpx.AsyncClient, session_id: str, token: str, media: Path) -> Publisher:
    """A real aiortc publisher playing ``media`` in a loop, so the session stays live across restarts."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(str(media), loop=True)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in (player.audio, player.video):
        if track is not None:
            pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())
    r = await http.post(
        f"/v1/sessions/{session_id}/offer",
        headers={"Authorization": f"Bearer {token}"},
        json={"sdp": pc.localDescription.sdp, "type": "offer"},
    )
    assert r.status_code == 200, r.text
    await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    return Publisher(pc, player)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s synthetic interview (espeak-ng speech + a real face photo)."""
    from client_sdk.synth import make_recording

    rec = make_recording(tmp_path_factory.mktemp("rec"), duration_s=6.0, fps=15, size=(320, 240))
    assert rec.video is not None
    return rec.video


class Instance:
    """One ``serve_subprocess.py`` server on a fixed port (so a restart keeps its address)."""

    def __init__(self, name: str, db_url: str, bundle: Path, log_dir: Path) -> None:
        self.name, self.db_url, self.bundle, self.port = name, db_url, bundle, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s: list[float] = []

    async def start(self) -> None:
        t0 = time.perf_counter()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVE), str(self.port), self.db_url, str(self.bundle)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        async with httpx.AsyncClient(base_url=self.base) as http:
            for _ in range(1200):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        self.start_s.append(time.perf_counter() - t0)
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                    )
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after 120 s")

    def kill(self) -> None:
        """SIGKILL: nothing is flushed on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@asynccontextmanager
async def instances(db_url: str, bundle: Path, log_dir: Path) -> AsyncIterator[tuple[Instance, Instance]]:
    a, b = Instance("A", db_url, bundle, log_dir), Instance("B", db_url, bundle, log_dir)
    try:
        await asyncio.gather(a.start(), b.start())
        yield a, b
    finally:
        a.kill()
        b.kill()


def _contiguous(events: list[dict[str, Any]]) -> list[int]:
    seqs = [e["seq"] for e in events if e["type"] != "pong"]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs  # in order, no duplicates
    return seqs


async def test_clinician_on_b_follows_webrtc_session_on_a_and_survives_restarts(
    pg: PgCluster, bundle: Path, recording: Path, tmp_path: Path
) -> None:
    db = await pg.create_db("multi")
    async with (
        instances(db, bundle, tmp_path) as (a, b),
        httpx.AsyncClient(base_url=a.base, timeout=60) as http_a,
        httpx.AsyncClient(base_url=b.base, timeout=60) as http_b,
    ):
        srv_a = RunningServer(a.base, None, http_a, None)  # type: ignore[arg-type]
        srv_b = RunningServer(b.base, None, http_b, None)  # type: ignore[arg-type]
        s = await srv_a.create_session()
        sid = s["session_id"]

        # Clinician on B, publisher (WebRTC + caption socket) on A.
        clin = await srv_b.events(sid, s["clinician_token"])
        pub_ws = await srv_a.events(sid, s["publisher_token"])
        pub = await publish_looped(http_a, sid, s["publisher_token"], recording)
        for i in range(3):
            await pub_ws.send(
                {"type": "caption", "id": f"c{i}", "text": f"caption {i}", "speaker": "patient",
                 "start_s": float(i), "end_s": i + 0.5}
            )  # fmt: skip
        await clin.wait("transcript.ack", 3, timeout=30)
        await clin.wait("indicators", 2, timeout=60)
        r = await http_a.post(f"/v1/sessions/{sid}/checkpoint?wait=true", headers=srv_a.api())
        assert r.status_code == 200, r.text
        await clin.wait("checkpoint.result", timeout=30)
        seen_b = _contiguous(clin.items)
        assert seen_b[0] == 1 and seen_b == list(range(1, seen_b[-1] + 1))  # history + live, no gap
        # B's socket carries exactly A's events: compare with A's own subscriber (the publisher socket).
        a_by_seq = {e["seq"]: e for e in pub_ws.items if e["type"] != "pong"}
        assert all(a_by_seq[e["seq"]] == e for e in clin.items if e["seq"] in a_by_seq)

        # Restart B (kill -9): the clinician reconnects there with after_seq and misses nothing.
        last = seen_b[-1]
        b.kill()
        await clin.closed.wait()
        await pub_ws.send({"type": "caption", "id": "c3", "text": "while B is down", "speaker": "patient",
                           "start_s": 3.0, "end_s": 3.5})  # fmt: skip
        await pub_ws.wait("transcript.ack", 4, timeout=30)
        await b.start()
        clin2 = await srv_b.events(sid, s["clinician_token"], after_seq=last)
        await clin2.wait("transcript.ack", 1, timeout=30, pred=lambda e: e.get("ref") == "c3")
        # Live events from A after B's restart: a new caption and fresh indicators.
        await pub_ws.send({"type": "caption", "id": "c4", "text": "after B is back", "speaker": "patient",
                           "start_s": 4.0, "end_s": 4.5})  # fmt: skip
        await clin2.wait("transcript.ack", 1, timeout=30, pred=lambda e: e.get("ref") == "c4")
        mark = a_by_seq_max(pub_ws)
        await clin2.wait("indicators", 1, timeout=60, pred=lambda e: e["seq"] > mark)

        # End on A: B's clinician gets the final assessment and session.closed, in order, then a close.
        r = await http_a.post(f"/v1/sessions/{sid}/end", headers=srv_a.bearer(s["publisher_token"]))
        assert r.status_code == 200 and r.json()["state"] == "closed", r.text
        await clin2.wait("session.closed", timeout=60)
        await asyncio.wait_for(clin2.closed.wait(), 10)
        assert clin2.close_code == 1000
        resumed = _contiguous(clin2.items)
        assert resumed[0] == last + 1 and resumed == list(range(last + 1, resumed[-1] + 1))
        types = [e["type"] for e in clin2.items]
        assert types[-1] == "session.closed" and "assessment.result" in types
        await pub.close()
        await pub_ws.close()

        # Restart A (kill -9): everything is still there, read through either instance.
        a.kill()
        await a.start()
        for http in (http_a, http_b):
            info = (await http.get(f"/v1/sessions/{sid}", headers=srv_a.api())).json()
            assert info["state"] == "closed" and info["transcript_lines"] == 5
            assert info["final_assessment"] is not None and info["last_seq"] == resumed[-1]
        export = (await http_b.get(f"/v1/sessions/{sid}/export", headers=srv_b.api())).json()
        assert [t["text"] for t in export["transcript"]] == [
            "caption 0",
            "caption 1",
            "caption 2",
            "while B is down",
            "after B is back",
        ]
        assert [e["seq"] for e in export["events"]] == list(range(1, resumed[-1] + 1))
        assert len(export["checkpoints"]) == 1 and len(export["indicators"]) >= 2
        print(f"\n[scale] server start times: A {a.start_s} s, B {b.start_s} s")


def a_by_seq_max(events: Events) -> int:
    """Highest seq the publisher socket on A has seen so far."""
    return max(e["seq"] for e in events.items if e["type"] != "pong")
