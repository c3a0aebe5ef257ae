"""What reaches the model's item prompts, per live transcript mode (issue 17, item 5).

Run: ``.venv/bin/python bench/prompt_coverage.py [--sessions 2] [--minutes 10] [--quick]``.
Prints the figures and writes ``bench/results/prompt_coverage.json``.

Sessions: the project's synthetic generator (``training.synth``: planted items, severity-driven
espeak-ng voice for the patient, the corpus's interviewer voice), lengthened to about ``--minutes`` with
8–20 answers: the 8 item questions, then rapport questions, the closing question and follow-ups
("Can you tell me more about that?") up to the drawn number of answers; each answer grows by further
sentences of its own template bank (same item, same planted level) until the session reaches its length.
Audio and transcript are rendered by ``training.synth.speech.render_speech`` (both parties).

Modes, each through the ONE prompt builder ``mllmdr_core.prompt.item_prompts`` with the demo bundle's
token budget (``Assessor.fits``, audio and video slots present, as in a live call):

- ``captions``: the planted transcript with speakers (the platform's captions).
- ``two_track``: the interviewer's and the patient's audio each through its own ``SpeechTrack`` (the
  bundle's VAD, then a fresh default recogniser per party), as the server's interviewer track.
- ``patient_only``: the patient's speech-to-text lines only: turns (``interview.pair_turns``).

Per mode: ``transcript_coverage`` (the core's measure: share of the patient's words that reached at
least one item prompt), pairs per item (mean over items of the pairs shown), the share of pairs with a
question (of ``interview.pair_transcript``'s pairs) and the word error rate against the planted
transcript (the parties the mode hears, time order); ``lost``: each patient line that reached no
prompt with its reason (:func:`lost_lines`), summed per reason as ``lost_words``. Targets: coverage
≥ 0.95 with captions or two-track, ≥ 0.90 patient-only; a question on ≥ 90 % of pairs in two-track mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEMO_BUNDLE, load_avg, write_result
from mllmdr_core.config import MllmdrConfig
from mllmdr_core.features.interview import item_scores, pair_transcript, pairs_for_item
from mllmdr_core.features.transcribe import make_transcriber, word_errors
from mllmdr_core.frames import FloatArray, Speaker, TranscriptLine
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.prompt import ItemPrompt, item_prompts, transcript_coverage
from mllmdr_core.speech_track import SpeechTrack

MODES = ("captions", "two_track", "patient_only")
TARGETS = {
    "coverage": {"captions": 0.95, "two_track": 0.95, "patient_only": 0.90},
    "question_share_two_track": 0.9,
}
FOLLOW_UP = "Can you tell me more about that?"
SEED = 17
CHUNK_S = 0.02  # the server's 20 ms audio frames


@dataclass(frozen=True)
class Session:
    """One rendered session: mixed audio, each party's audio, the planted (timed) transcript."""

    session_id: str
    answers: int
    duration_s: float
    patient: FloatArray  # (N,) 16 kHz
    interviewer: FloatArray  # (N,) 16 kHz
    planted: tuple[TranscriptLine, ...]


def _estimate_s(text: str, rate_wpm: int, pause_s: float) -> float:
    """Spoken length of a patient answer: espeak-ng speaks about 1.3× its nominal rate."""
    breaks = sum(text.count(c) for c in ".,!?")
    return len(text.split()) * 60.0 / (1.3 * rate_wpm) + breaks * pause_s


def plan(index: int, *, minutes: float, answers: int | None = None, seed: int = SEED) -> Any:
    """A ``training.synth`` session plan with ``answers`` answers (drawn 8–20 when None), lengthened
    to about ``minutes`` (0: the planned answers as they are)."""
    from training.synth.plan import _CLOSING_QUESTION, _RAPPORT_QUESTIONS, Turn, plan_session
    from training.synth.templates import answer_for, rapport_answer

    rng = np.random.default_rng([seed, index, 5])
    n = int(rng.integers(8, 21)) if answers is None else answers
    base = plan_session(seed, index, rapport_questions=0, words_neutral_share=0.0, media_neutral_share=0.0)
    items = [t for t in base.turns]  # 8 (question, answer) pairs
    pairs: list[list[Turn]] = [items[k : k + 2] for k in range(0, len(items), 2)][:n]
    extra = n - len(pairs)
    rapport = list(_RAPPORT_QUESTIONS)[: max(0, extra)]
    opening = [[Turn("clinician", q), Turn("patient", rapport_answer(q, rng))] for q in rapport]
    extra -= len(opening)
    closing = []
    if extra > 0:
        closing = [[Turn("clinician", _CLOSING_QUESTION), Turn("patient", "I think I said everything.")]]
        extra -= 1
    follow_ups = [k % len(pairs) for k in range(max(0, extra))]  # the rest: follow-ups, round-robin
    body: list[list[Turn]] = []
    for k, pair in enumerate(pairs):
        body.append(pair)
        key = pair[1].item
        assert key is not None
        for _ in range(follow_ups.count(k)):
            text, _t = answer_for(key, base.items[key], rng, neutral=False)
            body.append([Turn("clinician", FOLLOW_UP, item=key), Turn("patient", text, item=key)])
    turns = [t for pair in (*opening, *body, *closing) for t in pair]
    if minutes > 0:  # lengthen the answers round-robin with more sentences of their own bank
        v = base.voice
        total = sum(3.5 + _estimate_s(t.text, v.rate_wpm, v.pause_s) for t in turns if t.speaker == "patient")
        k = 0
        patient_idx = [i for i, t in enumerate(turns) if t.speaker == "patient"]
        while total < minutes * 60.0:
            i = patient_idx[k % len(patient_idx)]
            t = turns[i]
            more = (
                answer_for(t.item, base.items[t.item], rng, neutral=False)[0]
                if t.item
                else rapport_answer(turns[i - 1].text, rng)
            )
            turns[i] = replace(t, text=f"{t.text} {more}")
            total += _estimate_s(more, v.rate_wpm, v.pause_s)
            k += 1
    return replace(base, turns=tuple(turns))


def render(session_plan: Any) -> Session:
    """Both parties' audio (16 kHz) and the planted transcript of a plan."""
    from training.synth.speech import render_speech

    rng = np.random.default_rng([session_plan.seed, session_plan.index, 1])
    mix, patient, timed = render_speech(session_plan, clinician_audio=True, rng=rng)
    interviewer = (mix - patient).astype(np.float32)  # the interviewer's voice and the noise floor
    planted = tuple(
        TranscriptLine(t.start_s, t.end_s, "patient" if t.speaker == "patient" else "clinician", t.text)
        for t in timed
    )
    answers = sum(t.speaker == "patient" for t in timed)
    return Session(session_plan.session_id, answers, len(mix) / 16000, patient, interviewer, planted)


def transcribe_track(config: MllmdrConfig, audio: FloatArray, speaker: Speaker) -> list[TranscriptLine]:
    """One party's audio through a ``SpeechTrack`` (VAD → a fresh default recogniser), fed in the
    server's 20 ms frames."""
    lines: list[TranscriptLine] = []
    track = SpeechTrack(config, make_transcriber("pocketsphinx"), speaker=speaker, on_lines=lines.extend)
    step = int(CHUNK_S * 16000)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    for k in range(0, len(pcm), step):
        track.push_audio(pcm[k : k + step], 16000, 1, t_s=k / 16000)
    track.flush()
    return lines


def _text(lines: Sequence[TranscriptLine]) -> str:
    return " ".join(ln.text for ln in sorted(lines, key=lambda ln: ln.start_s))


def lost_lines(
    lines: Sequence[TranscriptLine], prompts: Mapping[str, ItemPrompt], max_pairs: int
) -> list[dict[str, Any]]:
    """The patient lines that reached no item prompt (not even a piece) and why: ``pairing`` (in no
    pair), ``relevance`` (its pair is about no item and got no free place: ``pairs_for_item``),
    ``slots`` (its pair is about some item but ``max_pairs`` more relevant pairs were ranked before it),
    ``budget`` (its pair was ranked for an item whose prompt was full)."""
    reached = {
        (ln.start_s, ln.end_s) for p in prompts.values() for pair in p.pairs for ln in pair.answers
    }
    pairs = pair_transcript(list(lines))
    ranked = {key: {id(p) for p in pairs_for_item(pairs, key, max_pairs)} for key in ITEM_KEYS}
    out: list[dict[str, Any]] = []
    for line in sorted(lines, key=lambda ln: ln.start_s):
        if line.speaker == "clinician" or not line.final or (line.start_s, line.end_s) in reached:
            continue
        owner = next((p for p in pairs if any(a is line for a in p.answers)), None)
        items = [k for k in ITEM_KEYS if owner is not None and id(owner) in ranked[k]]
        if owner is None:
            reason = "pairing"
        elif items:
            reason = "budget"
        else:
            q = owner.question.text if owner.question else ""
            reason = "slots" if owner.items or item_scores(q, owner.answer_text) else "relevance"
        out.append({"start_s": round(line.start_s, 1), "words": len(line.text.split()), "reason": reason,
                    "ranked_for": items, "text": line.text[:80]})
    return out


def measure(
    session: Session,
    lines: Sequence[TranscriptLine],
    heard: Sequence[Speaker],
    fits: Callable[[str], bool] | None,
    max_pairs: int,
) -> dict[str, Any]:
    """Figures of one mode's transcript ``lines`` (``heard``: the parties it holds, for the WER)."""
    prompts = item_prompts(lines, has_audio=True, has_video=True, max_pairs=max_pairs, fits=fits)
    pairs = pair_transcript(list(lines))
    reference = [ln for ln in session.planted if ln.speaker in heard]
    errors, words = word_errors(_text(reference), _text(lines))
    patient_words = sum(len(ln.text.split()) for ln in lines if ln.speaker != "clinician")
    return {
        "transcript_coverage": transcript_coverage(lines, prompts),
        "pairs_per_item": float(np.mean([len(prompts[k].pairs) for k in ITEM_KEYS])),
        "pairs": len(pairs),
        "question_share": sum(p.question is not None for p in pairs) / len(pairs) if pairs else None,
        "word_errors": errors,
        "reference_words": words,
        "wer": errors / words if words else None,
        "patient_words": patient_words,
        "prompt_chars_max": max(len(p.text) for p in prompts.values()),
        "lost": lost_lines(lines, prompts, max_pairs),
    }


def measure_session(
    session: Session,
    config: MllmdrConfig,
    fits: Callable[[str], bool] | None,
    max_pairs: int,
    *,
    modes: Sequence[str] = MODES,
    asr: dict[str, list[TranscriptLine]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Figures per mode for one session (``asr``: the parties' speech-to-text lines when already made)."""
    tracks = dict(asr or {})
    if any(m != "captions" for m in modes):
        for speaker in ("patient", "clinician") if "two_track" in modes else ("patient",):
            if speaker not in tracks:
                audio = session.patient if speaker == "patient" else session.interviewer
                tracks[speaker] = transcribe_track(config, audio, speaker)
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode == "captions":
            out[mode] = measure(session, session.planted, ("patient", "clinician"), fits, max_pairs)
        elif mode == "two_track":
            lines = [*tracks["patient"], *tracks["clinician"]]
            out[mode] = measure(session, lines, ("patient", "clinician"), fits, max_pairs)
        elif mode == "patient_only":
            out[mode] = measure(session, tracks["patient"], ("patient",), fits, max_pairs)
        else:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return out


def _asr_job(args: tuple[dict[str, Any], FloatArray, Speaker]) -> tuple[Speaker, list[TranscriptLine], float]:
    config_dict, audio, speaker = args
    t0 = time.process_time()
    lines = transcribe_track(MllmdrConfig.from_dict(config_dict), audio, speaker)
    return speaker, lines, time.process_time() - t0


def _summary(rows: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        per = [r[mode] for r in rows]
        covs = [p["transcript_coverage"] for p in per if p["transcript_coverage"] is not None]
        qs = [p["question_share"] for p in per if p["question_share"] is not None]
        errors, words = sum(p["word_errors"] for p in per), sum(p["reference_words"] for p in per)
        out[mode] = {
            "transcript_coverage": round(float(np.mean(covs)), 4) if covs else None,
            "transcript_coverage_min": round(float(min(covs)), 4) if covs else None,
            "pairs_per_item": round(float(np.mean([p["pairs_per_item"] for p in per])), 2),
            "question_share": round(float(np.mean(qs)), 4) if qs else None,
            "wer": round(errors / words, 4) if words else None,
            "lost_words": {
                reason: sum(x["words"] for p in per for x in p["lost"] if x["reason"] == reason)
                for reason in ("pairing", "relevance", "slots", "budget")
            },
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--minutes", type=float, default=10.0, help="session length (default 10)")
    p.add_argument("--quick", action="store_true", help="1 session of 3 minutes")
    p.add_argument("--workers", type=int, default=2, help="speech-to-text processes")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.sessions, args.minutes = 1, 3.0
    from tqdm import tqdm

    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle

    started = time.perf_counter()
    assessor = Assessor(load_bundle(DEMO_BUNDLE))
    config = assessor.bundle.config
    fits = lambda text: assessor.fits(text, 2)  # noqa: E731 - audio and video slots, as live
    rows: list[dict[str, dict[str, Any]]] = []
    sessions: list[dict[str, Any]] = []
    asr_cpu = 0.0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for index in tqdm(range(args.sessions), desc="sessions", unit="session"):
            session = render(plan(index, minutes=args.minutes))
            jobs = [
                (config.to_dict(), session.patient, "patient"),
                (config.to_dict(), session.interviewer, "clinician"),
            ]
            tracks: dict[str, list[TranscriptLine]] = {}
            for speaker, lines, cpu in pool.map(_asr_job, jobs):
                tracks[speaker] = lines
                asr_cpu += cpu
            row = measure_session(session, config, fits, assessor.max_pairs, asr=tracks)
            rows.append(row)
            sessions.append({"session_id": session.session_id, "answers": session.answers,
                             "duration_s": round(session.duration_s, 1), "modes": row})
    summary = _summary(rows)
    met = {
        **{
            f"coverage_{m}": (summary[m]["transcript_coverage"] or 0) >= TARGETS["coverage"][m]
            for m in MODES
        },
        "question_share_two_track": (summary["two_track"]["question_share"] or 0)
        >= TARGETS["question_share_two_track"],
    }
    for mode, s in summary.items():
        print(f"{mode:13s} coverage {s['transcript_coverage']} (min {s['transcript_coverage_min']}), "
              f"pairs/item {s['pairs_per_item']}, question share {s['question_share']}, WER {s['wer']}, "
              f"words in no prompt {s['lost_words']}")
    print("met:", met, f"wall {time.perf_counter() - started:.0f} s, load {load_avg()}")
    if not args.no_write:
        path = write_result("prompt_coverage", {
            "sessions": args.sessions, "minutes": args.minutes, "bundle": str(DEMO_BUNDLE.name),
            "budget_tokens": config.llm.max_prompt_tokens, "max_pairs": assessor.max_pairs,
            "recogniser": "pocketsphinx", "asr_cpu_s": round(asr_cpu, 1),
            "wall_s": round(time.perf_counter() - started, 1), "summary": summary, "targets": TARGETS,
            "met": met, "per_session": sessions,
        })
        print(f"wrote {path}")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
