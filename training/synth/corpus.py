"""Write a synthetic corpus in the DAIC-WOZ layout (readable by ``training.data.DaicWozReader``).

Per session ``{id}_P/``: ``{id}_TRANSCRIPT.csv`` (tab-separated, Ellie/Participant), ``{id}_AUDIO.wav``
(16 kHz mono; patient only by default, or both speakers), ``{id}_VIDEO.mp4`` (H.264, ``fps``,
``width``×``height``) and ``synth_meta.json`` (planted items, mode, media parameters, per-item
evidence). At the root: the three DAIC-WOZ split CSVs with item columns and ``corpus.json``.

Test rounds: a test split is scored once (``training.ledger``). ``test_round`` k > 1 makes a fresh one:
round k's test-only sessions come after those of the earlier rounds (``earlier_test_sessions``, their own
id range) and draw from their own seed stream (new draws from the same held-out banks: new plans, voice
and face parameters, but mostly answers earlier rounds' test sessions also had); every session an earlier
round tested (the first ``n`` sessions whose drawn split is test and the earlier rounds' test-only ones)
is *retired*: in no split, listed in ``corpus.json``. The train and dev sessions do not change.
Generation is incremental: a session whose folder holds a complete ``synth_meta.json`` matching its plan
is kept, not rendered again.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from mllmdr_core.errors import ConfigError
from mllmdr_core.phq8 import PHQ8_ITEMS
from training.data.daic import SPLIT_FILES
from training.data.wav import write_wav
from training.overlap import content_overlap
from training.synth.face import FaceRig, make_timeline, write_video
from training.synth.plan import SessionPlan, plan_session
from training.synth.speech import RATE, TimedTurn, render_speech, speech_envelope

SPEAKER_NAMES = {"clinician": "Ellie", "patient": "Participant"}
ROUND_STREAM = 18  # seed-sequence entry of a later test round's sessions: [seed, index, ROUND_STREAM, k]
META = "synth_meta.json"


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; every session depends only on (seed, index) and these settings."""

    n: int = 8
    seed: int = 0
    fps: float = 5.0
    width: int = 320
    height: int = 240
    audio_speakers: Literal["patient", "both"] = "patient"
    words_neutral_share: float = 0.2  # words neutral: only voice and face carry the signal
    media_neutral_share: float = 0.1  # voice and face neutral: only the words carry it
    rapport_questions: int = 1  # content-free opening questions before the eight item questions
    closing_question: bool = False  # "Is there anything else you would like to tell me?"
    video: bool = True
    split_shares: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, dev, test
    first_id: int = 1000
    # content-held-out test split: test sessions draw answers, questions, voices and the (mirrored) face
    # from banks disjoint from train/dev (training.synth.templates.bank)
    held_out_test: bool = True
    test_sessions: int = 0  # extra test-only sessions after the n split ones (indices n … n+test_sessions-1)
    test_words_neutral_share: float | None = (
        None  # masked share of the test split (None: words_neutral_share)
    )
    # a fresh test split (module docstring): round k > 1 retires every session earlier rounds tested
    test_round: int = 1
    earlier_test_sessions: tuple[int, ...] = ()  # test-only sessions of rounds 1 … test_round-1

    def __post_init__(self) -> None:  # YAML gives lists
        object.__setattr__(self, "earlier_test_sessions", tuple(int(k) for k in self.earlier_test_sessions))
        object.__setattr__(self, "split_shares", tuple(self.split_shares))

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"synthetic corpus size must be ≥ 1, got {self.n}")
        if self.fps <= 0 or self.width % 2 or self.height % 2 or self.width < 64:
            raise ConfigError(
                f"bad video settings: {self.fps} fps, {self.width}x{self.height} (even sizes ≥ 64)"
            )
        if self.audio_speakers not in ("patient", "both"):
            raise ConfigError(f"audio_speakers must be 'patient' or 'both', got {self.audio_speakers!r}")
        test_share = (
            self.words_neutral_share
            if self.test_words_neutral_share is None
            else self.test_words_neutral_share
        )
        if (
            max(self.words_neutral_share, test_share) + self.media_neutral_share > 1
            or min(self.split_shares) < 0
        ):
            raise ConfigError("masked shares must sum to ≤ 1 and split shares be ≥ 0")
        if self.test_sessions < 0 or min(self.earlier_test_sessions, default=0) < 0:
            raise ConfigError(f"test_sessions must be ≥ 0, got {self.test_sessions}")
        if self.test_round < 1 or len(self.earlier_test_sessions) != self.test_round - 1:
            raise ConfigError(
                f"test_round {self.test_round} needs the test-only session count of each earlier round "
                f"(earlier_test_sessions, {max(self.test_round - 1, 0)} values), got "
                f"{list(self.earlier_test_sessions)}"
            )
        if self.test_round > 1 and self.test_sessions < 1:
            raise ConfigError(f"test round {self.test_round} retires earlier test splits: test_sessions ≥ 1")

    @property
    def round_start(self) -> int:
        """Index of this round's first test-only session (after the earlier rounds' ones)."""
        return self.n + sum(self.earlier_test_sessions)

    def indices(self) -> list[int]:
        """The sessions of this corpus, in generation order: the first ``n`` minus the retired ones,
        then this round's test-only sessions."""
        kept = [i for i in range(self.n) if split_of(self, i) != "retired"]
        return kept + list(range(self.round_start, self.round_start + self.test_sessions))

    @property
    def total(self) -> int:
        """Sessions generated: the ``n`` split ones (less the retired) and this round's test-only ones."""
        return len(self.indices())


def _drawn_split(cfg: SynthConfig, index: int) -> str:
    u = np.random.default_rng([cfg.seed, index, 99]).random() * sum(cfg.split_shares)
    train, dev, _ = cfg.split_shares
    return "train" if u < train else ("dev" if u < train + dev else "test")


def round_of(cfg: SynthConfig, index: int) -> int | None:
    """The test round whose test-only session ``index`` is (``None`` for the first ``n`` sessions)."""
    if index < cfg.n:
        return None
    start = cfg.n
    for k, count in enumerate(cfg.earlier_test_sessions, start=1):
        if index < start + count:
            return k
        start += count
    return cfg.test_round


def split_of(cfg: SynthConfig, index: int) -> str:
    """Deterministic split of session ``index`` (independent of the corpus size; the extra sessions
    after the first ``n`` are test): "train", "dev", "test", or "retired" for a session an earlier
    test round scored (round k > 1: the first ``n`` sessions drawn as test, earlier test-only ones)."""
    if index >= cfg.n:
        return "test" if round_of(cfg, index) == cfg.test_round else "retired"
    split = _drawn_split(cfg, index)
    return "retired" if split == "test" and cfg.test_round > 1 else split


def retired_sessions(cfg: SynthConfig) -> list[dict[str, Any]]:
    """Every session of an earlier test round: in no split of this corpus (their scores were read)."""
    out = []
    for index in range(cfg.round_start):
        if split_of(cfg, index) == "retired":
            k = round_of(cfg, index) or 1
            out.append({"session_id": str(cfg.first_id + index), "test_round": k})
    return out


def retired_reason(cfg: SynthConfig) -> str:
    rounds = "round 1" if cfg.test_round == 2 else f"rounds 1–{cfg.test_round - 1}"
    return (
        f"in the test split of {rounds}, already scored: never used again (not train, not dev); "
        f"round {cfg.test_round} tests fresh sessions"
    )


def _stream(cfg: SynthConfig, index: int) -> tuple[int, ...]:
    k = round_of(cfg, index)
    return (ROUND_STREAM, k) if k is not None and k > 1 else ()


@lru_cache(maxsize=4)
def _rig(width: int, height: int, mirror: bool) -> FaceRig:
    return FaceRig(width, height, mirror=mirror)


def _evidence(plan: SessionPlan, turns: list[TimedTurn], speech: dict[str, float]) -> dict[str, Any]:
    """What the template teacher may cite per item: the answer quote and the planted media cues."""
    out: dict[str, Any] = {}
    for key in plan.items:
        q = next(t for t in turns if t.speaker == "clinician" and t.item == key)
        a = next(t for t in turns if t.speaker == "patient" and t.item == key)
        out[key] = {
            "score": plan.items[key],
            "question": q.text,
            "answer": a.text,
            "answer_start_s": round(a.start_s, 3),
            "answer_end_s": round(a.end_s, 3),
            "words_carry_signal": plan.mode != "words_neutral",
            "media_carry_signal": plan.mode != "media_neutral",
        }
    return out


def _plan(cfg: SynthConfig, index: int) -> tuple[SessionPlan, str]:
    split = split_of(cfg, index)
    if split == "retired":
        raise ConfigError(f"session {cfg.first_id + index} is retired (an earlier test round scored it)")
    masked_share = cfg.words_neutral_share
    if split == "test" and cfg.test_words_neutral_share is not None:
        masked_share = cfg.test_words_neutral_share
    plan = plan_session(
        cfg.seed,
        index,
        words_neutral_share=masked_share,
        media_neutral_share=cfg.media_neutral_share,
        rapport_questions=cfg.rapport_questions,
        closing_question=cfg.closing_question,
        first_id=cfg.first_id,
        held_out=cfg.held_out_test and split == "test",
        stream=_stream(cfg, index),
    )
    return plan, split


def existing_session(cfg: SynthConfig, index: int, out_dir: Path) -> dict[str, Any] | None:
    """The metadata of session ``index`` when ``out_dir`` already holds it complete (``None``: render
    it); ``ConfigError`` when the folder holds another session than ``cfg`` plans."""
    plan, split = _plan(cfg, index)
    folder = out_dir / f"{plan.session_id}_P"
    path = folder / META
    if not path.exists():
        return None
    meta: dict[str, Any] = json.loads(path.read_text())
    expected = json.loads(json.dumps(plan.to_json()))
    expected.update(
        split=split,
        audio_speakers=cfg.audio_speakers,
        video={"fps": cfg.fps, "width": cfg.width, "height": cfg.height} if cfg.video else None,
    )
    differs = sorted(k for k, v in expected.items() if meta.get(k) != v)
    if differs:
        raise ConfigError(
            f"{folder} holds another session than this corpus config plans ({', '.join(differs)} differ): "
            "generate into a fresh directory"
        )
    media = [f"{plan.session_id}_AUDIO.wav", f"{plan.session_id}_TRANSCRIPT.csv"]
    media += [f"{plan.session_id}_VIDEO.mp4"] if cfg.video else []
    return meta if all((folder / name).exists() for name in media) else None


def generate_session(cfg: SynthConfig, index: int, out_dir: Path) -> dict[str, Any]:
    """Render one session into ``out_dir/{id}_P`` and return its metadata."""
    plan, split = _plan(cfg, index)
    rng = np.random.default_rng([cfg.seed, index, 1, *_stream(cfg, index)])
    sid = plan.session_id
    folder = out_dir / f"{sid}_P"
    folder.mkdir(parents=True, exist_ok=True)
    audio, patient, turns = render_speech(plan, clinician_audio=cfg.audio_speakers == "both", rng=rng)
    write_wav(folder / f"{sid}_AUDIO.wav", audio, RATE)
    with (folder / f"{sid}_TRANSCRIPT.csv").open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        w.writerow(["start_time", "stop_time", "speaker", "value"])
        for t in turns:
            w.writerow([f"{t.start_s:.3f}", f"{t.end_s:.3f}", SPEAKER_NAMES[t.speaker], t.text])
    answers = [t for t in turns if t.speaker == "patient"]
    spoken_s = sum(t.end_s - t.start_s for t in answers)
    words = sum(len(t.text.split()) for t in answers)
    speech = {
        "answer_words_per_min": round(60.0 * words / max(spoken_s, 1e-6), 1),
        "mean_answer_latency_s": round(
            float(np.mean([a.start_s - q.end_s for q, a in zip(turns[::2], turns[1::2], strict=True)])), 3
        ),
        "duration_s": round(len(audio) / RATE, 3),
    }
    face_stats: dict[str, float] = {}
    if cfg.video:
        times = np.arange(0.0, len(audio) / RATE, 1.0 / cfg.fps)
        env = speech_envelope(patient, times.astype(np.float32))
        timeline = make_timeline(plan.face, times, env, rng)
        rig = _rig(cfg.width, cfg.height, plan.held_out)
        write_video(folder / f"{sid}_VIDEO.mp4", rig.frames(timeline), cfg.fps, cfg.width, cfg.height)
        face_stats = {k: round(v, 4) for k, v in timeline.channel_means().items()}
    meta = plan.to_json()
    meta.update(
        split=split,
        masked=plan.mode == "words_neutral",  # words neutral: only voice and face carry the signal
        audio_speakers=cfg.audio_speakers,
        video={"fps": cfg.fps, "width": cfg.width, "height": cfg.height} if cfg.video else None,
        speech_stats=speech,
        face_stats=face_stats,
        evidence=_evidence(plan, turns, speech),
        label="synthetic (non-clinical)",
    )
    if _stream(cfg, index):
        meta["test_round"] = round_of(cfg, index)
    tmp = folder / (META + ".part")  # written last and whole: its presence marks a complete session
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, folder / META)
    return meta


def _work(args: tuple[SynthConfig, int, Path]) -> dict[str, Any]:
    return generate_session(*args)


def iter_generate(
    cfg: SynthConfig, out_dir: Path, workers: int = 1, indices: Sequence[int] | None = None
) -> Iterator[dict[str, Any]]:
    """Generate sessions ``indices`` (default: ``cfg.indices()``) in order (``workers`` processes),
    yielding each one's metadata."""
    jobs = [(cfg, i, out_dir) for i in (cfg.indices() if indices is None else indices)]
    if workers <= 1:
        yield from map(_work, jobs)
        return
    # spawn, not fork: the parent may hold mediapipe/torch threads that a forked child would inherit locked
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_work, jobs, chunksize=1)


def write_splits(out_dir: Path, metas: list[dict[str, Any]]) -> None:
    """DAIC-WOZ split CSVs with item columns (the synthetic test split keeps its labels)."""
    header = [
        "Participant_ID",
        "PHQ8_Binary",
        "PHQ8_Score",
        "Gender",
        *(i.dataset_column for i in PHQ8_ITEMS),
    ]
    for split, name in SPLIT_FILES.items():
        with (out_dir / name).open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            for m in metas:
                if m["split"] == split:
                    items = [m["items"][i.key] for i in PHQ8_ITEMS]
                    w.writerow([m["session_id"], m["binary"], m["total"], m["gender"], *items])


def _answers(metas: list[dict[str, Any]], splits: tuple[str, ...]) -> list[str]:
    return [t["text"] for m in metas if m["split"] in splits for t in m["turns"] if t["speaker"] == "patient"]


def content_held_out(cfg: SynthConfig, metas: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of the test split's answers the training answers hold (5-grams, verbatim)."""
    return content_overlap(
        _answers(metas, ("train", "dev")), _answers(metas, ("test",)), held_out=cfg.held_out_test
    )


def generate_corpus(
    cfg: SynthConfig, out_dir: Path | str, *, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Generate the sessions ``out_dir`` lacks (those it holds complete are kept: see
    :func:`existing_session`); returns (and writes as ``corpus.json``) a summary of the whole corpus."""
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    indices = cfg.indices()
    found = {i: existing_session(cfg, i, out) for i in indices}
    have = {i: m for i, m in found.items() if m is not None}
    todo = [i for i in indices if i not in have]
    bar = tqdm(iter_generate(cfg, out, workers, todo), total=len(indices), initial=len(have),
               desc="synth sessions", disable=not progress)  # fmt: skip
    have.update(zip(todo, bar, strict=True))
    metas = [have[i] for i in indices]
    write_splits(out, metas)
    elapsed = time.perf_counter() - t0
    retired = retired_sessions(cfg)
    summary = {
        "config": asdict(cfg),
        "sessions": len(metas),
        "generated": len(todo),  # rendered by this call; the others were already complete in out_dir
        "test_round": cfg.test_round,
        "retired": {
            "n": len(retired),
            "reason": retired_reason(cfg) if retired else "",
            "sessions": retired,
        },
        "splits": {s: sum(m["split"] == s for m in metas) for s in SPLIT_FILES},
        "positive": sum(m["binary"] for m in metas),
        "modes": {k: sum(m["mode"] == k for m in metas) for k in ("full", "words_neutral", "media_neutral")},
        "masked_test": sum(m["masked"] and m["split"] == "test" for m in metas),
        "content_held_out": content_held_out(cfg, metas),
        "audio_seconds": round(sum(m["speech_stats"]["duration_s"] for m in metas), 1),
        "wall_seconds": round(elapsed, 2),
        "label": "synthetic (non-clinical)",
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=1))
    return summary
