"""Offline scoring: a recorded session through the same ``SessionState`` the live server uses.

Frames are pushed exactly as the server pushes them (20 ms interleaved s16 audio at the source rate,
RGB video frames stamped by pts; ``SessionState`` samples video down to the analysis rate itself), so
windowing and pooling match the live path. The transcript comes from a file or, when there is none,
from a speech-to-text ``Transcriber`` that ``SessionState`` calls for each closed speech segment.
Then ``SessionState.snapshot()`` → ``Assessor.assess(snapshot, kind="final")`` scores the whole session
(the server's end-of-session path).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from client_sdk import replay_pipeline
from client_sdk.replay_pipeline import IndicatorSample
from client_sdk.replay_profile import stage_times
from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import MediaError
from mllmdr_core.frames import FloatArray, TranscriptLine
from mllmdr_core.media import AudioFrame, MediaSource, iter_frames, resolve_source
from mllmdr_core.snapshot import finite
from mllmdr_core.speech_track import SpeechTrack
from mllmdr_core.transcripts import read_transcript

if TYPE_CHECKING:
    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import LoadedBundle


@dataclass
class ReplayOptions:
    """How to replay one recording."""

    transcript: Path | None = None  # overrides the transcript found beside the media
    asr: str | None = None  # make_transcriber source when there is no transcript (default "pocketsphinx")
    use_asr: bool = True  # False: no speech-to-text even without a transcript (audio/visual only)
    max_s: float | None = None  # replay only the first ``max_s`` seconds
    indicator_interval_s: float = 2.0  # media-time spacing of the recorded indicator series
    indicator_window_s: float = 30.0
    # Two-party recordings (speech-to-text only; a transcript file, when given, is used instead):
    interviewer_channel: Literal["left", "right"] | None = None  # stereo: this channel is the interviewer
    interviewer_audio: Path | None = None  # the interviewer's audio as its own file
    fast: bool = True  # offline pipeline (client_sdk/replay_pipeline.py); False: the server's 20 ms loop
    asr_process: bool = True  # speech-to-text in a worker process beside the replay (replay_asr.py)


Channel = Literal["left", "right"]


@dataclass
class ReplayResult:
    """Everything one replay produced."""

    source: MediaSource
    assessment: Assessment
    transcript: list[TranscriptLine]
    indicators: list[IndicatorSample]
    session_indicators: dict[str, float]  # over the whole session (for the report)
    assessed_indicators: dict[str, float]  # what the assessment saw (last window, as live)
    media_s: float
    wall_s: float
    stats: dict[str, float] = field(default_factory=dict)
    indicators_unavailable: dict[str, str] = field(default_factory=dict)  # name → reason (no audio/video)
    audio_features: FloatArray | None = None  # (Ta, Da)
    visual_features: FloatArray | None = None  # (Tv, Dv)
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage (replay_profile.py)

    @property
    def rtf(self) -> float:
        """Real-time factor: media seconds per wall-clock second (> 1: faster than real time)."""
        return self.media_s / self.wall_s if self.wall_s > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        a = self.assessment
        row: dict[str, Any] = {
            "session_id": a.session_id,
            "total": a.total,
            "binary": int(a.binary),
            "maa_total": a.maa_total,
        }
        row.update({f"item_{item.key}": item.score for item in a.items})
        row.update(
            {
                "media_s": round(self.media_s, 3),
                "wall_s": round(self.wall_s, 3),
                "rtf": round(self.rtf, 3),
                "transcript_lines": len(self.transcript),
                "transcript_source": a.model.transcript_source,
            }
        )
        return row


class Replayer:
    """Replays recordings with one loaded bundle (load it once, replay many)."""

    def __init__(
        self, bundle: LoadedBundle | str | Path, *, assessor: Assessor | None = None, int8: bool = False
    ) -> None:
        started = time.perf_counter()
        from mllmdr_core.assess import Assessor
        from mllmdr_core.bundle import load_bundle

        self.bundle = load_bundle(bundle) if isinstance(bundle, str | Path) else bundle
        if int8:
            from client_sdk.replay_profile import int8_bundle

            self.bundle = int8_bundle(self.bundle)
        self.int8 = int8
        self.assessor = assessor or Assessor(self.bundle)
        self._transcribers: dict[str, Any] = {}
        self._faces = replay_pipeline.TrackerPool()  # face trackers reused across replays
        self._faces.warm(self.bundle.config.visual)  # the face mesh is part of the model load
        self.load_s = time.perf_counter() - started  # model load (bundle, HuBERT, LLM), once per Replayer
        self._asr_process = False

    def close(self) -> None:
        """Stops the speech-to-text worker processes (idempotent)."""
        for made in self._transcribers.values():
            closing = getattr(made, "close", None)
            if callable(closing):
                closing()
        self._transcribers.clear()
        self._faces.close()

    def _transcriber(self, source: str, party: str = "patient") -> Any:
        """``pocketsphinx``, ``whisper:PATH`` or a local Whisper checkpoint PATH → a Transcriber (one per
        party: a recogniser adapts to its speaker's level), started over (``reset``) for each recording,
        so a replay's transcript does not depend on what was replayed before (as each live session's);
        in a worker process beside the replay (client_sdk/replay_asr.py) when the offline pipeline runs."""
        made = self._cached_transcriber(source, party)
        reset = getattr(made, "reset", None)
        if callable(reset):
            reset()
        return made

    def _cached_transcriber(self, source: str, party: str) -> Any:
        if self._asr_process:
            from client_sdk.replay_asr import ProcessTranscriber

            key = f"process:{party}:{source}"
            if key not in self._transcribers:
                self._transcribers[key] = ProcessTranscriber(source)
            return self._transcribers[key]
        key = f"{party}:{source}"
        if key not in self._transcribers:
            from mllmdr_core.features.transcribe import make_transcriber

            if source.startswith("whisper:"):
                made = make_transcriber("whisper", model_path=source.split(":", 1)[1])
            elif Path(source).exists():
                made = make_transcriber("whisper", model_path=source)
            else:
                made = make_transcriber(source)
            self._transcribers[key] = made
        return self._transcribers[key]

    def replay(
        self,
        source: MediaSource | str | Path,
        options: ReplayOptions | None = None,
        *,
        keep_features: bool = False,
    ) -> ReplayResult:
        """Replay one recording and return its final assessment, indicator series and transcript."""
        opts = options or ReplayOptions()
        src = (
            source if isinstance(source, MediaSource) else resolve_source(source, transcript=opts.transcript)
        )
        transcript_path = opts.transcript or src.transcript
        lines = read_transcript(transcript_path) if transcript_path is not None else []
        transcriber = None
        two_party_opts = bool(opts.interviewer_channel or opts.interviewer_audio)
        self._asr_process = opts.fast and opts.asr_process and not two_party_opts
        if not lines and opts.use_asr and src.audio is not None:
            transcriber = self._transcriber(opts.asr or "pocketsphinx")
        started, cpu_started = time.perf_counter(), time.process_time()
        two_party = transcriber is not None and bool(opts.interviewer_channel or opts.interviewer_audio)
        # the offline pipeline is for one party; a two-party recording takes the server's 20 ms loop
        visual = self.bundle.config.visual
        fast = (
            replay_pipeline.Fast(visual, src, opts, transcriber, self._faces)
            if opts.fast and not two_party
            else None
        )
        extra = {"face_tracker": fast.faces} if fast is not None and fast.faces is not None else {}
        state = self.assessor.new_session_state(src.session_id, transcriber=transcriber, **extra)
        interviewer = (
            SpeechTrack(
                self.bundle.config,
                self._transcriber(opts.asr or "pocketsphinx", "interviewer"),
                on_lines=lambda new: _add_lines(state, new),
            )
            if two_party
            else None
        )
        try:
            if fast is not None:
                series = fast.run(state, lines)
            else:
                fps = float(self.bundle.config.visual.analysis_fps)
                series = _push_all(state, src, lines, opts, fps, interviewer)
                if interviewer is not None and opts.interviewer_audio is not None:
                    _push_interviewer_file(interviewer, opts.interviewer_audio, opts.max_s)
            # End of the recording = end of the audio stream: close the open speech segment (and let
            # speech-to-text hear it) and encode the last window.
            flush = getattr(state, "flush", None)
            if callable(flush):
                flush()
            if interviewer is not None:
                interviewer.flush()
            media_s = float(state.media_time_s)
            if media_s <= 0.0:
                raise MediaError(f"{src.session_id}: no media decoded")
            # The server's final snapshot: whole-session features, indicators over the last
            # ``indicator_window_s`` (finite only), the transcript, window [0, media time].
            if fast is not None:
                fast.collect_transcript(state, transcriber)
            snap = state.snapshot(opts.indicator_window_s)
            session_indicators = finite(state.indicators(window_s=max(media_s, 1e-3)))
            unavailable = getattr(state, "unavailable", None)
            missing = dict(unavailable(max(media_s, 1e-3))) if callable(unavailable) else {}
            assess_started = time.perf_counter()
            assessment = self.assessor.assess(snap, session_id=src.session_id, kind="final")
            assess_s = time.perf_counter() - assess_started
            stats = {k: float(v) for k, v in state.stats.items()}
            if fast is not None:  # the speech-to-text worker's errors, as the state counts inline ones
                stats["transcriber_errors"] += fast.times.extra.get("speech_to_text_errors", 0.0)
        finally:
            state.close()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        stages = stage_times(stats, fast.times if fast else None, assess_s, wall, self.load_s, cpu)
        return ReplayResult(
            source=src,
            assessment=assessment,
            transcript=list(snap.transcript),
            indicators=series,
            session_indicators=session_indicators,
            assessed_indicators=snap.indicators,
            indicators_unavailable=missing,
            media_s=media_s,
            wall_s=wall,
            stats=stats,
            audio_features=snap.audio if keep_features else None,
            visual_features=snap.visual if keep_features else None,
            stages=stages,
        )


def split_channels(frame: AudioFrame, interviewer: Channel) -> tuple[AudioFrame, AudioFrame]:
    """A stereo frame → (patient, interviewer) mono frames; the interviewer's is ``interviewer``."""
    if frame.channels != 2:
        raise MediaError(
            f"interviewer_channel={interviewer} needs stereo audio, got {frame.channels} channel(s)"
        )
    i = 0 if interviewer == "left" else 1
    patient = np.ascontiguousarray(frame.samples[:, 1 - i : 2 - i])
    other = np.ascontiguousarray(frame.samples[:, i : i + 1])
    return (
        AudioFrame(patient, frame.sample_rate, 1, frame.t_s),
        AudioFrame(other, frame.sample_rate, 1, frame.t_s),
    )


def _add_lines(state: Any, lines: list[TranscriptLine]) -> None:
    for line in lines:
        state.add_transcript(line)


def _push_interviewer_file(track: SpeechTrack, path: Path, max_s: float | None) -> None:
    """The interviewer's own audio file → ``track`` (as the server: continuous after the first frame)."""
    src = MediaSource(session_id="interviewer", audio=Path(path), video=None)
    first = True
    for frame in iter_frames(src, max_s=max_s):
        if isinstance(frame, AudioFrame):
            track.push_audio(
                frame.samples.reshape(-1), frame.sample_rate, frame.channels, frame.t_s if first else None
            )
            first = False


def _push_all(
    state: Any,
    src: MediaSource,
    lines: Sequence[TranscriptLine],
    opts: ReplayOptions,
    analysis_fps: float,
    interviewer: SpeechTrack | None = None,
) -> list[IndicatorSample]:
    """Feed every frame (and transcript lines once media time passes their end) into ``state``; with
    ``opts.interviewer_channel`` that channel of each stereo frame goes to ``interviewer`` instead."""
    pending = sorted(lines, key=lambda ln: ln.end_s)
    k = 0
    series: list[IndicatorSample] = []
    next_sample = opts.indicator_interval_s
    media_t = 0.0
    first_audio = True
    for frame in iter_frames(src, max_s=opts.max_s, analysis_fps=analysis_fps, eye_frames=True):
        if isinstance(frame, AudioFrame):
            # As the server: interleaved (N*C,) samples; continuous audio after the first frame.
            t_s = frame.t_s if first_audio else None
            first_audio = False
            if opts.interviewer_channel is not None:
                frame, theirs = split_channels(frame, opts.interviewer_channel)
                if interviewer is not None:
                    interviewer.push_audio(theirs.samples.reshape(-1), theirs.sample_rate, 1, t_s)
            state.push_audio(frame.samples.reshape(-1), frame.sample_rate, channels=frame.channels, t_s=t_s)
            media_t = max(media_t, frame.t_s + len(frame.samples) / frame.sample_rate)
        elif not frame.kept:  # thinned out (as the server's ingest): the eye-openness pass only
            state.push_eye_frame(frame.eye_image, frame.t_s)
            continue
        else:
            state.push_video(frame.rgb, frame.t_s, eye=frame.luma)
            media_t = max(media_t, frame.t_s)
        while k < len(pending) and pending[k].end_s <= media_t:
            state.add_transcript(pending[k])
            k += 1
        while media_t >= next_sample:
            series.append(
                IndicatorSample(next_sample, dict(state.indicators(window_s=opts.indicator_window_s)))
            )
            next_sample += opts.indicator_interval_s
    for line in pending[k:]:
        state.add_transcript(line)
    return series


