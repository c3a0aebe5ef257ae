"""Content overlap between the test split's answers and the training answers (content-held-out check).

Texts are compared after lower-casing and dropping punctuation. ``shared_5gram_share``: of the distinct
word 5-grams in the test answers, the share that also occurs in a train/dev answer.
``verbatim_answers``: test answers whose whole (normalised) text is also a train/dev answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_WORD_RE = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("’", "'"))


def ngrams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The distinct word ``n``-grams of ``text`` (none when it has fewer than ``n`` words)."""
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def content_overlap(
    train_answers: Iterable[str], test_answers: Iterable[str], *, held_out: bool
) -> dict[str, Any]:
    """The ``content_held_out`` record: ``held_out`` (the test split was drawn from disjoint banks) and
    the measured overlap of ``test_answers`` with ``train_answers``."""
    train = [t for t in train_answers if t.strip()]
    test = [t for t in test_answers if t.strip()]
    train_grams: set[tuple[str, ...]] = set().union(*(ngrams(t) for t in train)) if train else set()
    test_grams: set[tuple[str, ...]] = set().union(*(ngrams(t) for t in test)) if test else set()
    train_texts = {" ".join(_words(t)) for t in train}
    verbatim = sum(" ".join(_words(t)) in train_texts for t in test)
    return {
        "held_out": held_out,
        "shared_5gram_share": round(len(test_grams & train_grams) / len(test_grams), 4)
        if test_grams
        else 0.0,
        "verbatim_answers": int(verbatim),
        "test_answers": len(test),
        "train_answers": len(train),
    }
