"""SessionState: one session's streaming feature state — the single code path for live and replay.

The server (live) and ``client_sdk.replay`` (offline) both push decoded frames here, so a replayed
recording and the live call produce the same features. Pure and synchronous: the server calls these
methods from a worker thread, never on the event loop.

Contract (implemented by the core features work, issue 3):

- ``push_audio(samples, sample_rate, t_s)``: any rate/layout/dtype, ``samples`` shaped (N,) mono or
  (N, C) / interleaved per ``channels``; converted to 16 kHz mono float → VAD → streaming encoder
  (speech only, per config) → pooled audio frames in the FeatureBuffer; prosody for indicators.
  ``t_s`` is the session-relative time of the first sample (None: continue after the last chunk).
- ``push_video(rgb, t_s, eye=None)``: (H, W, 3) uint8 RGB; sampled down to ``visual.analysis_fps``;
  face tracker → visual vector → pooled visual frames in the FeatureBuffer. Every frame pushed also goes
  through the eye-openness pass (``features/eye_openness.py``, indicators only: the blink rate), which
  reads ``eye`` (the same frame's luma plane, ``media.luma_plane``) when given, else the RGB.
- ``push_eye_frame(image, t_s)``: a frame the ingest thinned out of the analysis rate (its luma plane,
  no RGB conversion needed, or RGB): the eye-openness pass only (nothing reaches the model's features);
  ``add_eye(t_s, openness)``: a value that pass made elsewhere (the offline replay runs it in its video
  thread). With ``visual.eye_pass`` off, neither runs the pass (the blink rate falls back to the
  analysed frames' blink flag).
- ``add_transcript(line)``: captions or ASR output.
- ``indicators(window_s)``: live indicators over the last ``window_s`` seconds.
- ``features(start_s, end_s)``: (audio (Ta, D_audio), visual (Tv, D_visual)) float32 for a window.
- ``snapshot(indicator_window_s)``: a ``SessionSnapshot`` of the session so far, what ``Assessor.assess``
  reads (live checkpoints and finals, replay: one code path).
- ``close()``: idempotent; releases spill files.

Details. The audio timeline starts at the first chunk's ``t_s`` (or 0); a later ``t_s`` more than two
VAD frames past the end of the audio so far is a gap, filled with silence (zeros) so times stay right;
an earlier one is ignored (counted in ``stats``). Video frames are analysed when they enter a new
``1 / analysis_fps`` slot of the session clock (30 fps in → 5 fps analysed); frames whose time goes
back are dropped. ``features()`` includes the not-yet-complete last encoder window as if the stream
ended now (zero padded, exactly what :meth:`flush` will produce when no more audio comes), so a
checkpoint sees all audio. ``flush()`` ends the audio stream (closes the open speech segment, encodes
the last window). A transcriber, when given, gets each closed speech segment's audio (at most the
last ``MAX_SEGMENT_AUDIO_S``); its ``MllmdrError`` is counted in ``stats`` and never kills the session.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import MediaError, MllmdrError
from mllmdr_core.features.audio import AudioNormalizer
from mllmdr_core.features.buffer import FeatureBuffer
from mllmdr_core.features.encoder import EncodedFrames, StreamingHubertEncoder
from mllmdr_core.features.eye_image import EyeImage
from mllmdr_core.features.eye_openness import EyeOpenness
from mllmdr_core.features.face import SPEC as INDICATOR_VISUAL_SPEC
from mllmdr_core.features.face import FaceTracker, make_face_tracker, visual_dim
from mllmdr_core.features.indicators import IndicatorTracker
from mllmdr_core.features.spec import audio_feature_dim
from mllmdr_core.features.vad import VoiceActivityDetector
from mllmdr_core.frames import AudioChunk, FloatArray, SpeechSegment, TranscriptLine
from mllmdr_core.snapshot import SessionSnapshot

SR = 16000
MAX_SEGMENT_AUDIO_S = 60.0
MAX_GAP_FILL_S = 3600.0


class _Transcriber(Protocol):
    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]: ...


class SessionState:
    """Streaming features, indicators and transcript of one session (see the module docstring)."""

    def __init__(
        self,
        config: MllmdrConfig,
        *,
        session_id: str,
        audio_encoder: StreamingHubertEncoder | None = None,
        face_tracker: FaceTracker | None = None,
        transcriber: object | None = None,
    ) -> None:
        self.config = config
        self.session_id = session_id
        if transcriber is not None and not callable(getattr(transcriber, "transcribe", None)):
            raise MediaError(
                f"transcriber {type(transcriber).__name__} has no "
                "transcribe(samples, start_s) -> list[TranscriptLine]"
            )
        self._transcriber: _Transcriber | None = transcriber  # type: ignore[assignment]
        self._encoder = audio_encoder
        self._face = face_tracker
        self._owns_face = face_tracker is None
        self._normalizer = AudioNormalizer()
        self._vad = VoiceActivityDetector(config.vad)
        self._tracker = IndicatorTracker()
        self._eyes = EyeOpenness()
        self._visual = FeatureBuffer(
            visual_dim(config.visual.spec), config.visual.analysis_fps, config.buffer
        )
        self._audio: FeatureBuffer | None = None  # built with the encoder (its width)
        self._lines: list[TranscriptLine] = []
        self._t0: float | None = None  # session time of the first audio sample
        self._in_end_s = 0.0  # session time just after the last input sample pushed
        self._n16 = 0  # 16 kHz samples fed to VAD and encoder
        self._recent: deque[FloatArray] = deque()  # chunks covering the last MAX_SEGMENT_AUDIO_S of audio
        self._recent_start = 0  # 16 kHz sample index of the first sample of _recent[0]
        self._recent_len = 0
        self._last_slot: int | None = None
        self._last_video_t: float | None = None
        self._video_end_s = 0.0
        self._flushed = False
        self._closed = False
        self._stats: dict[str, float] = {
            "audio_chunks_in": 0, "audio_seconds_in": 0.0, "audio_gap_fill_s": 0.0, "audio_time_ignored": 0,
            "video_frames_in": 0, "video_frames_analysed": 0, "video_frames_dropped": 0, "faces_found": 0,
            "speech_segments": 0, "transcript_lines": 0, "transcriber_errors": 0,
            "normalize_s": 0.0, "vad_s": 0.0, "encoder_s": 0.0, "face_s": 0.0, "transcriber_s": 0.0,
            "eye_frames": 0, "eye_s": 0.0,
        }

    # ---- audio ---------------------------------------------------------------------------------
    @property
    def audio_encoder(self) -> StreamingHubertEncoder:
        if self._encoder is None:
            self._encoder = StreamingHubertEncoder(self.config.audio)
        return self._encoder

    def _audio_buffer(self) -> FeatureBuffer:
        if self._audio is None:
            enc = self.audio_encoder
            self._audio = FeatureBuffer(enc.feature_dim, self.config.audio.pool_hz, self.config.buffer)
        return self._audio

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, channels: int = 1, t_s: float | None = None
    ) -> None:
        """Any rate / layout / dtype; ``t_s`` = session time of the first sample (None: continue)."""
        self._check_open()
        if self._flushed:
            raise MediaError("audio stream already flushed; create a new SessionState")
        n_in = np.asarray(samples).size // max(channels, 1)
        self._tracker.mark_audio()
        if self._t0 is None:
            self._t0 = float(t_s) if t_s is not None else 0.0
            self._in_end_s = self._t0
        elif t_s is not None:
            gap = float(t_s) - self._in_end_s
            if gap > 2 * self._vad.frame_s:
                self._fill_gap(min(gap, MAX_GAP_FILL_S), sample_rate)
            elif gap < -2 * self._vad.frame_s:
                self._stats["audio_time_ignored"] += 1
        t = time.perf_counter()
        x = self._normalizer.process(samples, sample_rate, channels)
        self._stats["normalize_s"] += time.perf_counter() - t
        self._stats["audio_chunks_in"] += 1
        self._stats["audio_seconds_in"] += n_in / sample_rate
        self._in_end_s += n_in / sample_rate
        self._feed16(x)

    def _fill_gap(self, gap_s: float, sample_rate: int) -> None:
        self._stats["audio_gap_fill_s"] += gap_s
        n = round(gap_s * sample_rate)
        for i in range(0, n, sample_rate):  # one second at a time
            part = np.zeros(min(sample_rate, n - i), dtype=np.float32)
            self._feed16(self._normalizer.process(part, sample_rate, 1))
        self._in_end_s += n / sample_rate

    def _feed16(self, x: FloatArray, final: bool = False) -> None:
        """16 kHz samples → VAD → encoder → buffers, indicators, transcriber."""
        if len(x) == 0 and not final:
            return
        t0 = self._t0 or 0.0
        start_s = t0 + self._n16 / SR
        self._remember(x)
        self._n16 += len(x)
        t = time.perf_counter()
        segs = self._vad.process(AudioChunk(x, start_s)) if len(x) else []
        if final:
            segs += self._vad.flush()
        self._stats["vad_s"] += time.perf_counter() - t
        t = time.perf_counter()
        enc = self.audio_encoder
        frames = enc.flush_frames(self._gate) if final else enc.push_frames(x, self._gate)
        self._stats["encoder_s"] += time.perf_counter() - t
        self._store(frames)
        self._tracker.add_segments(segs, None if final else self._vad.open_segment)
        self._tracker.advance(t0 + self._n16 / SR)
        self._stats["speech_segments"] += len(segs)
        for seg in segs:
            self._transcribe(seg)

    def _gate(self, a: float, b: float) -> bool:
        t0 = self._t0 or 0.0
        return self._vad.voiced_between(a + t0, b + t0)

    def _frame_times(self, frames: EncodedFrames) -> npt.NDArray[np.float64]:
        pool_s = 1.0 / self.config.audio.pool_hz
        return np.asarray((self._t0 or 0.0) + (frames.index + np.arange(len(frames.speech))) * pool_s)

    def _store(self, frames: EncodedFrames) -> None:
        if len(frames.speech) == 0:
            return
        times = self._frame_times(frames)
        self._audio_buffer().append(times, frames.features)
        self._tracker.add_audio_frames(times, frames.prosody, frames.speech, 1.0 / self.config.audio.pool_hz)

    def _remember(self, x: FloatArray) -> None:
        if len(x) == 0:
            return
        self._recent.append(x)
        self._recent_len += len(x)
        keep = int(MAX_SEGMENT_AUDIO_S * SR)
        while self._recent_len - len(self._recent[0]) >= keep:
            old = self._recent.popleft()
            self._recent_len -= len(old)
            self._recent_start += len(old)

    def _transcribe(self, seg: SpeechSegment) -> None:
        if self._transcriber is None:
            return
        t0 = self._t0 or 0.0
        a = max(round((seg.start_s - t0) * SR), self._recent_start)
        b = round((seg.end_s - t0) * SR)
        recent = np.concatenate(list(self._recent)) if self._recent else np.zeros(0, dtype=np.float32)
        audio = recent[a - self._recent_start : b - self._recent_start]
        if len(audio) == 0:
            return
        t = time.perf_counter()
        try:
            lines = self._transcriber.transcribe(audio, t0 + a / SR)
        except MllmdrError:
            self._stats["transcriber_errors"] += 1
            lines = []
        self._stats["transcriber_s"] += time.perf_counter() - t
        for line in lines:
            self.add_transcript(line)

    def flush(self) -> None:
        """End of the audio stream: closes the open speech segment and encodes the last window."""
        self._check_open()
        if self._flushed or self._t0 is None:
            self._flushed = True
            return
        t = time.perf_counter()
        tail = self._normalizer.flush()
        self._stats["normalize_s"] += time.perf_counter() - t
        self._feed16(tail, final=True)
        self._flushed = True

    # ---- video ---------------------------------------------------------------------------------
    def push_video(self, rgb: np.ndarray, t_s: float, eye: EyeImage | None = None) -> None:
        """(H, W, 3) uint8 RGB at session time ``t_s``; analysed at ``visual.analysis_fps``. ``eye``:
        what the eye pass reads of this frame instead of ``rgb`` (its luma plane)."""
        self._check_open()
        self._stats["video_frames_in"] += 1
        if not math.isfinite(t_s) or (self._last_video_t is not None and t_s < self._last_video_t):
            self._stats["video_frames_dropped"] += 1
            return
        self._last_video_t = t_s
        self._video_end_s = max(self._video_end_s, t_s)
        slot = math.floor(t_s * self.config.visual.analysis_fps + 1e-6)
        if self._last_slot is not None and slot <= self._last_slot:
            self.push_eye_frame(rgb if eye is None else eye, t_s)
            return
        self._last_slot = slot
        if self._face is None:
            self._face = make_face_tracker(self.config.visual)
        t = time.perf_counter()
        obs = self._face.process(rgb, t_s)
        self._stats["face_s"] += time.perf_counter() - t
        self._stats["video_frames_analysed"] += 1
        self._stats["faces_found"] += int(obs.present)
        self._visual.append(t_s, obs.vector)
        if self.config.visual.spec == INDICATOR_VISUAL_SPEC:  # indicators read that layout
            self._tracker.add_visual(t_s, obs.vector)
        elif obs.indicator_vector is not None:  # other specs may carry that layout beside theirs
            self._tracker.add_visual(t_s, obs.indicator_vector)
        # real pixels (the offline replay hands the state precomputed faces, no pixels)
        if self.config.visual.eye_pass and (eye is not None or rgb.size > 3):
            image = rgb if eye is None else eye
            t = time.perf_counter()
            self._eyes.reference(image, obs.landmarks if obs.present else None)
            self._stats["eye_s"] += time.perf_counter() - t
            self.push_eye_frame(image, t_s)

    def push_eye_frame(self, image: EyeImage, t_s: float) -> None:
        """A frame for the eye-openness pass only (blink rate; the model's features never see it):
        RGB or its luma plane (``media.luma_plane``)."""
        self._check_open()
        if not self.config.visual.eye_pass or not math.isfinite(t_s):
            return
        if isinstance(image, np.ndarray) and image.size <= 3:
            return
        t = time.perf_counter()
        openness = self._eyes.measure(image)
        self._stats["eye_s"] += time.perf_counter() - t
        self.add_eye(t_s, openness)

    def add_eye(self, t_s: float, openness: float | None) -> None:
        """One eye-openness value (None: no face / no open-eye reference yet) at media time ``t_s``."""
        self._check_open()
        if not self.config.visual.eye_pass:
            return
        self._stats["eye_frames"] += 1
        self._tracker.add_eye(t_s, openness)

    # ---- transcript, read-outs -----------------------------------------------------------------
    def add_transcript(self, line: TranscriptLine) -> None:
        """A caption or ASR line (session media time)."""
        self._check_open()
        self._lines.append(line)
        self._stats["transcript_lines"] += 1

    @property
    def transcript(self) -> list[TranscriptLine]:
        """Lines sorted by start time (captions and ASR may arrive out of order)."""
        return sorted(self._lines, key=lambda line: (line.start_s, line.end_s))

    @property
    def media_time_s(self) -> float:
        """Latest media time seen on either track."""
        return max(self._in_end_s, self._video_end_s)

    def indicators(self, window_s: float = 30.0) -> dict[str, float]:
        """Live indicators over the last ``window_s`` seconds (keys: ``features/indicators.py``)."""
        self._check_open()
        self._tracker.advance(self.media_time_s)
        return self._tracker.snapshot(window_s)

    def unavailable(self, window_s: float = 30.0) -> dict[str, str]:
        """Indicator name → why it is not available (no audio / no video / no face in the window)."""
        self._check_open()
        self._tracker.advance(self.media_time_s)
        return self._tracker.unavailable(window_s)

    def features(
        self, start_s: float | None = None, end_s: float | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """(audio (Ta, D_audio), visual (Tv, D_visual)) float32 for frames with ``start_s <= t < end_s``."""
        self._check_open()
        dim = self._encoder.feature_dim if self._encoder is not None else audio_feature_dim(self.config)
        audio = np.zeros((0, dim), dtype=np.float32)
        if self._t0 is not None:
            _, audio = self._audio_buffer().window(start_s, end_s)
            if not self._flushed:
                pending = self.audio_encoder.peek_frames(self._gate)
                times = self._frame_times(pending)
                keep = np.ones(len(times), dtype=bool)
                if start_s is not None:
                    keep &= times >= start_s
                if end_s is not None:
                    keep &= times < end_s
                audio = np.concatenate([audio, pending.features[keep]])
        _, visual = self._visual.window(start_s, end_s)
        return audio, visual

    def snapshot(self, indicator_window_s: float = 30.0) -> SessionSnapshot:
        """Everything an assessment of the session so far reads: features of the whole session (the open
        encoder window included), the transcript, indicators over the last ``indicator_window_s`` seconds
        (finite values only) and the window [0, media time]. Copies: the state may go on changing."""
        audio, visual = self.features()
        return SessionSnapshot.of(
            audio=audio,
            visual=visual,
            transcript=self.transcript,
            indicators=self.indicators(indicator_window_s),
            window=(0.0, float(self.media_time_s)),
        )

    @property
    def stats(self) -> dict[str, float]:
        """Counters (frames in, analysed, dropped …), cumulative stage times (s) and buffer sizes."""
        out = {k: float(v) for k, v in self._stats.items()}
        enc = self._encoder
        out["windows_encoded"] = float(enc.windows_encoded) if enc else 0.0
        out["windows_skipped"] = float(enc.windows_skipped) if enc else 0.0
        out["media_time_s"] = self.media_time_s
        buffers = [b for b in (self._audio, self._visual) if b is not None]
        out["buffer_memory_bytes"] = float(sum(b.memory_bytes for b in buffers)) if not self._closed else 0.0
        out["buffer_spilled_chunks"] = float(sum(b.spilled_chunks for b in buffers))
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError(f"session {self.session_id} state is closed")

    def close(self) -> None:
        """Idempotent: deletes spill files, releases the face tracker this state created."""
        if self._closed:
            return
        self._closed = True
        if self._audio is not None:
            self._audio.close()
        self._visual.close()
        if self._face is not None and self._owns_face:
            self._face.close()
        self._recent.clear()
