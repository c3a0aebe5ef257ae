"""Per-item prompts, the training target format, and a drift-tolerant parser of the model's answer.

Prompt (one per PHQ-8 item, kept short because every token is paid for in vLLM payloads)::

    Rate PHQ-8 item "Sleep": Trouble falling or staying asleep, or sleeping too much.
    Scale: 0 not at all, 1 several days, 2 more than half the days, 3 nearly every day.
    Q: How have you been sleeping?
    A: Not well, I wake up at three.
    Audio: <AudioHere>
    Video: <VideoHere>
    Reply "Evaluation Result: N. Evaluation Reason: ..."

Target: ``Evaluation Result: N. Evaluation Reason: <reason>``.

Shared-prefix layout (``shared_prefix=True``; the bundle option ``assess.shared_prefix_prompts``, off by
default: a bundle is trained and served with the same layout). The lines every item has in common come
first, the item's own last, so the 8 prompts of one assessment share their first tokens (the soft
tokens included) and a prefix-caching server (vLLM) prefills that part once::

    Audio: <AudioHere>
    Video: <VideoHere>
    Scale: 0 not at all, 1 several days, 2 more than half the days, 3 nearly every day.
    Reply "Evaluation Result: N. Evaluation Reason: ..."
    Q: How have you been sleeping?
    A: Not well, I wake up at three.
    Rate PHQ-8 item "Sleep": Trouble falling or staying asleep, or sleeping too much.

(An indicator line goes before the ``Reply`` line in both layouts, so it is in the shared part.)

No silent loss (:func:`item_prompts`): questions and answers are never clipped (whitespace is collapsed,
so every ``Q:``/``A:`` is one line). Per item the pairs are ranked (``interview.pairs_for_item``: the
item's most relevant first, at most ``max_pairs``) and kept greedily while the prompt fits the budget
(``fits``); a pair that does not fit whole is split into its sentences (same question; an answer line
with no sentence end, as speech-to-text writes, into runs of ``PIECE_WORDS`` words: :func:`pieces`),
which are kept the same way, the item's most relevant sentences first. Kept pairs are shown in time order.
:func:`transcript_coverage` says which share of the patient's words reached at least one prompt.

Parser rules (:func:`parse_output`), applied after normalising markdown (``**``, ``__``, backticks),
full-width colons/digits and case:

1. A score keyword — ``evaluation result``, ``result``, ``score``, ``rating``, ``rate(d) [it|this item]
   [as|at] [a]`` — followed (after ``:``,
   ``=``, ``is``, ``of``) by a number or the words zero/one/two/three; ``N/3`` and ``N out of 3`` are read
   as N. The first such match wins.
2. Otherwise a bare number at the very start of the text (``"2. The patient…"``, ``"2"``).
3. Decimals are rounded half up (``2.5`` → 3). Values outside 0–3 (``5``, ``-1``, ``6/24``) are
   **rejected**, not clamped: a 5 most likely comes from another scale, and clamping it to 3 would
   invent "nearly every day". A rejected or missing score gives ``score=None, fallback=True`` and the
   caller uses the MAA regression score.
4. The reason is the text after ``evaluation reason`` / ``reason:`` when present, else the text after
   a valid score (may be empty), else the whole text; whitespace collapsed, at most 600 characters.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from mllmdr_core.features.indicators import INDICATOR_INFO
from mllmdr_core.features.interview import item_scores, pair_transcript, pairs_for_item
from mllmdr_core.frames import QAPair, TranscriptLine
from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN
from mllmdr_core.phq8 import ITEM_KEYS, ITEM_MAX, PHQ8_ITEMS

ITEMS_BY_KEY = {item.key: item for item in PHQ8_ITEMS}
SCALE_LINE = "Scale: 0 not at all, 1 several days, 2 more than half the days, 3 nearly every day."
REPLY_LINE = 'Reply "Evaluation Result: N. Evaluation Reason: ..."'
DEFAULT_MAX_PAIRS = 6
MAX_REASON_CHARS = 600


@dataclass(frozen=True)
class ParsedOutput:
    score: int | None  # 0–3, None when the text held no usable score
    reason: str
    fallback: bool  # True → the caller should use the MAA score


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _render(
    item_key: str, pairs: Sequence[QAPair], *, has_audio: bool, has_video: bool, shared_prefix: bool = False
) -> str:
    """The prompt text for ``pairs`` exactly as given (no selection, no reordering, nothing clipped);
    ``shared_prefix``: the lines common to all items first (module docstring)."""
    item = ITEMS_BY_KEY.get(item_key)
    if item is None:
        raise KeyError(f"unknown PHQ-8 item {item_key!r}; expected one of {sorted(ITEMS_BY_KEY)}")
    interview = []
    for pair in pairs:
        if pair.question is not None and pair.question.text.strip():
            interview.append(f"Q: {_one_line(pair.question.text)}")
        answer = _one_line(pair.answer_text)
        interview.append(f"A: {answer if answer else '(no answer)'}")
    if not pairs:
        interview.append("(no interview answers yet)")
    slots = [f"Audio: {AUDIO_TOKEN}"] if has_audio else []
    slots += [f"Video: {VIDEO_TOKEN}"] if has_video else []
    title = f'Rate PHQ-8 item "{item.title}": {item.question}.'
    if shared_prefix:
        return "\n".join([*slots, SCALE_LINE, REPLY_LINE, *interview, title])
    return "\n".join([title, SCALE_LINE, *interview, *slots, REPLY_LINE])


def build_item_prompt(
    item_key: str,
    qa_pairs: Sequence[QAPair],
    *,
    has_audio: bool,
    has_video: bool,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> str:
    """The prompt for one PHQ-8 item: instruction, the item's most relevant Q/A pairs (in time order,
    at most ``max_pairs``, chosen by ``features.interview.pairs_for_item``), and the modality slots."""
    if item_key not in ITEMS_BY_KEY:
        raise KeyError(f"unknown PHQ-8 item {item_key!r}; expected one of {sorted(ITEMS_BY_KEY)}")
    chosen = sorted(pairs_for_item(qa_pairs, item_key, max_pairs), key=lambda p: p.start_s)
    return _render(item_key, chosen, has_audio=has_audio, has_video=has_video)


_SENTENCE_END_RE = re.compile(r"(?<=[.!?…])\s+")


def sentences(text: str) -> list[str]:
    """``text`` cut after ``.``, ``!``, ``?`` or ``…`` followed by whitespace (whitespace collapsed)."""
    return [s for s in _SENTENCE_END_RE.split(_one_line(text)) if s]


PIECE_WORDS = 20  # an answer line with no sentence end (speech-to-text) is split into runs of this many words


def pieces(text: str) -> list[str]:
    """The parts a too-long answer line is split into: its :func:`sentences`; a line with no ``.``,
    ``!``, ``?`` or ``…`` at all (a recogniser writes none) is cut into runs of ``PIECE_WORDS`` words
    instead, so a long recognised answer is not all-or-nothing under the budget."""
    if any(c in text for c in ".!?…"):
        return sentences(text)
    words = text.split()
    return [" ".join(words[k : k + PIECE_WORDS]) for k in range(0, len(words), PIECE_WORDS)]


def _sentence_pairs(pair: QAPair) -> list[QAPair]:
    """``pair`` as one pair per answer piece (:func:`pieces`; same question, the answer line's times)."""
    out = []
    for line in pair.answers:
        for sentence in pieces(line.text):
            piece = replace(line, text=sentence)
            out.append(QAPair(pair.question, (piece,), pair.items))
    return out


@dataclass(frozen=True)
class ItemPrompt:
    """One item's prompt text and the Q/A pairs it shows (most relevant first; a pair split into
    sentences shows up as one pair per kept sentence)."""

    text: str
    pairs: tuple[QAPair, ...]


def _fit_item(
    key: str,
    ranked: Sequence[QAPair],
    *,
    has_audio: bool,
    has_video: bool,
    fits: Callable[[str], bool] | None,
    indicator: str | None = None,
    shared_prefix: bool = False,
) -> ItemPrompt:
    def render(pairs: Sequence[QAPair]) -> str:
        text = _render(key, pairs, has_audio=has_audio, has_video=has_video, shared_prefix=shared_prefix)
        return with_indicator_line(text, indicator)

    order = {id(pair): n for n, pair in enumerate(sorted(ranked, key=lambda p: p.start_s))}
    kept: list[QAPair] = []  # whole pairs, in rank order
    parts: dict[int, list[tuple[int, TranscriptLine]]] = {}  # split pair (id) → its kept sentences
    parents = {id(pair): pair for pair in ranked}

    def shown() -> list[QAPair]:
        split = [
            QAPair(parents[pid].question, tuple(ln for _, ln in sorted(lines)), parents[pid].items)
            for pid, lines in parts.items()
        ]
        ids = [id(p) for p in kept] + list(parts)
        return [p for _, p in sorted(zip(ids, [*kept, *split], strict=True), key=lambda ip: order[ip[0]])]

    def fit_with(extra: QAPair | None = None, piece: tuple[int, int, TranscriptLine] | None = None) -> bool:
        if extra is not None:
            kept.append(extra)
        if piece is not None:
            parts.setdefault(piece[0], []).append(piece[1:])
        text = render(shown())
        ok = fits is None or fits(text)
        if not ok:  # undo
            if extra is not None:
                kept.pop()
            if piece is not None:
                parts[piece[0]].pop()
                if not parts[piece[0]]:
                    del parts[piece[0]]
        return ok

    for pair in ranked:
        if fit_with(extra=pair):
            continue
        q_text = pair.question.text if pair.question else ""
        pieces = [(n, p.answers[0]) for n, p in enumerate(_sentence_pairs(pair))]
        if len(pieces) < 2:
            continue
        best = sorted(pieces, key=lambda nl: -item_scores(q_text, nl[1].text).get(key, 0))  # stable: time
        for n, line in best:
            fit_with(piece=(id(pair), n, line))
    ranked_shown = [*kept, *(p for p in shown() if id(p) not in {id(k) for k in kept})]
    text = render(shown())
    return ItemPrompt(text, tuple(ranked_shown))


def indicator_line(indicators: Mapping[str, float], names: Sequence[str] | None = None) -> str | None:
    """``Indicators: speech_ratio 0.62, pause_count 4, …``: the live indicators present among ``names``
    (default: all of ``INDICATOR_INFO``), in that order, two decimals (counts as integers); ``None``
    when none is finite."""
    parts = []
    for name in INDICATOR_INFO if names is None else names:
        value = indicators.get(name)
        info = INDICATOR_INFO.get(name)
        if info is None or value is None or not math.isfinite(float(value)):
            continue
        parts.append(f"{name} {float(value):.0f}" if info.unit == "count" else f"{name} {float(value):.2f}")
    return "Indicators: " + ", ".join(parts) if parts else None


def with_indicator_line(prompt: str, line: str | None) -> str:
    """``prompt`` with ``line`` inserted before the reply instruction (unchanged for ``None``)."""
    if line is None:
        return prompt
    head, sep, tail = prompt.rpartition(REPLY_LINE)
    return f"{head}{line}\n{sep}{tail}" if sep else f"{prompt}\n{line}"


def item_prompts(
    transcript: Sequence[TranscriptLine],
    *,
    has_audio: bool,
    has_video: bool,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    script: Sequence[str] | None = None,
    fits: Callable[[str], bool] | None = None,
    indicators: Mapping[str, float] | None = None,
    indicator_names: Sequence[str] | None = None,
    shared_prefix: bool = False,
) -> dict[str, ItemPrompt]:
    """The 8 item prompts for a transcript: the one builder for training, evaluation, replay and live.

    The transcript is paired (``interview.pair_transcript``: interviewer questions, else patient turns,
    aligned to ``script`` when given); per item the most relevant pairs (``pairs_for_item``) are kept
    whole while the prompt fits ``fits`` (e.g. a token budget), a pair too long to fit is split into
    sentences (module docstring). Nothing inside an answer is clipped. With ``indicators`` (the bundle
    option ``assess.indicators_in_prompt``) every prompt carries their :func:`indicator_line` (those
    in ``indicator_names``: the bundle's ``assess.prompt_indicators``), counted in the budget.
    ``shared_prefix`` (the bundle option ``assess.shared_prefix_prompts``): the layout with the lines
    common to all items first (module docstring)."""
    line = indicator_line(indicators, indicator_names) if indicators is not None else None
    pairs = pair_transcript(list(transcript), script)
    return {
        key: _fit_item(
            key,
            pairs_for_item(pairs, key, max_pairs),
            has_audio=has_audio,
            has_video=has_video,
            fits=fits,
            indicator=line,
            shared_prefix=shared_prefix,
        )
        for key in ITEM_KEYS
    }


def _line_key(line: TranscriptLine) -> tuple[float, float, str]:
    return (line.start_s, line.end_s, line.speaker)


def transcript_coverage(
    transcript: Sequence[TranscriptLine], prompts: Mapping[str, ItemPrompt]
) -> float | None:
    """Share (0–1) of the patient's words in ``transcript`` (final lines of every speaker but
    ``clinician``) that reached at least one item prompt, whole line or piece (:func:`pieces`);
    ``None`` when the transcript holds no patient words."""
    reached: dict[tuple[float, float, str], set[str]] = {}
    for prompt in prompts.values():
        for pair in prompt.pairs:
            for line in (*pair.answers, *((pair.question,) if pair.question else ())):
                reached.setdefault(_line_key(line), set()).add(line.text)
    total = hit = 0
    for line in transcript:
        if not line.final or line.speaker == "clinician" or not line.text.strip():
            continue
        words = len(line.text.split())
        total += words
        texts = reached.get(_line_key(line), set())
        if line.text in texts:
            hit += words
        else:
            hit += sum(len(s.split()) for s in pieces(line.text) if s in texts)
    return hit / total if total else None


def format_target(score: int, reason: str) -> str:
    """Training target: ``Evaluation Result: N. Evaluation Reason: …``."""
    if not 0 <= score <= ITEM_MAX:
        raise ValueError(f"item score must be 0–{ITEM_MAX}, got {score}")
    reason = " ".join(reason.split()) or "No further detail."
    return f"Evaluation Result: {score}. Evaluation Reason: {reason}"


_WORDS = {"zero": 0.0, "one": 1.0, "two": 2.0, "three": 3.0}
_NUMBER = r"(-?\d+(?:\.\d+)?|zero|one|two|three)"
_OUT_OF = r"(?:\s*(?:/|out\s+of)\s*(\d+))?"
_KEYWORD_RE = re.compile(
    r"(?:evaluation\s+result|result|score|rating|rated?(?:\s+(?:it|this(?:\s+item)?|the\s+item))?"
    r"(?:\s+(?:as|at))?(?:\s+an?)?)s?\b[^0-9a-z\-]{0,4}(?:(?:is|of|=|would\s+be)\s*)?[:=]?\s*"
    + _NUMBER
    + r"\b"
    + _OUT_OF,
)
_LEADING_RE = re.compile(r"^\s*" + _NUMBER + r"(?=$|[\s.:,;)\]])" + _OUT_OF)
_REASON_RE = re.compile(r"evaluation\s+reason\s*[:=\-]?\s*|reason(?:ing)?\s*[:=\-]\s*", re.IGNORECASE)
_MARKDOWN_RE = re.compile(r"\*\*|__|`+|^#+\s*", re.MULTILINE)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)  # full-width colon/digits → ASCII
    return _MARKDOWN_RE.sub("", text)


def _to_score(raw: str, out_of: str | None) -> int | None:
    value = _WORDS.get(raw)
    if value is None:
        value = float(raw)
    if out_of is not None and int(out_of) != ITEM_MAX:
        return None  # e.g. "6/24": a total, not an item score
    score = math.floor(value + 0.5)
    return score if 0 <= score <= ITEM_MAX else None


def parse_output(text: str) -> ParsedOutput:
    """Read the item score and reason from generated text (rules in the module docstring)."""
    clean = _normalise(text)
    lower = clean.lower()
    match = _KEYWORD_RE.search(lower) or _LEADING_RE.search(lower)
    score = _to_score(match.group(1), match.group(2)) if match else None
    reason_match = _REASON_RE.search(clean)
    if reason_match:
        reason = clean[reason_match.end() :]
    elif match and score is not None:
        reason = clean[match.end() :].lstrip(" .:;,-)")
    else:
        reason = clean
    reason = _clip(reason, MAX_REASON_CHARS)
    return ParsedOutput(score=score, reason=reason, fallback=score is None)
