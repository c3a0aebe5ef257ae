"""Grounding check of a rationale against the prompt its model got (pure functions, no model).

Rules, applied per sentence of the rationale (sentences end at ``.``, ``!`` or ``?`` followed by
whitespace, never inside a quote):

1. **Quotes.** Every quoted span — ``"…"``, ``“…”``, or ``'…'`` opened after a non-letter (so the
   apostrophe of "can't" opens nothing) — of 3+ characters must occur in the item's *prompt
   transcript*: the text of its ``Q:`` and ``A:`` lines (not the instruction, scale or slot lines, so
   quoting the prompt's scaffolding is ungrounded). Matching is on normalised text: NFKC, case folded,
   apostrophes dropped, every other non-letter/digit a space, whitespace collapsed, whole words. A
   quote with an ellipsis (``…`` or ``...``) matches when each part occurs, in order.
2. **Numbers.** Every number — digits (``3``, ``0.41``, ``134``; not a digit glued to a name such as
   ``PHQ-8``) or a number word (``zero``, ``two`` … ``twenty``, tens, ``hundred``; ``one`` is left out
   because it is mostly a pronoun) — must occur in the prompt's data lines (every line but the fixed
   instruction, scale, slot and reply lines), as digits or as a word of the same value. The item's
   own score is exempt (a rationale may say "scored 2").
3. A sentence with no quote and no number makes no checkable claim and counts as grounded.

Per item: ``score`` = grounded sentences / sentences (1.0 for an empty rationale), ``ungrounded`` =
the failing sentences verbatim. :func:`grounding_share` is the mean item score of an assessment.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN
from mllmdr_core.prompt import REPLY_LINE, SCALE_LINE

_QUOTE_RE = re.compile(r"\"([^\"]{3,}?)\"|“([^”]{3,}?)”|(?<![A-Za-z0-9])'([^']{3,}?)'(?![A-Za-z0-9])")
_SENTENCE_END_RE = re.compile(r"[.!?]+[\"”']?\s+")
_ELLIPSIS_RE = re.compile(r"…|\.\.\.")
_DIGITS_RE = re.compile(r"(?<![A-Za-z0-9_.])(?<![A-Za-z]-)\d+(?:\.\d+)?")
_WORD_NUMBERS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}
_NUMBER_WORD_RE = re.compile(r"\b(?:" + "|".join(_WORD_NUMBERS) + r")\b", re.IGNORECASE)
_FIXED_PREFIXES = (
    "Rate PHQ-8 item ", SCALE_LINE, REPLY_LINE, f"Audio: {AUDIO_TOKEN}", f"Video: {VIDEO_TOKEN}"
)


@dataclass(frozen=True)
class GroundingResult:
    score: float  # 0–1: share of the rationale's sentences that are grounded
    ungrounded: tuple[str, ...]  # the sentences that are not, verbatim


def normalise(text: str) -> str:
    """Rule 1's normal form: NFKC, case folded, apostrophes dropped, other non-alphanumerics a space."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("'", "").replace("’", "")
    return " ".join(re.sub(r"[^\w]+|_", " ", text).split())


def quoted_spans(text: str) -> list[str]:
    """The quoted spans of ``text`` (rule 1), stripped, in order."""
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTE_RE.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences, never inside a quoted span; whitespace collapsed."""
    text = " ".join(text.split())
    masked = list(text)
    for m in _QUOTE_RE.finditer(text):
        masked[m.start() + 1 : m.end() - 1] = "x" * (m.end() - m.start() - 2)
    out, start = [], 0
    for m in _SENTENCE_END_RE.finditer("".join(masked)):
        out.append(text[start : m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def prompt_transcript(prompt: str) -> str:
    """The text of the prompt's ``Q:`` and ``A:`` lines (what the model was shown of the interview)."""
    return "\n".join(ln[3:] for ln in prompt.splitlines() if ln.startswith(("Q: ", "A: ")))


def prompt_data(prompt: str) -> str:
    """The prompt without its fixed lines (instruction, scale, modality slots, reply format)."""
    return "\n".join(ln for ln in prompt.splitlines() if not ln.startswith(_FIXED_PREFIXES))


def numbers(text: str) -> set[float]:
    """The values of the numbers in ``text`` (rule 2: digits and number words)."""
    found = {float(m.group(0)) for m in _DIGITS_RE.finditer(text)}
    found |= {float(_WORD_NUMBERS[m.group(0).lower()]) for m in _NUMBER_WORD_RE.finditer(text)}
    return found


def _quote_found(quote: str, transcript: str) -> bool:
    pos = 0
    for part in _ELLIPSIS_RE.split(quote):
        needle = normalise(part)
        if not needle:
            continue
        at = transcript.find(f" {needle} ", pos)
        if at < 0:
            return False
        pos = at + len(needle) + 1
    return True


def check(rationale: str, prompt: str, score: int | None = None) -> GroundingResult:
    """Ground ``rationale`` against the item ``prompt`` it was generated from (module rules); ``score``
    is the item's score, exempt from the number rule."""
    transcript = f" {normalise(prompt_transcript(prompt))} "
    allowed = numbers(prompt_data(prompt)) | ({float(score)} if score is not None else set())
    sentences = split_sentences(rationale)
    bad = [
        s
        for s in sentences
        if not all(_quote_found(q, transcript) for q in quoted_spans(s)) or not numbers(s) <= allowed
    ]
    n = len(sentences)
    return GroundingResult((n - len(bad)) / n if n else 1.0, tuple(bad))


def segments(rationale: str, ungrounded: Iterable[str]) -> list[tuple[str, bool]]:
    """``rationale`` (whitespace collapsed) cut into ``(text, is_ungrounded)`` runs, for display."""
    text = " ".join(rationale.split())
    marks: list[tuple[int, int]] = []
    for sentence in ungrounded:
        at = text.find(sentence)
        if at >= 0 and sentence:
            marks.append((at, at + len(sentence)))
    out: list[tuple[str, bool]] = []
    pos = 0
    for start, end in sorted(marks):
        if start < pos:
            continue
        if start > pos:
            out.append((text[pos:start], False))
        out.append((text[start:end], True))
        pos = end
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def grounding_share(scores: Iterable[float]) -> float | None:
    """Mean of the item grounding scores; ``None`` for none."""
    values = list(scores)
    return sum(values) / len(values) if values else None
