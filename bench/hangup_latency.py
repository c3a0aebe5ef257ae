"""Time from hang-up to the final assessment: streaming server vs the offline alternative, in one run.

Run: ``.venv/bin/python bench/hangup_latency.py [--minutes 10] [--bundle tiny|hubert-base]``

Streaming: the real server app (``create_app`` + ``CoreEngine``, in this process) gets a synthetic
``--minutes`` interview (640x480 15 fps mp4 with its transcript): the transcript as captions, the media
decoded into server-shaped frames (48 kHz stereo s16 audio, video thinned to the analysis rate) pushed
into the session's ingest queues as fast as the worker analyses them (time-compressed; in a live call
this work is spread over the call). Then ``POST /end``: drain, flush the last window, final assessment,
store, events. **Hang-up latency** = wall time of that request.

Offline: ``client_sdk.replay.Replayer`` on the same file, from scratch, as the authors' offline code
does: load the bundle, decode the whole recording, run every extractor, assess. Target: streaming
hang-up latency ≤ 5 % of the offline time. Writes ``bench/results/hangup_latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from common import (
    CACHE,
    api_headers,
    build_bundle,
    feed_frames,
    in_process_server,
    load_avg,
    push_into_session,
    recording,
    write_result,
)


async def streaming(bundle: Path, media: Path, work: Path) -> dict[str, Any]:
    import httpx

    from mllmdr_core.transcripts import read_transcript

    lines = read_transcript(media.with_suffix(".json"))
    async with (
        in_process_server(bundle, work) as server,
        httpx.AsyncClient(base_url=server.base, timeout=3600) as http,
    ):
        r = await http.post("/v1/sessions", headers=api_headers(), json={})
        r.raise_for_status()
        s = r.json()
        sid, pub = s["session_id"], {"Authorization": f"Bearer {s['publisher_token']}"}
        live = server.srv.manager.sessions[sid]
        analysis_fps = float(server.srv.services.engine.config.visual.analysis_fps)
        t0 = time.perf_counter()
        for line in lines:
            cap = {"text": line.text, "speaker": line.speaker, "start_s": line.start_s, "end_s": line.end_s}
            (await http.post(f"/v1/sessions/{sid}/captions", headers=pub, json=cap)).raise_for_status()
        t_decoded = time.perf_counter()
        pushed = await push_into_session(live, feed_frames(media, analysis_fps=analysis_fps))
        t_fed = time.perf_counter()
        r = await http.post(f"/v1/sessions/{sid}/end", headers=pub)
        t_end = time.perf_counter()
        body = r.json()
    assessment = body.get("assessment") or {}
    return {
        "state": body.get("state"),
        "final_kind": assessment.get("kind"),
        "window_end_s": assessment.get("window_end_s"),
        "frames_pushed": pushed,
        "captions": len(lines),
        "captions_s": round(t_decoded - t0, 2),
        "live_decode_and_analysis_s": round(t_fed - t_decoded, 2),
        "hangup_latency_s": round(t_end - t_fed, 3),
    }


def offline(bundle: Path, media: Path) -> dict[str, Any]:
    from client_sdk.replay import Replayer

    t0 = time.perf_counter()
    replayer = Replayer(bundle)
    t_load = time.perf_counter()
    result = replayer.replay(media)
    t1 = time.perf_counter()
    return {
        "bundle_load_s": round(t_load - t0, 2),
        "replay_s": round(t1 - t_load, 2),
        "total_s": round(t1 - t0, 2),
        "media_s": round(result.media_s, 1),
        "final_kind": result.assessment.kind,
    }


async def main_async(args: argparse.Namespace) -> None:
    bundle = build_bundle(args.bundle)
    media = recording(args.minutes * 60.0)
    load0 = load_avg()
    stream = await streaming(bundle, media, CACHE / "hangup")
    print("streaming:", json.dumps(stream), flush=True)
    off = await asyncio.to_thread(offline, bundle, media)
    print("offline:", json.dumps(off), flush=True)
    ratio = stream["hangup_latency_s"] / off["total_s"]
    print(
        f"hang-up latency {stream['hangup_latency_s']:.2f} s vs offline {off['total_s']:.1f} s "
        f"= {100 * ratio:.2f} % (target <= 5 %)",
        flush=True,
    )
    path = write_result(
        f"hangup_latency{'' if args.bundle == 'tiny' else '_' + args.bundle.replace('-', '_')}",
        {
            "target": "streaming hang-up latency <= 5 % of the offline time",
            "bundle": args.bundle,
            "minutes": args.minutes,
            "media": "synthetic 640x480 15 fps h264+aac mp4 + transcript (captions)",
            "load_avg_start": [round(x, 2) for x in load0],
            "streaming": stream,
            "offline": off,
            "ratio_pct": round(100 * ratio, 2),
            "meets_target": ratio <= 0.05,
        },
    )
    print("wrote", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--bundle", choices=["demo", "tiny", "hubert-base"], default="tiny")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
