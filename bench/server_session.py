"""Live-server figures: CPU per live session, processing lag, end-of-session latency (server issue 4).

Starts ``mllmdr-server`` in its own process (tiny random bundle, or ``--bundle``), publishes N synthetic
640x480@15 fps + 48 kHz recordings over real aiortc loopback peers, and reports the server process's CPU
(from /proc), the indicator lag (``lag_s``), and the time from ``POST /end`` to the stored final
assessment. Run: ``.venv/bin/python bench/server_session.py --sessions 1 --seconds 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-api-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_means(metrics: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        for kind, target in (("_sum{", sums), ("_count{", counts)):
            if line.startswith("mllmdr_stage_seconds" + kind):
                stage = line.split('stage="')[1].split('"')[0]
                target[stage] = float(line.rsplit(" ", 1)[1])
    return {k: round(sums[k] / counts[k], 4) for k in sums if counts.get(k)}


async def one_session(http: httpx.AsyncClient, base: str, media: Path, seconds: float) -> dict[str, Any]:
    s = (await http.post("/v1/sessions", headers={"Authorization": f"Bearer {API_KEY}"}, json={})).json()
    sid = s["session_id"]
    ws = await websockets.connect(
        base.replace("http", "ws") + f"/v1/sessions/{sid}/events?token={s['clinician_token']}"
    )
    events: list[dict[str, Any]] = []

    async def read() -> None:
        async for raw in ws:
            events.append(json.loads(raw))

    reader = asyncio.ensure_future(read())
    player = MediaPlayer(str(media))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(player.audio)
    pc.addTrack(player.video)
    await pc.setLocalDescription(await pc.createOffer())
    r = await http.post(
        f"/v1/sessions/{sid}/offer",
        headers={"Authorization": f"Bearer {s['publisher_token']}"},
        json={"sdp": pc.localDescription.sdp, "type": "offer"},
    )
    await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    await asyncio.sleep(seconds)
    t0 = time.perf_counter()
    r = await http.post(f"/v1/sessions/{sid}/end", headers={"Authorization": f"Bearer {API_KEY}"})
    end_s = time.perf_counter() - t0
    await pc.close()
    await asyncio.wait_for(reader, 30)
    lags = [e["lag_s"] for e in events if e["type"] == "indicators" and e.get("lag_s") is not None]
    final = r.json().get("assessment") or {}
    return {
        "end_to_final_s": end_s,
        "lags": lags,
        "indicator_events": len(lags),
        "media_time_s": max([e["media_time_s"] for e in events if e["type"] == "indicators"], default=0.0),
        "assess_timings_ms": final.get("timings_ms", {}),
        "warnings": [e["code"] for e in events if e["type"] == "warning"],
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bundle", default=None)
    args = ap.parse_args()
    from stream_server.app import limit_ice_host_addresses

    limit_ice_host_addresses(["127.0.0.1"])  # both peers on loopback (the server gets the same setting)
    work = Path(tempfile.mkdtemp(prefix="mllmdr-bench-"))
    from client_sdk.synth import make_recording

    rec = make_recording(work, duration_s=args.seconds + 5, fps=15, size=(640, 480))
    bundle = args.bundle
    if bundle is None:
        from mllmdr_core.testing import build_tiny_bundle

        bundle = str(build_tiny_bundle(work / "tiny"))
    port = free_port()
    env = dict(
        os.environ,
        MLLMDR_API_KEY=API_KEY,
        MLLMDR_ICE_HOST_ADDRESSES="127.0.0.1",
        DATABASE_URL=f"sqlite+aiosqlite:///{work}/bench.db",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_server",
            "--bundle",
            bundle,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
            idle0, t_idle = cpu_seconds(proc.pid), time.perf_counter()
            await asyncio.sleep(3.0)
            idle_cpu = (cpu_seconds(proc.pid) - idle0) / (time.perf_counter() - t_idle)
            c0, w0 = cpu_seconds(proc.pid), time.perf_counter()
            results = await asyncio.gather(
                *(
                    one_session(http, base, rec.video, args.seconds)  # type: ignore[arg-type]
                    for _ in range(args.sessions)
                )
            )
            cpu = (cpu_seconds(proc.pid) - c0) / (time.perf_counter() - w0)
            metrics = (await http.get("/metrics")).text
    finally:
        proc.terminate()
        proc.wait(30)
    lags = sorted(x for r in results for x in r["lags"][2:])  # skip warm-up (model/tracker initialisation)
    out = {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "bundle": bundle,
        "server_cpu_cores_total": round(cpu, 3),
        "server_idle_cpu_cores": round(idle_cpu, 3),
        "cpu_cores_per_session": round((cpu - idle_cpu) / args.sessions, 3),
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p95_s": round(lags[max(0, math.ceil(0.95 * len(lags)) - 1)], 3) if lags else None,
        "lag_samples": len(lags),
        "end_to_final_s": [round(r["end_to_final_s"], 2) for r in results],
        "assess_timings_ms": results[0]["assess_timings_ms"],
        "media_time_s": [round(r["media_time_s"], 1) for r in results],
        "warnings": sorted({w for r in results for w in r["warnings"]}),
        "stage_mean_s": stage_means(metrics),
        "load_avg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
