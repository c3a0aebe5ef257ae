"""Synthetic interview recordings for tests, benches and demos (offline: espeak-ng + a real face photo).

The patient's microphone carries espeak-ng answers separated by pauses; the camera shows the face of
``skimage.data.astronaut()`` swaying gently. The transcript holds the interviewer's questions (spoken
in the pauses, not on the patient's track) and the patient's answers with their times.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import numpy.typing as npt

from mllmdr_core.errors import MediaError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.transcripts import dump_json

AUDIO_RATE = 48000
SCRIPT: tuple[tuple[str, str], ...] = (
    ("How have you been sleeping lately?", "Not well. I wake up at four and cannot get back to sleep."),
    ("Do you still enjoy the things you used to do?", "Not really, I stopped going out with my friends."),
    ("How is your energy during the day?", "I feel tired most days, even after resting."),
    ("How has your appetite been?", "Normal, I think. I eat three meals a day."),
    ("How do you feel about yourself?", "Sometimes I feel like I let my family down."),
    ("Can you concentrate when you read?", "It is hard to focus, I read the same page twice."),
)


@dataclass(frozen=True)
class SyntheticRecording:
    video: Path | None  # container with audio + video (None when only the wav + y4m pair was written)
    wav: Path | None
    y4m: Path | None
    transcript: Path
    duration_s: float
    lines: tuple[TranscriptLine, ...]


def speak(text: str, *, speed: int = 150, pitch: int = 50, voice: str = "en-us") -> npt.NDArray[np.int16]:
    """espeak-ng speech at ``AUDIO_RATE`` mono s16."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MediaError("espeak-ng is not installed (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        chunks: list[npt.NDArray[Any]] = []
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        with av.open(str(wav)) as container:
            for frame in container.decode(audio=0):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.int16)


def build_audio(
    duration_s: float, *, gap_s: float = 1.2, seed: int = 0
) -> tuple[npt.NDArray[np.int16], list[TranscriptLine]]:
    """Patient track of ``duration_s`` with answers after pauses; lines incl. the interviewer's questions."""
    rng = np.random.default_rng(seed)
    total = int(duration_s * AUDIO_RATE)
    track = (rng.normal(0, 30, total)).astype(np.int16)  # faint room noise
    lines: list[TranscriptLine] = []
    cache: dict[str, npt.NDArray[np.int16]] = {}
    t = 0.2
    k = 0
    misses = 0
    while misses < len(SCRIPT):
        question, answer = SCRIPT[k % len(SCRIPT)]
        k += 1
        speech = cache.get(answer)
        if speech is None:
            speech = cache[answer] = speak(answer)
        start = t + gap_s
        end = start + len(speech) / AUDIO_RATE
        if end > duration_s - 0.1:  # does not fit: try the next (maybe shorter) answer
            misses += 1
            continue
        misses = 0
        lines.append(
            TranscriptLine(round(t, 3), round(start - 0.1, 3), "clinician", question, source="script")
        )
        i0 = int(start * AUDIO_RATE)
        track[i0 : i0 + len(speech)] = np.clip(
            track[i0 : i0 + len(speech)].astype(np.int32) + speech, -32768, 32767
        )
        lines.append(TranscriptLine(round(start, 3), round(end, 3), "patient", answer, source="script"))
        t = end
    return track, lines


def face_frames(n: int, fps: float, size: tuple[int, int]) -> Iterator[npt.NDArray[np.uint8]]:
    """``n`` RGB frames (H, W, 3) of the astronaut's face with a slow sway and nod (generated lazily)."""
    from skimage.data import astronaut
    from skimage.transform import resize

    width, height = size
    face = astronaut()[0:260, 110:350]  # (260, 240, 3) head and shoulders
    scale = 0.8 * height / face.shape[0]
    fh, fw = int(face.shape[0] * scale), int(face.shape[1] * scale)
    face = (resize(face, (fh, fw), anti_aliasing=True) * 255).astype(np.uint8)
    for i in range(n):
        t = i / fps
        dx = int(0.06 * width * np.sin(2 * np.pi * t / 4.0))
        dy = int(0.04 * height * np.sin(2 * np.pi * t / 7.0))
        canvas = np.full((height, width, 3), 96, dtype=np.uint8)
        x0 = (width - fw) // 2 + dx
        y0 = (height - fh) // 2 + dy
        canvas[max(y0, 0) : y0 + fh, max(x0, 0) : x0 + fw] = face[
            max(-y0, 0) : height - y0, max(-x0, 0) : width - x0
        ]
        yield canvas


def make_recording(
    out_dir: str | Path,
    *,
    duration_s: float = 6.0,
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
    name: str = "rec",
    container: str = "mp4",
    wav_y4m: bool = False,
    seed: int = 0,
) -> SyntheticRecording:
    """Write a synthetic interview: ``name.<container>`` (h264 + aac, or vp8 + opus for webm/mkv) or the
    ``name.wav`` + ``name.y4m`` pair, plus ``name.json`` (our transcript format)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    audio, lines = build_audio(duration_s, seed=seed)
    n_frames = int(duration_s * fps)
    transcript = out / f"{name}.json"
    transcript.write_text(dump_json(lines))
    video_path = wav_path = y4m_path = None
    if wav_y4m:
        wav_path, y4m_path = out / f"{name}.wav", out / f"{name}.y4m"
        _write_wav(wav_path, audio)
        _write_video_only(y4m_path, n_frames, fps, size)
    else:
        video_path = out / f"{name}.{container}"
        _write_av(video_path, audio, n_frames, fps, size, container)
    return SyntheticRecording(video_path, wav_path, y4m_path, transcript, duration_s, tuple(lines))


def _audio_frames(audio: npt.NDArray[np.int16], samples: int) -> list[av.AudioFrame]:
    frames = []
    for i in range(0, len(audio), samples):
        chunk = audio[i : i + samples]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = i
        frame.time_base = Fraction(1, AUDIO_RATE)
        frames.append(frame)
    return frames


def _write_wav(path: Path, audio: npt.NDArray[np.int16]) -> None:
    with av.open(str(path), "w", format="wav") as cont:
        stream = cast(av.AudioStream, cont.add_stream("pcm_s16le", rate=AUDIO_RATE, layout="mono"))
        for frame in _audio_frames(audio, 960):
            for packet in stream.encode(frame):
                cont.mux(packet)
        for packet in stream.encode(None):
            cont.mux(packet)


def _write_video_only(path: Path, n: int, fps: int, size: tuple[int, int]) -> None:
    with av.open(str(path), "w", format="yuv4mpegpipe") as cont:
        stream = cast(av.VideoStream, cont.add_stream("rawvideo", rate=fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(face_frames(n, fps, size)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                cont.mux(packet)
        for packet in stream.encode(None):
            cont.mux(packet)


def _write_av(
    path: Path, audio: npt.NDArray[np.int16], n: int, fps: int, size: tuple[int, int], container: str
) -> None:
    vcodec, acodec = ("libx264", "aac") if container in ("mp4", "mov") else ("libvpx", "libopus")
    with av.open(str(path), "w") as cont:
        vstream = cast(av.VideoStream, cont.add_stream(vcodec, rate=fps))
        vstream.width, vstream.height = size
        vstream.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            vstream.options = {"preset": "ultrafast", "crf": "20"}
        else:
            vstream.bit_rate = 1_000_000
        astream = cast(av.AudioStream, cont.add_stream(acodec, rate=AUDIO_RATE, layout="mono"))
        afifo = av.AudioResampler(
            format=astream.format.name, layout="mono", rate=AUDIO_RATE, frame_size=astream.frame_size or 960
        )
        frames = face_frames(n, fps, size)
        audio_frames = _audio_frames(audio, 960)
        a_i = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vstream.encode(frame):
                cont.mux(packet)
            while a_i < len(audio_frames) and a_i * 960 / AUDIO_RATE < (i + 1) / fps:
                for resampled in afifo.resample(audio_frames[a_i]):
                    for packet in astream.encode(resampled):
                        cont.mux(packet)
                a_i += 1
        for af in audio_frames[a_i:]:
            for resampled in afifo.resample(af):
                for packet in astream.encode(resampled):
                    cont.mux(packet)
        for resampled in afifo.resample(None):
            for packet in astream.encode(resampled):
                cont.mux(packet)
        for packet in [*vstream.encode(None), *astream.encode(None)]:
            cont.mux(packet)


@dataclass(frozen=True)
class TwoPartyRecording:
    """A two-party call: ``stereo`` (one party per channel), and each party's own mono wav."""

    stereo: Path  # wav; the interviewer on ``interviewer_channel``, the patient on the other
    patient: Path  # mono wav
    interviewer: Path  # mono wav
    interviewer_channel: str  # "left" | "right"
    duration_s: float
    lines: tuple[TranscriptLine, ...]  # both parties, with their times (questions: speaker clinician)


def make_two_party(
    out_dir: str | Path,
    script: tuple[tuple[str, str], ...] = SCRIPT[:3],
    *,
    name: str = "call",
    interviewer_channel: str = "left",
    gap_s: float = 0.8,
    silent_interviewer: bool = False,
) -> TwoPartyRecording:
    """Questions (espeak-ng, a lower voice) and answers in turn, each party on its own track;
    ``silent_interviewer`` writes the interviewer's track as silence (bad-input tests)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gap = np.zeros(int(gap_s * AUDIO_RATE), dtype=np.int16)
    patient: list[npt.NDArray[np.int16]] = [gap]
    interviewer: list[npt.NDArray[np.int16]] = [gap]
    lines: list[TranscriptLine] = []
    t = gap_s
    for question, answer in script:
        for text, speaker, mine in ((question, "clinician", interviewer), (answer, "patient", patient)):
            voice = speak(text, pitch=30 if speaker == "clinician" else 60)
            other = patient if mine is interviewer else interviewer
            mine.extend([voice, gap])
            other.append(np.zeros(len(voice) + len(gap), dtype=np.int16))
            lines.append(TranscriptLine(t, t + len(voice) / AUDIO_RATE, speaker, text, "captions"))  # type: ignore[arg-type]
            t += (len(voice) + len(gap)) / AUDIO_RATE
    p_audio, i_audio = np.concatenate(patient), np.concatenate(interviewer)
    if silent_interviewer:
        i_audio = np.zeros_like(i_audio)
    left, right = (i_audio, p_audio) if interviewer_channel == "left" else (p_audio, i_audio)
    paths = out / f"{name}.wav", out / f"{name}.patient.wav", out / f"{name}.interviewer.wav"
    _write_stereo_wav(paths[0], np.stack([left, right], axis=1))
    _write_wav(paths[1], p_audio)
    _write_wav(paths[2], i_audio)
    return TwoPartyRecording(*paths, interviewer_channel, len(p_audio) / AUDIO_RATE, tuple(lines))


def _write_stereo_wav(path: Path, audio: npt.NDArray[np.int16]) -> None:
    """(N, 2) s16 → a stereo wav at ``AUDIO_RATE``."""
    with av.open(str(path), "w", format="wav") as cont:
        stream = cast(av.AudioStream, cont.add_stream("pcm_s16le", rate=AUDIO_RATE, layout="stereo"))
        for i in range(0, len(audio), 960):
            chunk = np.ascontiguousarray(audio[i : i + 960])
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, i, Fraction(1, AUDIO_RATE)
            for packet in stream.encode(frame):
                cont.mux(packet)
        for packet in stream.encode(None):
            cont.mux(packet)
