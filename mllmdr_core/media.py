"""Recorded media → timestamped frames, and recordings → replayable sources (replay and training).

Replay must feed ``SessionState`` the same way the server does: audio as 20 ms interleaved s16 frames
at the source rate and layout (the server gets 20 ms frames from aiortc), video as RGB frames stamped
with their presentation time. :func:`iter_frames` yields both streams merged by time.

A *source* is one recorded session, resolved by :func:`resolve_source` from:

- a video file (mp4/webm/mkv/mov/avi… anything ffmpeg reads) with an audio track or not;
- an audio file (wav/flac/ogg/mp3/m4a) with an optional same-stem ``.y4m`` beside it (or the reverse);
- a dataset session folder: DAIC-WOZ ``300_P/300_AUDIO.wav`` + ``300_TRANSCRIPT.csv``, E-DAIC
  ``600_P/600_AUDIO.wav`` + ``600_Transcript.csv`` (their visual features are OpenFace files, not video,
  so replay uses audio + transcript only), or any folder holding one recording as above.

A transcript beside the media with the same stem (``.json``, ``.vtt``, ``.srt``, ``.transcript.json``)
is picked up automatically.
"""

from __future__ import annotations

import contextlib
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

from mllmdr_core.errors import MediaError
from mllmdr_core.features.eye_image import EyeImage, LumaPlane

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".y4m", ".ogv", ".ts"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac"})
TRANSCRIPT_SUFFIXES = (".transcript.json", ".json", ".vtt", ".srt")
MAX_ANALYSIS_WIDTH = 640  # as stream_server.ingest: frames wider than this are scaled down
_DATASET_AUDIO = re.compile(r"^(\d+)_AUDIO\.wav$", re.IGNORECASE)
# Pixel formats whose first plane is 8-bit luma (what the eye-openness pass reads without an RGB conversion)
_LUMA_FORMATS = frozenset({
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
    "yuv411p", "yuvj411p", "yuv410p", "nv12", "nv21", "gray",
})
_NO_RGB = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class AudioFrame:
    """20 ms of interleaved s16 audio at the source rate; ``t_s`` is the time of the first sample."""

    samples: npt.NDArray[np.int16]  # (N, C)
    sample_rate: int
    channels: int
    t_s: float


@dataclass(frozen=True)
class VideoFrame:
    """One decoded picture as RGB with its presentation time (and its luma plane for the eye pass)."""

    rgb: npt.NDArray[np.uint8]  # (H, W, 3); (0, 0, 3) for a thinned-out frame that has ``luma``
    t_s: float
    kept: bool = True  # False: thinned out by the analysis rate, decoded for the eye-openness pass only
    luma: LumaPlane | None = None  # with ``eye_frames``, when the pixel format has a luma plane

    @property
    def eye_image(self) -> EyeImage:
        """What the eye-openness pass reads: the luma plane when there is one, else the RGB."""
        return self.luma if self.luma is not None else self.rgb


@dataclass(frozen=True)
class MediaSource:
    """One recorded session to replay."""

    session_id: str
    audio: Path | None
    video: Path | None
    transcript: Path | None = None
    kind: str = "recording"  # "recording" | "daic-woz" | "e-daic"

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.audio, self.video, self.transcript) if p is not None)


def _find_transcript(folder: Path, stem: str) -> Path | None:
    for suffix in TRANSCRIPT_SUFFIXES:
        cand = folder / f"{stem}{suffix}"
        if cand.is_file():
            return cand
    return None


def _has_stream(path: Path, kind: str) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio if kind == "audio" else container.streams.video)
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: cannot open media: {exc}") from exc


def _session_id_from_folder(folder: Path) -> str:
    name = folder.name
    return name[:-2] if name.upper().endswith("_P") else name


def resolve_source(path: str | Path, *, transcript: str | Path | None = None) -> MediaSource:
    """Turn a file or session folder into a :class:`MediaSource` (raises ``MediaError`` if none)."""
    p = Path(path)
    given = Path(transcript) if transcript is not None else None
    if p.is_dir():
        return _resolve_folder(p, given)
    if not p.is_file():
        raise MediaError(f"{p}: no such file or folder")
    suffix = p.suffix.lower()
    stem = p.stem
    found = given or _find_transcript(p.parent, stem)
    if suffix == ".y4m":
        partner = next((p.with_suffix(s) for s in sorted(AUDIO_SUFFIXES) if p.with_suffix(s).is_file()), None)
        return MediaSource(stem, partner, p, found)
    if suffix in AUDIO_SUFFIXES:
        y4m = p.with_suffix(".y4m")
        return MediaSource(stem, p, y4m if y4m.is_file() else None, found)
    if suffix in VIDEO_SUFFIXES or suffix:
        has_audio = _has_stream(p, "audio")
        has_video = _has_stream(p, "video")
        if not (has_audio or has_video):
            raise MediaError(f"{p}: holds neither audio nor video")
        return MediaSource(stem, p if has_audio else None, p if has_video else None, found)
    raise MediaError(f"{p}: not a recording (give a video file, a wav(+y4m) or a session folder)")


def _resolve_folder(folder: Path, given: Path | None) -> MediaSource:
    for wav in sorted(folder.iterdir()):
        m = _DATASET_AUDIO.match(wav.name)
        if not m:
            continue
        pid = m.group(1)
        daic = folder / f"{pid}_TRANSCRIPT.csv"
        edaic = folder / f"{pid}_Transcript.csv"
        # On case-insensitive file systems both names hit the same file; check the listing instead.
        names = {f.name for f in folder.iterdir()}
        if daic.name in names:
            return MediaSource(pid, wav, None, given or daic, "daic-woz")
        if edaic.name in names:
            return MediaSource(pid, wav, None, given or edaic, "e-daic")
        return MediaSource(pid, wav, None, given, "daic-woz")
    media = [f for f in sorted(folder.iterdir()) if f.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES]
    videos = [f for f in media if f.suffix.lower() in VIDEO_SUFFIXES and f.suffix.lower() != ".y4m"]
    primary = videos[0] if videos else (media[0] if media else None)
    if primary is None:
        raise MediaError(f"{folder}: no recording found (want a video file, a wav(+y4m) or *_AUDIO.wav)")
    src = resolve_source(primary, transcript=given)
    transcript = src.transcript or _any_transcript(folder)
    return MediaSource(_session_id_from_folder(folder), src.audio, src.video, transcript, src.kind)


def _any_transcript(folder: Path) -> Path | None:
    cands = [f for f in sorted(folder.iterdir()) if f.name.lower().endswith(TRANSCRIPT_SUFFIXES)]
    return cands[0] if len(cands) == 1 else None


def find_sources(root: str | Path) -> list[MediaSource]:
    """All sessions under ``root``: a file or session folder is one; a folder of them is many."""
    p = Path(root)
    if p.is_file():
        return [resolve_source(p)]
    if not p.is_dir():
        raise MediaError(f"{p}: no such file or folder")
    entries = sorted(p.iterdir())
    if any(_DATASET_AUDIO.match(f.name) for f in entries):
        return [resolve_source(p)]
    out: list[MediaSource] = []
    seen: set[Path] = set()
    for entry in entries:
        if entry.is_dir():
            try:
                out.append(resolve_source(entry))
            except MediaError:
                continue
        elif entry.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES and entry not in seen:
            src = resolve_source(entry)
            if any(q in seen for q in src.paths):
                continue
            seen.update(src.paths)
            out.append(src)
    if not out:
        raise MediaError(f"{p}: no recordings found")
    return out


# --- decoding -----------------------------------------------------------------------------------------


def _start_time(container: av.container.InputContainer) -> float:
    start = container.start_time
    return float(start) / av.time_base if start is not None else 0.0


@contextlib.contextmanager
def _decoding(
    path: Path, kind: Literal["audio", "video"]
) -> Iterator[tuple[av.container.InputContainer, float]]:
    """``path`` opened, with a ``kind`` stream, and its start time; FFmpeg errors become ``MediaError``."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: cannot open media: {exc}") from exc
    with container:
        if not getattr(container.streams, kind):
            raise MediaError(f"{path}: no {kind} stream")
        try:
            yield container, _start_time(container)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: {kind} decoding failed: {exc}") from exc


def iter_audio(path: Path, *, frame_ms: int = 20, max_s: float | None = None) -> Iterator[AudioFrame]:
    """Decode ``path``'s first audio stream into ``frame_ms`` interleaved s16 frames at the source rate."""
    with _decoding(path, "audio") as (container, origin):
        stream = container.streams.audio[0]
        rate = int(stream.rate or 0)
        channels = min(int(stream.channels or 1), 2)
        if rate <= 0:
            raise MediaError(f"{path}: audio stream has no sample rate")
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        n = rate * frame_ms // 1000
        pending = np.zeros((0, channels), dtype=np.int16)
        emitted = 0
        t0: float | None = None
        for frame in _with_flush(container.decode(stream)):
            for out in resampler.resample(frame):
                if t0 is None:
                    known = out.pts is not None and out.time_base is not None
                    t0 = max(0.0, float(out.pts * out.time_base) - origin) if known else 0.0  # type: ignore[operator]
                arr = (
                    out.to_ndarray().astype(np.int16, copy=False).reshape(-1, channels)
                )  # packed s16: (1, N*C) → (N, C)
                pending = np.concatenate([pending, arr]) if len(pending) else arr
                while len(pending) >= n:
                    t_s = (t0 or 0.0) + emitted / rate
                    if max_s is not None and t_s >= max_s:
                        return
                    yield AudioFrame(np.ascontiguousarray(pending[:n]), rate, channels, t_s)
                    pending = pending[n:]
                    emitted += n
        if len(pending) and (max_s is None or (t0 or 0.0) + emitted / rate < max_s):
            yield AudioFrame(np.ascontiguousarray(pending), rate, channels, (t0 or 0.0) + emitted / rate)


def _with_flush(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame | None]:
    yield from frames
    yield None  # flushes the resampler


def to_rgb(frame: av.VideoFrame, max_width: int = MAX_ANALYSIS_WIDTH) -> npt.NDArray[np.uint8]:
    """(H, W, 3) RGB scaled down to at most ``max_width`` wide — the same rule as the server's ingest."""
    if frame.width > max_width:
        height = max(2, round(frame.height * max_width / frame.width / 2) * 2)
        return (
            frame.reformat(width=max_width, height=height, format="rgb24")
            .to_ndarray()
            .astype(np.uint8, copy=False)
        )
    return frame.to_ndarray(format="rgb24").astype(np.uint8, copy=False)


def luma_plane(frame: av.VideoFrame) -> LumaPlane | None:
    """The frame's luma plane as a view (no copy, no conversion), or None for a format without one."""
    if frame.format.name not in _LUMA_FORMATS:
        return None
    plane = frame.planes[0]
    y = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * plane.height)
    view = y.reshape(plane.height, plane.line_size)[:, : plane.width]
    full = frame.format.name.startswith("yuvj") or frame.format.name == "gray" or frame.color_range == 2
    return LumaPlane(view, full_range=full, owner=frame)


def eye_frame(frame: av.VideoFrame, t_s: float, max_width: int = MAX_ANALYSIS_WIDTH) -> VideoFrame:
    """A thinned-out frame for the eye pass: its luma plane only (RGB only for a format without one)."""
    luma = luma_plane(frame)
    return VideoFrame(to_rgb(frame, max_width) if luma is None else _NO_RGB, t_s, kept=False, luma=luma)


def iter_video(
    path: Path,
    *,
    max_s: float | None = None,
    analysis_fps: float | None = None,
    max_width: int = MAX_ANALYSIS_WIDTH,
    eye_frames: bool = False,
) -> Iterator[VideoFrame]:
    """Decode ``path``'s first video stream into RGB frames stamped with their presentation time.

    With ``analysis_fps`` frames are thinned as the server's ingest thins them (keep a frame when at
    least ``0.9 / analysis_fps`` s passed since the last kept one) before the RGB conversion; with
    ``eye_frames`` the thinned-out frames come too, marked ``kept=False`` (the server's ingest hands
    them to ``SessionState.push_eye_frame``: the eye-openness pass at the full frame rate) as their luma
    plane only (:func:`eye_frame`: no RGB conversion), and every frame carries ``luma`` (the eye pass
    reads the analysed frames' luma too, one grey scale for reference and measurement).
    """
    min_dt = 0.9 / analysis_fps if analysis_fps else 0.0
    last_kept = -1e9
    with _decoding(path, "video") as (container, origin):
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        for index, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and frame.time_base is not None:
                t_s = max(0.0, float(frame.pts * frame.time_base) - origin)
            else:
                t_s = index / float(rate)
            if max_s is not None and t_s >= max_s:
                return
            if t_s - last_kept < min_dt:
                if eye_frames:
                    yield eye_frame(frame, t_s, max_width)
                continue
            last_kept = t_s
            yield VideoFrame(to_rgb(frame, max_width), t_s, luma=luma_plane(frame) if eye_frames else None)


def iter_frames(
    source: MediaSource,
    *,
    max_s: float | None = None,
    analysis_fps: float | None = None,
    eye_frames: bool = False,
) -> Iterator[AudioFrame | VideoFrame]:
    """Audio and video frames of ``source`` merged in time order (audio first on ties); video thinned
    to ``analysis_fps`` like the server's ingest when given (``eye_frames``: see :func:`iter_video`)."""
    streams: list[Iterator[tuple[float, int, int, AudioFrame | VideoFrame]]] = []
    if source.audio is not None:
        streams.append((f.t_s, 0, i, f) for i, f in enumerate(iter_audio(source.audio, max_s=max_s)))
    if source.video is not None:
        video = iter_video(source.video, max_s=max_s, analysis_fps=analysis_fps, eye_frames=eye_frames)
        streams.append((f.t_s, 1, i, f) for i, f in enumerate(video))
    if not streams:
        raise MediaError(f"{source.session_id}: nothing to decode (no audio, no video)")
    for _t, _kind, _i, frame in heapq.merge(*streams):
        yield frame


def probe_duration(source: MediaSource) -> float:
    """Duration in seconds from the container headers (0.0 when unknown)."""
    best = 0.0
    for path in {p for p in (source.audio, source.video) if p is not None}:
        try:
            with av.open(str(path)) as container:
                if container.duration is not None:
                    best = max(best, float(container.duration) / av.time_base)
                else:
                    for stream in container.streams:
                        if stream.duration is not None and stream.time_base is not None:
                            best = max(best, float(stream.duration * stream.time_base))
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{path}: cannot open media: {exc}") from exc
    return best
