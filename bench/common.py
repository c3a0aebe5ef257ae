"""Shared pieces of the live benchmarks: machine/load notes, bundles, recordings, servers, feeds, results.

Nothing here downloads anything: bundles are random-init (``tiny`` = the server's demo fallback;
``hubert-base`` = the same bundle with a HuBERT-base-sized audio encoder, 12 layers x 768, random init,
so the compute is the real model's), recordings are synthetic (``client_sdk.synth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "var" / "bench"  # var/ is git-ignored
API_KEY = "bench-api-key-0123456789"
JWT_SECRET = "b" * 32
BUNDLE_KINDS = ("demo", "tiny", "hubert-base", "hubert-base-int8")
DEMO_BUNDLE = ROOT / "bundles" / "demo"


# ---------------------------------------------------------------- machine, load, results
def load_avg() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1e6
    commit = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "commit": commit.strip(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` with machine, date (UTC), command and load added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": name,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": " ".join([".venv/bin/python", *[_rel(a) for a in sys.argv]]),
        "machine": machine(),
        "load_avg_end": [round(x, 2) for x in load_avg()],
        **payload,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def _rel(arg: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(arg).resolve().relative_to(ROOT))
    return arg


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


# ---------------------------------------------------------------- bundles and recordings
def build_bundle(kind: str) -> Path:
    """``demo``: ``bundles/demo/`` as the server's ``--demo`` serves it (the tiny bundle when it is absent);
    ``tiny`` / ``hubert-base`` / ``hubert-base-int8`` (its encoder dynamically quantised): the cached
    random-init bundle under var/bench/."""
    if kind not in BUNDLE_KINDS:
        raise ValueError(f"bundle kind must be one of {BUNDLE_KINDS}, not {kind!r}")
    from mllmdr_core.bundle import is_bundle
    from mllmdr_core.testing import build_hubert_base_bundle, build_tiny_bundle

    if kind == "demo":
        return DEMO_BUNDLE if is_bundle(DEMO_BUNDLE) else build_bundle("tiny")
    path = CACHE / f"bundle-{kind}"
    if is_bundle(path):
        return path
    if kind == "tiny":
        return build_tiny_bundle(path)
    return build_hubert_base_bundle(path, int8=kind == "hubert-base-int8")


def recording(
    duration_s: float, *, size: tuple[int, int] = (640, 480), fps: int = 15, container: str = "mp4"
) -> Path:
    """A cached synthetic interview (espeak-ng speech + moving face) of ``duration_s``: ``mp4`` = h264 +
    aac, ``webm`` = VP8 + Opus (what a browser sends, so a publisher can forward it without re-encoding)."""
    from client_sdk.synth import make_recording

    name = f"rec-{int(duration_s)}s-{size[0]}x{size[1]}-{fps}"
    out = CACHE / "recordings"
    path = out / f"{name}.{container}"
    if not path.exists():
        rec = make_recording(out, duration_s=duration_s, fps=fps, size=size, name=name, container=container)
        assert rec.video is not None
        return rec.video
    return path


# ---------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """``python -m stream_server`` (the real CLI) in its own process, so its CPU and RSS can be read."""

    proc: subprocess.Popen[bytes]
    base: str

    def sample(self) -> tuple[float, float]:
        """(CPU seconds user+system incl. threads, RSS MB) of the server process and its children (the
        speech-to-text process)."""
        import psutil

        p = psutil.Process(self.proc.pid)
        cpu, rss = 0.0, 0.0
        for proc in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                cpu += t.user + t.system
                rss += proc.memory_info().rss / 1e6
        return cpu, rss


@contextlib.asynccontextmanager
async def server_process(
    bundle: Path, work: Path, *, ready_s: float = 120.0, **env: str
) -> AsyncIterator[ServerProcess]:
    import httpx

    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    environ = dict(
        os.environ,
        MLLMDR_API_KEY=API_KEY,
        MLLMDR_JWT_SECRET=JWT_SECRET,
        MLLMDR_ICE_HOST_ADDRESSES="127.0.0.1",
        MLLMDR_VAR_DIR=str(work / "var"),
        MLLMDR_MAX_SESSIONS="64",
        MLLMDR_SESSION_CREATE_PER_MIN="1000",
        MLLMDR_INDICATOR_INTERVAL_S="1.0",
        **{f"MLLMDR_{k.upper()}": v for k, v in env.items()},
    )
    db = f"sqlite+aiosqlite:///{work}/bench.sqlite"
    cmd = [sys.executable, "-m", "stream_server", "--bundle", str(bundle), "--port", str(port)]
    cmd += ["--database-url", db, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=environ)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(int(ready_s * 10)):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"server not ready after {ready_s:.0f} s")
        yield ServerProcess(proc, base)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class InProcessServer:
    base: str
    app: Any

    @property
    def srv(self) -> Any:
        return self.app.state.server


@contextlib.asynccontextmanager
async def in_process_server(bundle: Path, work: Path, **overrides: Any) -> AsyncIterator[InProcessServer]:
    """The real app (``create_app`` + ``CoreEngine``) on uvicorn in this process, for direct feeds."""
    import uvicorn

    from stream_server.app import create_app
    from stream_server.engine import CoreEngine
    from stream_server.settings import Settings

    work.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = dict(
        api_key=API_KEY,
        jwt_secret=JWT_SECRET,
        database_url=f"sqlite+aiosqlite:///{work}/bench.sqlite",
        var_dir=str(work / "var"),
        port=free_port(),
        ice_host_addresses=["127.0.0.1"],
        end_timeout_s=3600.0,
        session_create_per_min=1000,
    )
    values.update(overrides)
    settings = Settings(**values)
    engine = await asyncio.to_thread(CoreEngine, bundle)
    app = create_app(settings, engine)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield InProcessServer(f"http://127.0.0.1:{settings.port}", app)
    finally:
        server.should_exit = True
        await task


def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+)\s+(\S+)$", line)
        if m:
            with contextlib.suppress(ValueError):
                out[m.group(1)] = float(m.group(2))
    return out


# ---------------------------------------------------------------- time-compressed feeds
@dataclass
class FeedFrame:
    kind: str  # "audio" | "video"
    t_s: float
    audio: np.ndarray | None = None  # (N*2,) interleaved s16 stereo 48 kHz, as aiortc's Opus decoder gives
    rgb: np.ndarray | None = None  # (H, W, 3) uint8, thinned to the analysis rate as the server's ingest


def feed_frames(path: Path, *, analysis_fps: float, loops: int = 1) -> Iterator[FeedFrame]:
    """Decode ``path`` into server-shaped frames (``mllmdr_core.media``) ``loops`` times back to back;
    audio is brought to 48 kHz stereo s16 (sample-hold x3 from the 16 kHz synthetic track) so that the
    server's normaliser does its live work."""
    from mllmdr_core.media import AudioFrame, iter_frames, resolve_source

    src = resolve_source(path)
    offset = 0.0
    for _ in range(loops):
        last = 0.0
        for f in iter_frames(src, analysis_fps=analysis_fps):
            if isinstance(f, AudioFrame):
                mono = f.samples.reshape(-1, f.channels)[:, 0]
                up = np.repeat(mono, max(1, 48000 // f.sample_rate))
                stereo = np.repeat(up, 2).astype(np.int16)
                last = max(last, f.t_s + len(mono) / f.sample_rate)
                yield FeedFrame("audio", offset + f.t_s, audio=stereo)
            else:
                last = max(last, f.t_s)
                yield FeedFrame("video", offset + f.t_s, rgb=f.rgb)
        offset += last


async def push_into_session(
    live: Any,
    frames: Iterator[FeedFrame],
    *,
    batch_s: float = 1.0,
    on_batch: Callable[[float], Awaitable[None]] | None = None,
) -> int:
    """Put frames into a live session's ingest queues (as ``TrackDrain`` does after RTP decode), ``batch_s``
    of media at a time, waiting for the worker to drain each batch: as fast as the server can analyse,
    nothing dropped. ``on_batch(media_t)`` runs after each drained batch. Returns the frames pushed."""
    import av

    from stream_server.ingest import QueuedAudio, QueuedVideo

    def chunk() -> list[FeedFrame]:
        return list(itertools.islice(frames, 64))

    n = 0
    last_t = 0.0
    batch_end = batch_s
    while items := await asyncio.to_thread(chunk):  # decoding stays off the event loop
        for f in items:
            now = time.monotonic()
            if f.kind == "audio":
                assert f.audio is not None
                live.queues.put_audio(QueuedAudio(f.audio, 48000, 2, now))
            else:
                assert f.rgb is not None
                frame = av.VideoFrame.from_ndarray(f.rgb, format="rgb24")
                live.queues.put_video(QueuedVideo(frame, f.t_s, now))
            n += 1
            last_t = f.t_s
            if f.t_s >= batch_end:
                batch_end = f.t_s + batch_s
                await wait_drained(live, last_t)
                if on_batch is not None:
                    await on_batch(last_t)
    await wait_drained(live, last_t)
    return n


async def wait_drained(live: Any, media_t: float, timeout_s: float = 600.0) -> None:
    """Until the ingest queues are empty and the worker has analysed media up to ``media_t`` - 0.5 s."""
    deadline = time.monotonic() + timeout_s
    while live.queues.audio or live.queues.video or live.media_time_s < media_t - 0.5:
        if time.monotonic() > deadline:
            raise TimeoutError(f"session analysed {live.media_time_s:.1f} s of {media_t:.1f} s")
        await asyncio.sleep(0.01)
