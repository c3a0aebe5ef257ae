"""Per-session plan: planted PHQ-8 items, masking mode, voice/face parameters and the interview turns.

Everything here is drawn from ``np.random.default_rng([seed, index])``, so session ``index`` is the same
whatever the corpus size, worker count or order. The mapping from planted severity to media
parameters is the "planted-signal table" of ``docs/data.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mllmdr_core.features.interview import DEFAULT_INTERVIEW_SCRIPT, item_relevance
from mllmdr_core.phq8 import BINARY_CUTOFF, ITEM_KEYS, ITEM_MAX, TOTAL_MAX
from training.synth.templates import CLOSING_ANSWERS, answer_for, bank, fill, rapport_answer

Mode = Literal["full", "words_neutral", "media_neutral"]
NEUTRAL_SEVERITY = 0.4  # media severity of "media_neutral" sessions (label-independent)
PITCH_RANGES = ("x-low", "low", "medium", "high", "x-high")  # SSML prosody range, espeak-ng
# espeak-ng voices (female, male): train/dev and the content-held-out test split use disjoint variants
VOICES = {False: ("en-us+f2", "en-us"), True: ("en-us+f4", "en-us+m3")}

_ITEM_QUESTIONS: dict[str, tuple[str, ...]] = {
    key: tuple(q for q in DEFAULT_INTERVIEW_SCRIPT if item_relevance(q, "") == frozenset({key}))
    for key in ITEM_KEYS
}
_RAPPORT_QUESTIONS = tuple(q for q in DEFAULT_INTERVIEW_SCRIPT[:-1] if not item_relevance(q, ""))
_CLOSING_QUESTION = DEFAULT_INTERVIEW_SCRIPT[-1]


@dataclass(frozen=True)
class VoiceParams:
    """espeak-ng settings and timing for the patient's speech."""

    voice: str  # espeak-ng voice, e.g. "en-us" or "en-us+f2"
    rate_wpm: int  # espeak-ng -s
    pitch: int  # espeak-ng -p (0–99)
    pitch_range: str  # SSML <prosody range=…>
    amplitude: int  # espeak-ng -a (0–200)
    word_gap_10ms: int  # espeak-ng -g
    latency_s: float  # silence between the question's end and the answer
    pause_s: float  # pause at each sentence/comma break inside an answer


@dataclass(frozen=True)
class FaceParams:
    """Animation parameters of the synthetic face."""

    head_pitch_deg: float  # mean downward head tilt
    gaze_down_share: float  # share of time looking down
    smiles_per_min: float
    sadness: float  # 0–1, lip corners pulled down between smiles
    blinks_per_min: float
    blink_s: float  # blink duration
    motion_deg: float  # amplitude of head sway / nods


@dataclass(frozen=True)
class Turn:
    speaker: Literal["clinician", "patient"]
    text: str
    item: str | None = None  # the PHQ-8 item this question/answer is about
    template: int | None = None  # index of the answer template (patient turns)


@dataclass(frozen=True)
class SessionPlan:
    session_id: str
    index: int
    seed: int
    items: dict[str, int]
    mode: Mode
    gender: int  # 0 female voice, 1 male voice (split-file "Gender" column)
    severity: float  # total / 24
    voice_severity: float
    face_severity: float
    voice: VoiceParams
    face: FaceParams
    turns: tuple[Turn, ...] = field(default=())
    held_out: bool = False  # drawn from the test banks (answers, questions, voices, face): see templates

    @property
    def total(self) -> int:
        return sum(self.items.values())

    @property
    def binary(self) -> int:
        return int(self.total >= BINARY_CUTOFF)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(total=self.total, binary=self.binary)
        return out


def draw_items(rng: np.random.Generator) -> dict[str, int]:
    """Item scores whose totals cover 0–24 with a roughly balanced binary screen (≥ 10)."""
    positive = rng.random() < 0.5
    total = int(rng.integers(BINARY_CUTOFF, TOTAL_MAX + 1) if positive else rng.integers(0, BINARY_CUTOFF))
    scores = np.zeros(len(ITEM_KEYS), dtype=int)
    weights = rng.dirichlet(np.full(len(ITEM_KEYS), 2.0))  # a per-session profile: some items dominate
    for _ in range(total):
        open_ = scores < ITEM_MAX
        p = weights * open_
        scores[rng.choice(len(ITEM_KEYS), p=p / p.sum())] += 1
    return {k: int(v) for k, v in zip(ITEM_KEYS, scores, strict=True)}


def voice_params(s: float, gender: int, rng: np.random.Generator, *, held_out: bool = False) -> VoiceParams:
    """Severity s ∈ [0, 1] → slower, lower, flatter, quieter speech with longer pauses and latencies."""
    j = lambda scale: float(rng.normal(0.0, scale))  # noqa: E731 - small per-session jitter
    return VoiceParams(
        voice=VOICES[held_out][gender],
        rate_wpm=int(np.rint(np.clip(145 - 65 * s + j(4), 80, 170))),  # espeak speaks ~1.3x its nominal -s
        pitch=int(np.rint(np.clip(62 - 30 * s + j(3), 20, 80))),
        pitch_range=PITCH_RANGES[int(np.clip(round((1 - s) * 4 + j(0.3)), 0, 4))],
        amplitude=int(np.rint(np.clip(130 - 60 * s + j(5), 50, 160))),
        word_gap_10ms=int(np.rint(np.clip(5 * s + j(0.5), 0, 8))),
        latency_s=float(np.clip(0.35 + 2.0 * s + j(0.1), 0.2, 3.0)),
        pause_s=float(np.clip(0.15 + 0.9 * s + j(0.05), 0.1, 1.3)),
    )


def face_params(s: float, rng: np.random.Generator) -> FaceParams:
    """Severity s ∈ [0, 1] → head down, gaze down, fewer smiles, fewer/slower blinks, less movement."""
    j = lambda scale: float(rng.normal(0.0, scale))  # noqa: E731
    return FaceParams(
        head_pitch_deg=float(np.clip(1.0 + 17.0 * s + j(1.0), -2.0, 22.0)),
        gaze_down_share=float(np.clip(0.05 + 0.6 * s + j(0.03), 0.0, 0.8)),
        smiles_per_min=float(np.clip(8.0 * (1.0 - s) ** 1.5 + j(0.4), 0.0, 10.0)),
        sadness=float(np.clip(0.9 * s + j(0.05), 0.0, 1.0)),
        blinks_per_min=float(np.clip(22.0 - 12.0 * s + j(1.0), 6.0, 26.0)),
        blink_s=float(np.clip(0.15 + 0.35 * s + j(0.02), 0.1, 0.6)),
        motion_deg=float(np.clip(6.0 * (1.0 - 0.8 * s) + j(0.3), 0.5, 8.0)),
    )


def _turns(
    items: dict[str, int],
    neutral_words: bool,
    rapport: int,
    closing: bool,
    rng: np.random.Generator,
    held_out: bool = False,
) -> tuple[Turn, ...]:
    turns: list[Turn] = []
    for q in rng.choice(len(_RAPPORT_QUESTIONS), size=rapport, replace=False):  # questions shared
        turns.append(Turn("clinician", _RAPPORT_QUESTIONS[int(q)]))
        turns.append(Turn("patient", rapport_answer(_RAPPORT_QUESTIONS[int(q)], rng, held_out=held_out)))
    for key in ITEM_KEYS:
        pool = bank(_ITEM_QUESTIONS[key], held_out=held_out)
        turns.append(Turn("clinician", pool[int(rng.integers(len(pool)))], item=key))
        text, k = answer_for(key, items[key], rng, neutral=neutral_words, held_out=held_out)
        turns.append(Turn("patient", text, item=key, template=k))
    closings = bank(CLOSING_ANSWERS, held_out=held_out)
    closing_answer = fill(str(rng.choice(closings)), rng)  # drawn either way: same rng stream
    if closing:
        turns.append(Turn("clinician", _CLOSING_QUESTION))
        turns.append(Turn("patient", closing_answer))
    return tuple(turns)


def plan_session(
    seed: int,
    index: int,
    *,
    words_neutral_share: float = 0.2,
    media_neutral_share: float = 0.1,
    rapport_questions: int = 1,
    closing_question: bool = False,
    first_id: int = 1000,
    items: dict[str, int] | None = None,
    mode: Mode | None = None,
    held_out: bool = False,
    stream: tuple[int, ...] = (),
) -> SessionPlan:
    """Draw session ``index`` of the corpus with ``seed`` (``items`` / ``mode`` force those draws);
    ``held_out``: from the test banks (answers, questions, voices; the corpus mirrors the face);
    ``stream``: more seed-sequence entries (a later test round's sessions draw from their own stream)."""
    rng = np.random.default_rng([seed, index, *stream])
    drawn = draw_items(rng)
    items = dict(drawn if items is None else items)
    u = rng.random()
    if mode is None:
        mode = (
            "words_neutral"
            if u < words_neutral_share
            else ("media_neutral" if u < words_neutral_share + media_neutral_share else "full")
        )
    s = sum(items.values()) / TOTAL_MAX
    # modality severities: mostly the total, partly the items each modality expresses best
    sv = 0.75 * s + 0.25 * (items["psychomotor"] + items["tired"]) / (2 * ITEM_MAX)
    sf = 0.75 * s + 0.25 * (items["mood"] + items["interest"]) / (2 * ITEM_MAX)
    if mode == "media_neutral":
        sv = sf = NEUTRAL_SEVERITY
    sv = float(np.clip(sv + rng.normal(0, 0.03), 0, 1))
    sf = float(np.clip(sf + rng.normal(0, 0.03), 0, 1))
    gender = int(rng.integers(2))
    return SessionPlan(
        session_id=str(first_id + index),
        index=index,
        seed=seed,
        items=items,
        mode=mode,
        gender=gender,
        severity=s,
        voice_severity=sv,
        face_severity=sf,
        voice=voice_params(sv, gender, rng, held_out=held_out),
        face=face_params(sf, rng),
        turns=_turns(items, mode == "words_neutral", rapport_questions, closing_question, rng, held_out),
        held_out=held_out,
    )
