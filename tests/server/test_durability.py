"""kill -9 of the server process: everything acknowledged is still in the store after restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from .conftest import API_KEY, Events, RunningServer, free_port
from .peers import publish

SCRIPT = Path(__file__).with_name("serve_subprocess.py")


@asynccontextmanager
async def server_process(port: int, db: str, bundle: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(port), db, bundle])
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(600):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise AssertionError(f"server exited with {proc.returncode}")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, recording: Path, bundle_arg: str) -> None:
    port = free_port()
    db = f"sqlite+aiosqlite:///{tmp_path}/durable.db"
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        srv = RunningServer(base, None, http, None)  # type: ignore[arg-type]
        async with server_process(port, db, bundle_arg) as proc:
            s = await srv.create_session()
            sid = s["session_id"]
            clin: Events = await srv.events(sid, s["clinician_token"])
            pub_ws = await srv.events(sid, s["publisher_token"])
            acked: list[str] = []
            for i in range(5):
                text = f"caption number {i}"
                await pub_ws.send(
                    {
                        "type": "caption",
                        "id": f"c{i}",
                        "text": text,
                        "speaker": "patient",
                        "start_s": float(i),
                        "end_s": i + 0.5,
                    }
                )
                await pub_ws.wait("transcript.ack", i + 1)
                acked.append(text)
            r = await http.post(
                f"/v1/sessions/{sid}/captions",
                headers=srv.bearer(s["publisher_token"]),
                json={"text": "http caption", "start_s": 6, "end_s": 7},
            )
            assert r.status_code == 200
            acked.append("http caption")
            pub = await publish(http, sid, s["publisher_token"], recording)
            seen = await clin.wait("indicators", 2, timeout=40)
            r = await http.post(f"/v1/sessions/{sid}/checkpoint?wait=true", headers=srv.api())
            assert r.status_code == 200
            checkpoint = r.json()["assessment"]
            seen = clin.of("indicators")
            last_seq = max(e["seq"] for e in clin.items)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            await pub.close()
            await clin.close()
            await pub_ws.close()
        async with server_process(port, db, bundle_arg):
            export = (await http.get(f"/v1/sessions/{sid}/export", headers=srv.api())).json()
            assert [t["text"] for t in export["transcript"]] == acked
            stored_times = [p["media_time_s"] for p in export["indicators"]]
            assert all(e["media_time_s"] in stored_times for e in seen)
            assert checkpoint in export["checkpoints"]
            assert max(e["seq"] for e in export["events"]) >= last_seq
            # the session continues after the restart: the same publisher re-offers, then ends it
            late = await srv.events(sid, s["clinician_token"])
            await late.wait("checkpoint.result")  # history replayed
            pub = await publish(http, sid, s["publisher_token"], recording)
            await late.wait("indicators", len(seen) + 1, timeout=40)
            r = await http.post(f"/v1/sessions/{sid}/end", headers=srv.api())  # results: API key
            assert r.json()["state"] == "closed" and r.json()["assessment"]["kind"] == "final"
            # media time continued where it stopped (issue 21: the final window read [0, 1.9 s])
            stored_last = max(e["seq"] for e in export["events"])
            resumed = [e["media_time_s"] for e in late.of("indicators") if e["seq"] > stored_last]
            assert resumed and min(resumed) > max(stored_times)
            assert r.json()["assessment"]["window_end_s"] > max(stored_times)
            await pub.close()
            await late.close()
    assert API_KEY
