"""Speech: espeak-ng renders each turn; the session's audio and transcript timeline are assembled here."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
from scipy.signal import resample_poly

from mllmdr_core.errors import MediaError
from mllmdr_core.frames import FloatArray
from training.synth.plan import SessionPlan, VoiceParams

RATE = 16000
CLINICIAN_VOICE = VoiceParams("en-us+f3", 165, 55, "medium", 90, 0, 0.0, 0.2)
_BREAK_RE = re.compile(r"(?<=[.,!?])\s+")


@dataclass(frozen=True)
class TimedTurn:
    speaker: str
    text: str
    start_s: float
    end_s: float
    item: str | None


def espeak(text: str, voice: VoiceParams) -> FloatArray:
    """Synthesize ``text`` (pauses of ``voice.pause_s`` at sentence/comma breaks) → 16 kHz float32."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MediaError(
            "espeak-ng is not installed (Debian package espeak-ng; scripts/setup.sh installs it)"
        )
    brk = f'<break time="{int(voice.pause_s * 1000)}ms"/>'
    body = brk.join(escape(part) for part in _BREAK_RE.split(text.strip()))
    ssml = f'<speak><prosody range="{voice.pitch_range}">{body}</prosody></speak>'
    cmd = [exe, "--stdout", "-m", "-v", voice.voice, "-s", str(voice.rate_wpm), "-p", str(voice.pitch)]
    cmd += ["-a", str(voice.amplitude), "-g", str(voice.word_gap_10ms), ssml]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise MediaError(
            f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}"
        )
    raw = proc.stdout
    i = raw.find(b"data")  # --stdout writes a streaming WAV header (sizes unset): take what follows
    if raw[:4] != b"RIFF" or i < 0:
        raise MediaError("espeak-ng wrote no WAV data")
    pcm = (
        np.frombuffer(raw[i + 8 : len(raw) - (len(raw) - i - 8) % 2], dtype="<i2").astype(np.float32)
        / 32768.0
    )
    x = resample_poly(pcm, 320, 441).astype(np.float32)  # 22050 Hz → 16 kHz, (N,)
    return _trim(x)


def _trim(x: FloatArray, threshold: float = 0.003) -> FloatArray:
    idx = np.flatnonzero(np.abs(x) > threshold)
    return x[idx[0] : idx[-1] + 1] if len(idx) else x[:0]


def estimate_duration(text: str, wpm: int = 185) -> float:
    """Spoken length of a line that is not rendered (patient-only audio)."""
    return 0.3 + len(text.split()) * 60.0 / wpm


def render_speech(
    plan: SessionPlan, *, clinician_audio: bool, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, list[TimedTurn]]:
    """(session audio, patient-only audio, timed turns); 16 kHz mono, both arrays (N,)."""
    pieces: list[tuple[float, FloatArray, bool]] = []  # (start, samples, is_patient)
    timed: list[TimedTurn] = []
    t = 0.6
    for turn in plan.turns:
        if turn.speaker == "clinician":
            if clinician_audio:
                x = espeak(turn.text, CLINICIAN_VOICE) * 0.8
                pieces.append((t, x, False))
                dur = len(x) / RATE
            else:
                dur = estimate_duration(turn.text)
            timed.append(TimedTurn("clinician", turn.text, t, t + dur, turn.item))
            t += dur + plan.voice.latency_s * float(rng.uniform(0.8, 1.2))
        else:
            x = espeak(turn.text, plan.voice)
            pieces.append((t, x, True))
            dur = len(x) / RATE
            timed.append(TimedTurn("patient", turn.text, t, t + dur, turn.item))
            t += dur + float(rng.uniform(0.4, 0.7))
    total = int((t + 0.6) * RATE)
    patient = np.zeros(total, dtype=np.float32)  # (N,)
    other = np.zeros(total, dtype=np.float32)  # (N,)
    for start, x, is_patient in pieces:
        i = int(start * RATE)
        (patient if is_patient else other)[i : i + len(x)] += x[: total - i]
    noise = (rng.standard_normal(total) * 0.0015).astype(np.float32)  # faint noise floor
    return np.clip(patient + other + noise, -1.0, 1.0), patient, timed


def speech_envelope(audio: FloatArray, times: FloatArray, win_s: float = 0.06) -> FloatArray:
    """RMS of ``audio`` around each time (drives the mouth), normalised to about [0, 1]."""
    half = int(win_s * RATE / 2)
    sq = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    idx = np.clip((times * RATE).astype(int), 0, len(audio))
    lo, hi = np.clip(idx - half, 0, len(audio)), np.clip(idx + half, 0, len(audio))
    rms = np.sqrt((sq[hi] - sq[lo]) / np.maximum(hi - lo, 1))
    return np.clip(rms / 0.15, 0.0, 1.0).astype(np.float32)
