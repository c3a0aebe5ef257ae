"""Speech-to-text figures: word error rate and real-time factor of each available transcriber.

Run: ``.venv/bin/python bench/transcribe_wer.py [--whisper PATH_OR_ID] [--sessions 2] [--quick]``.
Prints the figures and writes ``bench/results/transcribe_wer.json``.

Speech with known text, 16 kHz mono:
- ``builtin``: two dozen interview-like answers spoken by espeak-ng with varied voices, rates (130–190
  wpm) and pitches, one utterance per speech segment, all through one transcriber (one session).
- ``synth``: the patient turns of the first ``--sessions`` sessions of the synthetic corpus, rendered
  by the corpus's own ``training.synth.speech.espeak`` (severity-driven voice, rate, pitch, pauses),
  one transcriber per session; the corpus's turn text is the reference. Its measured speaking rate is
  reported beside the planned one (a resampling fault in the renderer shows up there).
- ``synth_respoken``: the same turns and voice parameters spoken by this script's espeak-ng call
  (``-w`` WAV, resampled from its real rate), as a check on the renderer.
  Both are skipped when ``training.synth`` is not importable.

WER = (substitutions + deletions + insertions) / reference words over the whole set (lower-cased,
punctuation removed). RTF = transcription wall time / audio duration (lower is faster; < 1 keeps up
with live speech); CPU-RTF = process CPU time / audio duration, less sensitive to other load on a
shared machine (the load average is recorded with the figures). Whisper is measured only when a
checkpoint is given (none can be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllmdr_core.features.audio import to_mono_16k
from mllmdr_core.features.transcribe import (
    SAMPLE_RATE,
    Transcriber,
    make_transcriber,
    word_errors,
)
from mllmdr_core.frames import FloatArray

RESULTS = Path(__file__).resolve().parent / "results" / "transcribe_wer.json"

SENTENCES: tuple[str, ...] = (
    "I am doing okay today, thank you for asking.",
    "I am from a small town in Ohio.",
    "I work as a teacher at the local school.",
    "I used to enjoy playing music with my friends.",
    "Lately I do not really enjoy anything anymore.",
    "My mood has been pretty low for a few weeks.",
    "I feel down most days and I do not know why.",
    "I have been sleeping badly.",
    "I wake up at four in the morning and cannot get back to sleep.",
    "Sometimes I sleep for twelve hours and still feel tired.",
    "I feel tired most of the time, even after resting.",
    "I have no energy to do the things I need to do.",
    "Normal, I think. I eat three meals a day.",
    "I have lost my appetite and I skip breakfast.",
    "I have been eating too much at night.",
    "Sometimes I feel like a failure.",
    "I think I let my family down.",
    "I feel pretty good about myself most of the time.",
    "I find it hard to concentrate at work.",
    "I read the same page twice and forget what it said.",
    "I cannot focus on the television for very long.",
    "People told me I talk more slowly than before.",
    "I feel restless and I cannot sit still.",
    "No, I think that is everything. Thank you.",
)
VOICES: tuple[tuple[str, int, int], ...] = (  # (espeak-ng voice, rate wpm, pitch)
    ("en-us", 160, 50),
    ("en-us+f2", 150, 60),
    ("en-us+m3", 130, 35),
    ("en-us", 190, 45),
    ("en-us+f3", 170, 70),
    ("en-us+m1", 140, 40),
)


@dataclass(frozen=True)
class Utterance:
    text: str
    audio: FloatArray  # (N,) 16 kHz mono
    group: str  # one transcriber per group (a session)


def espeak(
    text: str, voice: str, rate: int, pitch: int, amplitude: int = 100, gap_10ms: int = 0
) -> FloatArray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", str(amplitude)]
        cmd += ["-g", str(gap_10ms), "-w", str(wav), text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        with wave.open(str(wav)) as w:
            rate_hz = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return to_mono_16k(pcm, rate_hz)


def builtin_set(quick: bool) -> list[Utterance]:
    sentences = SENTENCES[::3] if quick else SENTENCES
    return [
        Utterance(text, espeak(text, *VOICES[k % len(VOICES)]), "builtin")
        for k, text in enumerate(sentences)
    ]


def synth_sets(sessions: int, seed: int) -> tuple[list[Utterance], list[Utterance], list[int]] | None:
    """(corpus rendering, respoken, planned rates in wpm) for the patient turns of the first sessions."""
    try:
        from training.synth.plan import plan_session
        from training.synth.speech import espeak as synth_espeak
    except ImportError:
        return None
    corpus: list[Utterance] = []
    respoken: list[Utterance] = []
    rates: list[int] = []
    for index in range(sessions):
        plan = plan_session(seed, index)
        v = plan.voice
        for turn in plan.turns:
            if turn.speaker == "patient":
                corpus.append(Utterance(turn.text, synth_espeak(turn.text, v), plan.session_id))
                audio = espeak(turn.text, v.voice, v.rate_wpm, v.pitch, v.amplitude, v.word_gap_10ms)
                respoken.append(Utterance(turn.text, audio, plan.session_id))
                rates.append(v.rate_wpm)
    return corpus, respoken, rates


def speaking_rate_wpm(utterances: Sequence[Utterance]) -> float:
    words = sum(len(u.text.split()) for u in utterances)
    return 60.0 * words / max(sum(len(u.audio) for u in utterances) / SAMPLE_RATE, 1e-9)


def evaluate(factory: Callable[[], Transcriber], utterances: Sequence[Utterance]) -> dict[str, Any]:
    errors = words = 0
    audio_s = wall_s = cpu_s = 0.0
    transcribers: dict[str, Transcriber] = {}
    examples: list[dict[str, str]] = []
    t_media = 0.0
    for utt in utterances:
        asr = transcribers.setdefault(utt.group, factory())
        t0, c0 = time.perf_counter(), time.process_time()
        lines = asr.transcribe(utt.audio, t_media)
        wall_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        hyp = " ".join(line.text for line in lines)
        e, n = word_errors(utt.text, hyp)
        errors, words = errors + e, words + n
        dur = len(utt.audio) / SAMPLE_RATE
        audio_s += dur
        t_media += dur + 2.0
        if len(examples) < 6:
            examples.append({"reference": utt.text, "hypothesis": hyp})
    return {
        "utterances": len(utterances),
        "reference_words": words,
        "word_errors": errors,
        "wer": round(errors / max(words, 1), 4),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall_s, 2),
        "rtf": round(wall_s / max(audio_s, 1e-9), 3),
        "cpu_s": round(cpu_s, 2),
        "cpu_rtf": round(cpu_s / max(audio_s, 1e-9), 3),  # CPU seconds per audio second (all threads)
        "examples": examples,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whisper", help="Whisper checkpoint: local path or HF id (not downloaded otherwise)")
    ap.add_argument("--sessions", type=int, default=2, help="synthetic-corpus sessions (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic-corpus seed")
    ap.add_argument("--quick", action="store_true", help="a third of the built-in sentences")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    sets: dict[str, list[Utterance]] = {"builtin": builtin_set(args.quick)}
    notes: list[str] = []
    synth = synth_sets(args.sessions, args.seed) if args.sessions > 0 else None
    rates: dict[str, float] = {}
    if synth:
        sets["synth"], sets["synth_respoken"], planned = synth
        rates = {"planned_mean": round(float(np.mean(planned)), 1)}
        for name in ("synth", "synth_respoken"):
            rates[name] = round(speaking_rate_wpm(sets[name]), 1)
        print(f"speaking rate (words/min incl. pauses): {rates}")
    else:
        notes.append("synthetic corpus: not used (training.synth not importable or --sessions 0)")

    factories: dict[str, Callable[[], Transcriber]] = {
        "pocketsphinx": lambda: make_transcriber("pocketsphinx"),
    }
    if args.whisper:
        factories["whisper"] = lambda: make_transcriber("whisper", args.whisper)
    else:
        notes.append("whisper: no checkpoint given (pass --whisper PATH_OR_ID); not measured")

    results: dict[str, dict[str, Any]] = {}
    for name, factory in factories.items():
        results[name] = {}
        for set_name, utterances in sets.items():
            r = evaluate(factory, utterances)
            results[name][set_name] = r
            print(
                f"{name:12s} {set_name:8s} utterances={r['utterances']:3d} "
                f"words={r['reference_words']:4d} WER={r['wer']:.3f} RTF={r['rtf']:.2f} "
                f"CPU-RTF={r['cpu_rtf']:.2f} (audio {r['audio_s']:.1f} s, wall {r['wall_s']:.1f} s)"
            )
    for note in notes:
        print(note)
    report = {
        "bench": "transcribe_wer",
        "command": "python bench/transcribe_wer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "sets": {k: {"utterances": len(v), "audio_s": round(sum(len(u.audio) for u in v) / SAMPLE_RATE, 2)}
                 for k, v in sets.items()},
        "speaking_rate_wpm": rates,
        "results": results,
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
