"""How many live sessions one machine carries in real time.

Run: ``.venv/bin/python bench/live_sessions.py [--bundle demo|tiny|hubert-base|both] [--max-n 12]``

For each N (1, 2, 4, ... up to ``--max-n``) a fresh ``python -m stream_server`` process (the real CLI, with
the random-init bundle) serves N sessions; N loopback aiortc publishers in this process each play a
synthetic 640x480 15 fps interview: by default a VP8 + Opus webm whose packets are forwarded as they are
(``--publisher passthrough``: like a browser's native encoder, no Python encoding load on this machine);
``--publisher reencode`` decodes an h264 + aac mp4 and encodes VP8 + Opus in Python. Either way the
server receives VP8 video and 48 kHz stereo Opus audio, for ``--duration`` seconds while a clinician
WebSocket per session records the ``indicators`` events. Figures per N:

- lag p50/p95 (events after ``--warmup`` s; the start-up is reported as time to the first indicator):
  event receive time - (wall time the publisher sent its first frame + the event's
  ``media_time_s``): media timestamp → indicator emission, incl. jitter buffer, queues and analysis;
- server ``lag_s`` p95 (frame received → analysed, reported by the server itself);
- dropped audio/video frames (server ``mllmdr_frames_dropped_total``; video is first thinned to the
  bundle's analysis rate, which is not a drop);
- transcript: ``--transcript captions`` (default: the telehealth platform sends captions, the server runs
  no speech-to-text) or ``auto`` (the server's default when no captions come: pocketsphinx on the
  patient's speech, in its background ASR thread); the ASR segments dropped because it fell behind and
  the ``transcript`` events received are reported;
- server CPU (% of one core) and RSS per session ((RSS at the end - idle RSS) / N);
- real time = lag p95 < 2 s and no audio dropped. The largest real-time N is reported.

``--model-in-loop`` (issue 22): every session also asks for a checkpoint every ``--checkpoint-period`` s
and ends with a final assessment (half hang up together at ``--duration``, the rest staggered before);
checkpoint and hang-up → final p50/p95 are added, lag counts only events before a session's hang-up, and
a missing final makes the N not real time. Writes ``live_model.json`` (or ``--name``, e.g.
``live_model_thread``) and one plot of every ``live_model*.json``, ``live_model_lag.png``;
``--server-env assess_worker=process|thread`` picks where the server runs the model.

The publishers (decode + VP8 encode at 640x480) run on the same cores as the server: their CPU is
reported too. Load average is recorded before each N. Writes ``bench/results/live_sessions.json`` and a
PNG of lag vs N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc.mediastreams import MediaStreamTrack
from common import (
    CACHE,
    RESULTS,
    ServerProcess,
    api_headers,
    build_bundle,
    load_avg,
    parse_metrics,
    percentile,
    recording,
    server_process,
    write_result,
)


class TimedTrack(MediaStreamTrack):
    """Wraps a MediaPlayer track; remembers the wall time of the first frame handed to the encoder."""

    def __init__(self, source: Any) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.first_at: float | None = None

    async def recv(self) -> Any:
        frame = await self.source.recv()
        if self.first_at is None:
            self.first_at = time.time()
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


async def _publisher(
    http: Any, sid: str, token: str, media: Path, passthrough: bool
) -> tuple[Any, list[Any]]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(str(media), decode=not passthrough)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks = [TimedTrack(t) for t in (player.audio, player.video) if t is not None]
    for t in tracks:
        pc.addTrack(t)
    await pc.setLocalDescription(await pc.createOffer())
    r = await http.post(
        f"/v1/sessions/{sid}/offer",
        headers={"Authorization": f"Bearer {token}"},
        json={"sdp": pc.localDescription.sdp, "type": "offer"},
    )
    r.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    return pc, tracks


async def _collect(
    base: str,
    sid: str,
    token: str,
    out: list[tuple[float, dict[str, Any]]],
    transcript: list[tuple[float, dict[str, Any]]],
    results: list[tuple[float, dict[str, Any]]] | None = None,
) -> None:
    import websockets

    url = base.replace("http", "ws") + f"/v1/sessions/{sid}/events?token={token}"
    async with websockets.connect(url, max_size=None) as ws:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "indicators":
                out.append((time.time(), event))
            elif event["type"] == "transcript":
                transcript.append((time.time(), event))
            elif results is not None and event["type"] in ("checkpoint.result", "assessment.result"):
                results.append((time.time(), event))


@dataclass(frozen=True)
class ModelLoop:
    """``--model-in-loop``: each session asks for a checkpoint every ``period_s`` (first ask staggered over
    one period) and hangs up at its time in :func:`end_times`, then waits for its final assessment."""

    period_s: float
    final_timeout_s: float = 300.0


def end_times(n: int, duration: float) -> list[float]:
    """Seconds after the start at which each session hangs up: half of them (rounded up) together at
    ``duration``, the rest staggered evenly over the second half of the run."""
    together = (n + 1) // 2
    rest = n - together
    staggered = [duration * (0.5 + 0.5 * (j + 1) / (rest + 1)) for j in range(rest)]
    return [*staggered, *[duration] * together]


async def _session_loop(
    http: Any, sid: str, pub: tuple[Any, list[Any]], index: int, n: int, loop: ModelLoop, end_at: float
) -> dict[str, Any]:
    """One session's model traffic: checkpoint requests until ``end_at`` (monotonic), then the hang-up
    (publisher closed + ``POST /end``). Returns the request times by ref and the hang-up wall time."""
    asked: dict[str, float] = {}
    next_ask = time.monotonic() + loop.period_s * (index + 1) / (n + 1)
    while next_ask < end_at:
        await asyncio.sleep(next_ask - time.monotonic())
        at = time.time()
        r = await http.post(f"/v1/sessions/{sid}/checkpoint", headers=api_headers())
        if r.status_code == 200:
            asked[r.json()["request_id"]] = at
        next_ask += loop.period_s
    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
    pc, tracks = pub
    hung_up = time.time()
    await pc.close()
    for t in tracks:
        t.stop()
    r = await http.post(f"/v1/sessions/{sid}/end", headers=api_headers(), timeout=loop.final_timeout_s)
    body = r.json() if r.status_code == 200 else {}
    return {"asked": asked, "hung_up": hung_up, "end_returned": time.time(), "end_state": body.get("state")}


async def run_n(
    bundle: Path,
    n: int,
    duration: float,
    media: Path,
    work: Path,
    warmup: float,
    passthrough: bool,
    transcript: str = "captions",
    servers: int = 1,
    loop: ModelLoop | None = None,
    server_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    import psutil

    load_before = load_avg()
    async with contextlib.AsyncExitStack() as stack:
        procs = [
            await stack.enter_async_context(
                server_process(
                    bundle, work / f"server{k}", transcript_source=transcript, **(server_env or {})
                )
            )
            for k in range(servers)
        ]
        row = await _measure(
            procs, n, duration, media, load_before, psutil.Process(), warmup, passthrough, loop
        )
    return {"servers": servers, **row, "load_avg_after": [round(x, 2) for x in load_avg()]}


async def _measure(
    servers: list[ServerProcess],
    n: int,
    duration: float,
    media: Path,
    load_before: Any,
    me: Any,
    warmup: float,
    passthrough: bool,
    loop: ModelLoop | None = None,
) -> dict[str, Any]:
    """N sessions spread round-robin over ``servers`` (as a sticky load balancer would place them)."""
    import httpx

    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=srv.base, timeout=300))
            for srv in servers
        ]
        await asyncio.sleep(2.0)
        rss_idle = sum(srv.sample()[1] for srv in servers)
        placed = [(i % len(servers)) for i in range(n)]
        sessions = []
        for k in placed:
            r = await https[k].post("/v1/sessions", headers=api_headers(), json={})
            r.raise_for_status()
            sessions.append(r.json())
        events: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in sessions]
        transcripts: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in sessions]
        results: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in sessions]
        collectors = [
            asyncio.ensure_future(
                _collect(
                    servers[k].base,
                    s["session_id"],
                    s["clinician_token"],
                    events[i],
                    transcripts[i],
                    results[i],
                )
            )
            for i, (k, s) in enumerate(zip(placed, sessions, strict=True))
        ]

        async def metrics() -> dict[str, float]:
            total: dict[str, float] = {}
            for http in https:
                for key, value in parse_metrics((await http.get("/metrics")).text).items():
                    total[key] = total.get(key, 0.0) + value
            return total

        m0 = await metrics()
        cpu0 = sum(srv.sample()[0] for srv in servers)
        me0 = me.cpu_times()
        t0 = time.monotonic()
        pubs = [
            await _publisher(https[k], s["session_id"], s["publisher_token"], media, passthrough)
            for k, s in zip(placed, sessions, strict=True)
        ]
        loops: list[dict[str, Any]] = []
        if loop is None:
            await asyncio.sleep(duration)
        else:
            started = time.monotonic()
            loops = await asyncio.gather(
                *(
                    _session_loop(https[k], s["session_id"], pub, i, n, loop, started + end)
                    for i, (k, s, pub, end) in enumerate(
                        zip(placed, sessions, pubs, end_times(n, duration), strict=True)
                    )
                )
            )
            deadline = time.monotonic() + 30.0  # the final's event follows the /end response closely
            while time.monotonic() < deadline and not all(_final_at(r) for r in results):
                await asyncio.sleep(0.2)
        wall = time.monotonic() - t0
        samples = [srv.sample() for srv in servers]
        cpu1, rss_end = sum(c for c, _ in samples), sum(r for _, r in samples)
        me1 = me.cpu_times()
        m1 = await metrics()
        for pc, tracks in pubs:
            await pc.close()
            for t in tracks:
                t.stop()
        for c in collectors:
            c.cancel()
        await asyncio.gather(*collectors, return_exceptions=True)
    lags: list[float] = []
    server_lags: list[float] = []
    first_indicator: list[float] = []
    hang_ups = [lp["hung_up"] for lp in loops] if loops else [float("inf")] * len(pubs)
    for (_, tracks), evs, hung_up in zip(pubs, events, hang_ups, strict=True):
        firsts = [t.first_at for t in tracks if t.first_at is not None]
        if not firsts:
            continue
        first = min(firsts)
        if evs:
            first_indicator.append(evs[0][0] - first)
        for received, e in evs:
            if received - first < warmup or received > hung_up:
                continue  # start-up (peer connection, first HuBERT window, face model) reported separately
            lags.append(received - (first + float(e["media_time_s"])))
            if e.get("lag_s") is not None:
                server_lags.append(float(e["lag_s"]))

    def delta(key: str) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0)

    dropped_audio = delta('mllmdr_frames_dropped_total{kind="audio"}')
    p95 = percentile(lags, 95)
    row = {
        "n": n,
        "duration_s": round(wall, 1),
        "indicator_events_after_warmup": len(lags),
        "first_indicator_s_median": _r(percentile(first_indicator, 50)),
        "lag_p50_s": _r(percentile(lags, 50)),
        "lag_p95_s": _r(p95),
        "server_lag_p95_s": _r(percentile(server_lags, 95)),
        "frames_audio": delta('mllmdr_frames_total{kind="audio"}'),
        "frames_video": delta('mllmdr_frames_total{kind="video"}'),
        "dropped_audio": dropped_audio,
        "dropped_video": delta('mllmdr_frames_dropped_total{kind="video"}'),
        "asr_segments_dropped": delta('mllmdr_frames_dropped_total{kind="asr_segment"}'),
        "transcript_events": sum(len(t) for t in transcripts),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "publishers_cpu_pct": round(100 * ((me1.user + me1.system) - (me0.user + me0.system)) / wall, 1),
        "rss_idle_mb": round(rss_idle, 1),
        "rss_per_session_mb": round((rss_end - rss_idle) / n, 1),
        "load_avg_before": [round(x, 2) for x in load_before],
        "real_time": bool(p95 is not None and p95 < 2.0 and dropped_audio == 0 and len(lags) >= n),
    }
    if loop is not None:
        row.update(_model_figures(loops, results, loop))
        row["real_time"] = row["real_time"] and row["finals_missing"] == 0
    print(json.dumps(row), flush=True)
    return row


def _final_at(results: list[tuple[float, dict[str, Any]]]) -> float | None:
    return next((t for t, e in results if e["type"] == "assessment.result"), None)


def _model_figures(
    loops: list[dict[str, Any]], results: list[list[tuple[float, dict[str, Any]]]], loop: ModelLoop
) -> dict[str, Any]:
    """Hang-up → final assessment (the ``assessment.result`` event) and checkpoint request → result."""
    finals: list[float] = []
    checkpoints: list[float] = []
    asked = 0
    for lp, res in zip(loops, results, strict=True):
        final = _final_at(res)
        if final is not None:
            finals.append(final - lp["hung_up"])
        asked += len(lp["asked"])
        for t, e in res:
            if e["type"] == "checkpoint.result" and e.get("ref") in lp["asked"]:
                checkpoints.append(t - lp["asked"][e["ref"]])
    return {
        "checkpoint_period_s": loop.period_s,
        "checkpoints_asked": asked,
        "checkpoints_answered": len(checkpoints),
        "checkpoint_latency_p50_s": _r(percentile(checkpoints, 50)),
        "checkpoint_latency_p95_s": _r(percentile(checkpoints, 95)),
        "finals": len(finals),
        "finals_missing": len(loops) - len(finals),
        "final_latency_p50_s": _r(percentile(finals, 50)),
        "final_latency_p95_s": _r(percentile(finals, 95)),
        "final_latency_max_s": _r(max(finals, default=None)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def plot(results: dict[str, list[dict[str, Any]]], path: Path, title: str = "indicators only") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, rows in results.items():
        ok = [r for r in rows if r["lag_p95_s"] is not None]
        ax.plot([r["n"] for r in ok], [r["lag_p95_s"] for r in ok], "o-", label=f"{kind} p95")
        ax.plot([r["n"] for r in ok], [r["lag_p50_s"] for r in ok], "x--", label=f"{kind} p50")
    ax.axhline(2.0, color="red", lw=0.8, label="real-time limit (p95 < 2 s)")
    ax.set_xlabel("concurrent sessions N")
    ax.set_ylabel("lag media → indicator (s)")
    ax.set_title(f"Live sessions, {title}\n(shared 2-core CPU; load averages in the JSON)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def n_values(max_n: int) -> list[int]:
    values, n = [], 1
    while n < max_n:
        values.append(n)
        n *= 2
    return [*values, max_n]


async def main_async(args: argparse.Namespace) -> None:
    groups = {"both": ["demo", "hubert-base"], "all": ["demo", "hubert-base", "hubert-base-int8"]}
    kinds = groups.get(args.bundle, [args.bundle])
    container = "webm" if args.publisher == "passthrough" else "mp4"
    media = recording(args.duration + 10.0, container=container)
    results: dict[str, list[dict[str, Any]]] = {}
    best: dict[str, int] = {}
    loop = ModelLoop(args.checkpoint_period) if args.model_in_loop else None
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    for kind in kinds:
        bundle = build_bundle(kind)
        rows: list[dict[str, Any]] = []
        for n in [int(x) for x in args.n.split(",")] if args.n else n_values(args.max_n):
            print(f"--- bundle {kind}: N = {n}", flush=True)
            work = CACHE / f"live-{kind}-{n}-x{args.servers}"
            passthrough = args.publisher == "passthrough"
            rows.append(
                await run_n(
                    bundle,
                    n,
                    args.duration,
                    media,
                    work,
                    args.warmup,
                    passthrough,
                    args.transcript,
                    args.servers,
                    loop,
                    server_env,
                )
            )
            if not rows[-1]["real_time"] and args.stop_early:
                break
        results[kind] = [{**r, "run": args.tag} for r in rows]
        best[kind] = max((r["n"] for r in rows if r["real_time"]), default=0)
        print(f"bundle {kind}: largest real-time N = {best[kind]}", flush=True)
    # one current file per mode (and --name); earlier runs live in git history
    name = args.name or ("live_model" if loop else "live_sessions")
    runs = [{"tag": args.tag, "date_utc": _utc_now(), "command": _command(), "load_avg_end": _load()}]
    if args.merge and (RESULTS / f"{name}.json").exists():
        results, runs = merge(json.loads((RESULTS / f"{name}.json").read_text()), results, runs)
        best = {k: max((r["n"] for r in rows if r["real_time"]), default=0) for k, rows in results.items()}
    png = RESULTS / ("live_model_lag.png" if loop else f"{name}_lag.png")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if loop is None:
        plot(results, png)
    path = write_result(
        name,
        {
            "tag": args.tag,
            "targets": {
                "demo": ">= 8 real-time sessions",
                "hubert-base": ">= 4 real-time sessions",
                "hubert-base-int8": "(hubert-base with its encoder's Linear layers in dynamic int8)",
            },
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "publisher": args.publisher,
            "transcript": args.transcript,
            "servers": args.servers,
            "server_env": server_env,
            "model_in_loop": None
            if loop is None
            else {
                "checkpoint_period_s": loop.period_s,
                "hang_ups": "half of the sessions (rounded up) at --duration together, the rest staggered "
                "over its second half; each hang-up = publisher closed + POST /end",
            },
            "media": "synthetic 640x480 15 fps interview, VP8+Opus 48 kHz over loopback aiortc "
            + ("(webm packets forwarded)" if args.publisher == "passthrough" else "(mp4 re-encoded)"),
            "largest_real_time_n": best,
            "runs": runs,
            "rows": results,
            "plot": str(png.relative_to(RESULTS.parent.parent)),
        },
    )
    if loop is not None:
        plot_model_loop(png)
    print("wrote", path, "and", png)


def plot_model_loop(png: Path) -> None:
    """Lag vs N of every ``live_model*.json`` (one per place the server ran the model) in one plot."""
    results: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(RESULTS.glob("live_model*.json")):
        doc = json.loads(path.read_text())
        where = doc.get("server_env", {}).get("assess_worker", "thread")
        period = doc["model_in_loop"]["checkpoint_period_s"]
        for kind, rows in doc["rows"].items():
            results[f"{kind}, model in {where}"] = rows
    plot(results, png, f"checkpoint every {period:g} s + finals")


def merge(
    old: dict[str, Any], new: dict[str, list[dict[str, Any]]], runs: list[dict[str, Any]]
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """``--merge``: the file's rows of other bundles and other N kept, this run's rows replace the same
    (bundle, N); the runs listed in order (each row names its ``run`` tag)."""
    rows = {k: list(v) for k, v in old["rows"].items()}
    for kind, fresh in new.items():
        ns = {r["n"] for r in fresh}
        rows[kind] = sorted([r for r in rows.get(kind, []) if r["n"] not in ns] + fresh, key=lambda r: r["n"])
    earlier = old.get("runs") or [{k: old.get(k) for k in ("tag", "date_utc", "command", "load_avg_end")}]
    return rows, [*earlier, *runs]


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")


def _command() -> str:
    import sys

    return " ".join([".venv/bin/python", "bench/live_sessions.py", *sys.argv[1:]])


def _load() -> list[float]:
    return [round(x, 2) for x in load_avg()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bundle",
        choices=["demo", "tiny", "hubert-base", "hubert-base-int8", "both", "all"],
        default="both",
        help="both = demo + hubert-base; all = demo + hubert-base + hubert-base-int8",
    )
    p.add_argument("--max-n", type=int, default=12)
    p.add_argument("--n", default="", help="comma-separated N values instead of 1, 2, 4, ... --max-n")
    p.add_argument("--tag", default="", help="a label recorded in bench/results/live_sessions.json")
    p.add_argument(
        "--publisher",
        choices=["passthrough", "reencode"],
        default="passthrough",
        help="passthrough: forward the webm's VP8+Opus packets (as a browser's native encoder would deliver "
        "them, no Python encoding on this machine); reencode: decode the mp4 and encode VP8+Opus in Python",
    )
    p.add_argument(
        "--transcript",
        choices=["captions", "auto"],
        default="captions",
        help="captions: the platform captions the call, no speech-to-text on the server; auto: pocketsphinx "
        "on the patient's speech (background ASR thread)",
    )
    p.add_argument(
        "--servers",
        type=int,
        default=1,
        help="server processes on this machine (one per core is the deployment's layout); sessions are "
        "spread over them round-robin, as the load balancer's sticky routing would; figures are summed",
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds of publishing per N")
    p.add_argument(
        "--model-in-loop",
        action="store_true",
        help="every session asks for a checkpoint every --checkpoint-period s and ends with a final "
        "assessment (half the sessions hang up together at --duration, the rest staggered before); "
        "reports hang-up → final and checkpoint latencies; writes live_model.json",
    )
    p.add_argument("--checkpoint-period", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server setting for every server process, e.g. assess_worker=thread (repeatable)",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the results file's rows of other bundles / N (this run's replace the same bundle and N)",
    )
    p.add_argument("--name", default="", help="results file name (default live_sessions[_model])")
    p.add_argument(
        "--warmup", type=float, default=8.0, help="seconds after the first frame not in the lag figures"
    )
    p.add_argument(
        "--stop-early", action="store_true", help="stop increasing N after the first N that is not real time"
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
