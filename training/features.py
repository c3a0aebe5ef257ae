"""Feature extraction for a corpus through :class:`~mllmdr_core.session_state.SessionState`.

The same code path as the live server and offline replay: media files are decoded by
``mllmdr_core.media.iter_frames`` (``av``; 20 ms s16 audio frames at the source rate, RGB video thinned
to the analysis rate like the server's ingest) and pushed, with their timestamps, into a
``SessionState`` built from the bundle config, so training features equal what the server computes for
the same recording. One ``.npz`` per session in the cache directory:

- ``audio`` (Ta, Da) float32, ``visual`` (Tv, Dv) float32 — ``SessionState.features()`` of the whole session
- ``indicators`` — JSON of ``SessionState.indicators(window_s=duration)``
- ``audio_spec``, ``visual_spec``, ``duration_s``

Files are written atomically, so an interrupted run resumes by skipping finished sessions. Sessions
run in parallel worker processes (one torch thread each); the audio encoder is built once, saved to
``encoder_dir`` and loaded by every worker, so all sessions (and the exported bundle) share weights.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import ConfigError, MllmdrError
from mllmdr_core.frames import FloatArray
from mllmdr_core.media import AudioFrame, MediaSource, iter_frames


@dataclass(frozen=True)
class MediaJob:
    """One session to extract: its ``training.data`` ``SessionRecord`` (audio files, video file or
    dataset visual feature files) and where the ``.npz`` goes."""

    session_id: str
    out_path: str
    record: Any


def dataset_visual(rec: Any, cfg: MllmdrConfig) -> FloatArray:
    """A record's OpenFace/CLNF files → "visual-v2" vectors at the analysis rate (the live schema)."""
    from mllmdr_core.features.visual_schema import V2_SPEC
    from training.data.visual_v2 import pool_v2

    if cfg.visual.spec != V2_SPEC:
        raise ConfigError(
            f"session {rec.session_id}: dataset visual features map onto {V2_SPEC!r}, the config's "
            f"visual.spec is {cfg.visual.spec!r}: set model.visual.spec={V2_SPEC}"
        )
    table = rec.load_visual_v2()
    return pool_v2(table.times, table.values, cfg.visual.analysis_fps)


@dataclass
class SessionFeatures:
    audio: FloatArray  # (Ta, Da)
    visual: FloatArray  # (Tv, Dv)
    indicators: dict[str, float]
    audio_spec: str
    visual_spec: str
    duration_s: float


def save_features(path: Path, feats: SessionFeatures) -> None:
    """Atomic ``.npz`` write (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        audio=feats.audio.astype(np.float32),
        visual=feats.visual.astype(np.float32),
        indicators=np.array(json.dumps(feats.indicators)),
        audio_spec=np.array(feats.audio_spec),
        visual_spec=np.array(feats.visual_spec),
        duration_s=np.array(feats.duration_s),
    )
    os.replace(tmp, path)


def load_features(path: Path) -> SessionFeatures:
    if not path.exists():
        raise MllmdrError(f"feature cache {path} is missing: run `mllmdr-train features` first")
    with np.load(path) as z:
        return SessionFeatures(
            audio=z["audio"].astype(np.float32),
            visual=z["visual"].astype(np.float32),
            indicators={k: float(v) for k, v in json.loads(str(z["indicators"])).items()},
            audio_spec=str(z["audio_spec"]),
            visual_spec=str(z["visual_spec"]),
            duration_s=float(z["duration_s"]),
        )


_WORKER: dict[str, Any] = {}


def _init_worker(config_dict: dict[str, Any], encoder_dir: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["config"] = MllmdrConfig.from_dict(config_dict)
    _WORKER["encoder_dir"] = encoder_dir


def _make_state(cfg: MllmdrConfig, session_id: str, encoder_dir: str | None) -> Any:
    from mllmdr_core.features.encoder import StreamingHubertEncoder
    from mllmdr_core.session_state import SessionState

    encoder = None
    if encoder_dir is not None:
        from transformers import HubertModel

        cached = _WORKER.get("hubert")  # (encoder_dir, model): one load per process and encoder
        if cached is None or cached[0] != encoder_dir:
            cached = (encoder_dir, HubertModel.from_pretrained(encoder_dir).eval())
            _WORKER["hubert"] = cached
        model = cached[1]
        encoder = StreamingHubertEncoder(cfg.audio, model=model)
    return SessionState(cfg, session_id=session_id, audio_encoder=encoder)


class _AudioRun:
    """Consecutive 20-ms audio frames joined into one ``push_audio`` call of up to ``max_s`` seconds.

    ``SessionState`` is chunk-size invariant (its VAD and encoder re-frame the 16 kHz stream), so
    this gives the same features as frame-by-frame pushes at a fraction of the per-call overhead
    (``tests/training/test_features.py`` checks equality). A run breaks at a gap in time or a change
    of rate or layout, and before every video frame."""

    def __init__(self, state: Any, max_s: float) -> None:
        self.state, self.max_s = state, max_s
        self.parts: list[np.ndarray] = []
        self.t_s = 0.0
        self.rate = self.channels = 0
        self.n = 0

    def add(self, frame: AudioFrame) -> None:
        end = self.t_s + self.n / self.rate if self.parts else 0.0
        if self.parts and (
            frame.sample_rate != self.rate
            or frame.channels != self.channels
            or abs(frame.t_s - end) > 0.5 / frame.sample_rate + 1e-6
        ):
            self.push()
        if not self.parts:
            self.t_s, self.rate, self.channels = frame.t_s, frame.sample_rate, frame.channels
        self.parts.append(frame.samples)
        self.n += len(frame.samples)
        if self.n >= self.max_s * self.rate:
            self.push()

    def push(self) -> None:
        if self.parts:
            samples = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
            self.state.push_audio(samples, self.rate, self.channels, t_s=self.t_s)
        self.parts, self.n = [], 0


def extract_one(
    job: MediaJob, cfg: MllmdrConfig, encoder_dir: str | None, coalesce_s: float = 1.0
) -> SessionFeatures:
    """Decode one session's media into a fresh SessionState and read back its whole-session features.

    ``coalesce_s``: audio frames are pushed in runs of up to this many seconds (0: frame by frame)."""
    state = _make_state(cfg, job.session_id, encoder_dir)
    try:
        duration = 0.0
        rec = job.record
        if len(rec.audio) > 1 or (rec.audio and rec.audio[0].start_s):
            samples = rec.load_audio()  # several files on one session clock (CMDC): one 16 kHz stream
            step = 320
            for start in range(0, len(samples), step):
                state.push_audio(samples[start : start + step], 16000, 1, t_s=start / 16000)
            duration = len(samples) / 16000
            audio_file = None
        else:
            audio_file = rec.audio_path
        source = MediaSource(job.session_id, audio=audio_file, video=rec.video_path)
        frames = (
            iter_frames(source, analysis_fps=cfg.visual.analysis_fps) if audio_file or rec.video_path else []
        )
        pending = _AudioRun(state, coalesce_s)
        for frame in frames:
            if isinstance(frame, AudioFrame):
                pending.add(frame)
                duration = max(duration, frame.t_s + len(frame.samples) / frame.sample_rate)
            else:
                pending.push()  # audio up to this picture first: the order the live ingest keeps
                state.push_video(frame.rgb, frame.t_s)
                duration = max(duration, frame.t_s)
        pending.push()
        audio, visual = state.features()
        indicators = state.indicators(window_s=max(duration, 1.0))
        from mllmdr_core.features.spec import extractor_spec

        spec = extractor_spec(cfg)
        visual_spec = spec.visual_spec
        if rec.video_path is None and rec.visual_format is not None:
            visual = dataset_visual(rec, cfg)
        return SessionFeatures(
            audio=np.asarray(audio, dtype=np.float32),
            visual=np.asarray(visual, dtype=np.float32),
            indicators={k: float(v) for k, v in indicators.items()},
            audio_spec=spec.audio_spec,
            visual_spec=visual_spec,
            duration_s=duration,
        )
    finally:
        state.close()


def _run_job(job: MediaJob) -> tuple[str, float]:
    t0 = time.monotonic()
    if Path(job.out_path).exists():  # written meanwhile by another run on the same cache
        return job.session_id, 0.0
    feats = extract_one(job, _WORKER["config"], _WORKER["encoder_dir"])
    save_features(Path(job.out_path), feats)
    return job.session_id, time.monotonic() - t0


def extract_corpus(
    jobs: Sequence[MediaJob],
    cfg: MllmdrConfig,
    *,
    encoder_dir: Path | None,
    workers: int = 2,
    progress: bool = True,
    position: int | None = None,
) -> dict[str, float]:
    """Extract every job whose ``out_path`` does not exist yet. Returns {session_id: seconds}.
    ``position``: the progress bar's line (when another bar runs at the same time)."""
    todo = [j for j in jobs if not Path(j.out_path).exists()]
    timings: dict[str, float] = {}
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        desc="features",
        disable=not progress,
        position=position,
    )
    enc = str(encoder_dir) if encoder_dir is not None else None
    if workers <= 1:
        _init_worker(cfg.to_dict(), enc)
        for job in todo:
            sid, secs = _run_job(job)
            timings[sid] = secs
            bar.update(1)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork after torch init can deadlock OpenMP
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg.to_dict(), enc)
        ) as pool:
            futures = [pool.submit(_run_job, job) for job in todo]
            for fut in as_completed(futures):
                sid, secs = fut.result()
                timings[sid] = secs
                bar.update(1)
    bar.close()
    return timings
