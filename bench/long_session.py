"""Memory over a long session: RSS slope (MB/hour of media) and peak for a 60-minute session.

Run: ``.venv/bin/python bench/long_session.py [--minutes 60] [--clip-minutes 5] [--bundle tiny|hubert-base]``

The real server app (``create_app`` + ``CoreEngine``, in this process) runs one session fed
time-compressed: a synthetic ``--clip-minutes`` interview (640x480 15 fps, with its transcript) looped
until ``--minutes`` of media, decoded into server-shaped frames (48 kHz stereo s16 audio, video at the
analysis rate) and pushed into the session's ingest queues as fast as its worker analyses them. Every
loop also sends the transcript as captions (shifted in time) and the server emits an ``indicators``
event (stored) every 2 s of media, so the transcript, indicator and feature buffers all grow as live.
RSS of this process is sampled each minute of media; the slope is a least-squares fit over the second
half (after warm-up; the whole-run slope is reported too). Target: flat RSS. Ends with ``POST /end`` (final
assessment over the whole hour). Writes ``bench/results/long_session.json`` and a PNG of RSS vs media time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    CACHE,
    RESULTS,
    FeedFrame,
    api_headers,
    build_bundle,
    feed_frames,
    in_process_server,
    load_avg,
    push_into_session,
    recording,
    write_result,
)


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 1e6)


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    t = np.array([s[0] for s in samples]) / 3600.0
    y = np.array([s[1] for s in samples])
    return float(np.polyfit(t, y, 1)[0])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from mllmdr_core.transcripts import read_transcript

    bundle = build_bundle(args.bundle)
    clip = recording(args.clip_minutes * 60.0)
    lines = read_transcript(clip.with_suffix(".json"))
    loops = int(np.ceil(args.minutes / args.clip_minutes))
    samples: list[tuple[float, float]] = []
    async with (
        in_process_server(bundle, CACHE / "long", indicator_window_s=30.0) as server,
        httpx.AsyncClient(base_url=server.base, timeout=3600) as http,
    ):
        r = await http.post("/v1/sessions", headers=api_headers(), json={})
        r.raise_for_status()
        s = r.json()
        sid, pub = s["session_id"], {"Authorization": f"Bearer {s['publisher_token']}"}
        live = server.srv.manager.sessions[sid]
        fps = float(server.srv.services.engine.config.visual.analysis_fps)
        next_emit = [2.0]

        async def emit(media_t: float) -> None:  # the indicator loop's work, every 2 s of media
            if media_t >= next_emit[0]:
                next_emit[0] = media_t + 2.0
                await live.emit_indicators()

        samples.append((0.0, rss_mb()))
        t0 = time.perf_counter()
        clip_s = args.clip_minutes * 60.0
        for k in range(loops):
            offset = k * clip_s
            for line in lines:
                cap = {
                    "text": line.text,
                    "speaker": line.speaker,
                    "start_s": line.start_s + offset,
                    "end_s": line.end_s + offset,
                }
                (await http.post(f"/v1/sessions/{sid}/captions", headers=pub, json=cap)).raise_for_status()
            frames = feed_frames(clip, analysis_fps=fps)
            remaining = min(clip_s, args.minutes * 60.0 - offset)
            for minute in range(int(np.ceil(remaining / 60.0))):
                hi = min(remaining, (minute + 1) * 60.0)
                await push_into_session(live, _take_until(frames, hi, offset), on_batch=emit)
                samples.append((offset + hi, rss_mb()))
                print(f"media {(offset + hi) / 60:5.1f} min  RSS {samples[-1][1]:7.1f} MB", flush=True)
        feed_wall = time.perf_counter() - t0
        t_end = time.perf_counter()
        r = await http.post(f"/v1/sessions/{sid}/end", headers=pub)
        end_s = time.perf_counter() - t_end
        samples.append((args.minutes * 60.0, rss_mb()))
        export = (await http.get(f"/v1/sessions/{sid}/export", headers=api_headers())).json()
    half = [x for x in samples if x[0] >= args.minutes * 30.0]
    result = {
        "target": "flat RSS over a 60-minute session",
        "bundle": args.bundle,
        "minutes": args.minutes,
        "clip_minutes": args.clip_minutes,
        "rss_start_mb": round(samples[0][1], 1),
        "rss_peak_mb": round(max(y for _, y in samples), 1),
        "rss_end_mb": round(samples[-1][1], 1),
        "slope_mb_per_hour_second_half": _r(slope_mb_per_hour(half)),
        "slope_mb_per_hour_whole": _r(slope_mb_per_hour(samples[1:])),
        "feed_wall_s": round(feed_wall, 1),
        "end_to_final_s": round(end_s, 2),
        "final_kind": (r.json().get("assessment") or {}).get("kind"),
        "stored_transcript_lines": len(export["transcript"]),
        "stored_indicator_points": len(export["indicators"]),
        "samples_min_mb": [[round(t / 60, 1), round(y, 1)] for t, y in samples],
    }
    return result


def _take_until(frames: Iterator[FeedFrame], hi: float, offset: float) -> Iterator[FeedFrame]:
    """The next frames of ``frames`` up to clip time ``hi``, shifted by ``offset`` seconds."""
    for f in frames:
        yield FeedFrame(f.kind, f.t_s + offset, audio=f.audio, rgb=f.rgb)
        if f.t_s >= hi:
            return


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in result["samples_min_mb"]]
    y = [s[1] for s in result["samples_min_mb"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, y, "o-", ms=3)
    ax.set_xlabel("media time (min, time-compressed feed)")
    ax.set_ylabel("process RSS (MB)")
    ax.set_title(f"Long session: slope {result['slope_mb_per_hour_second_half']} MB/h (2nd half)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--clip-minutes", type=float, default=5.0)
    p.add_argument("--bundle", choices=["tiny", "hubert-base"], default="tiny")
    args = p.parse_args()
    load0 = load_avg()
    result = asyncio.run(run(args))
    result["load_avg_start"] = [round(x, 2) for x in load0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "long_session_rss.png"
    plot(result, png)
    result["plot"] = "bench/results/long_session_rss.png"
    print(json.dumps({k: v for k, v in result.items() if k != "samples_min_mb"}, indent=1))
    print("wrote", write_result("long_session", result))


if __name__ == "__main__":
    main()
