"""Content-held-out test split: disjoint banks, test-only sessions, the overlap measure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mllmdr_core.errors import ConfigError
from training.overlap import content_overlap
from training.synth import SynthConfig, generate_corpus, plan_session
from training.synth.corpus import split_of
from training.synth.plan import _ITEM_QUESTIONS, VOICES
from training.synth.templates import ANSWERS, CLOSING_ANSWERS, NEUTRAL_ANSWERS, RAPPORT_ANSWERS, bank


def test_banks_are_disjoint_and_cover_each_pool() -> None:
    pools = [*(lvl for levels in ANSWERS.values() for lvl in levels), NEUTRAL_ANSWERS, CLOSING_ANSWERS]
    pools += [*RAPPORT_ANSWERS.values(), *(q for q in _ITEM_QUESTIONS.values() if len(q) > 1)]
    for pool in pools:
        test, train = bank(pool, held_out=True), bank(pool, held_out=False)
        assert test and train and not set(test) & set(train) and set(test) | set(train) == set(pool)
    assert bank(NEUTRAL_ANSWERS, held_out=True) == NEUTRAL_ANSWERS[4:]  # the last third
    assert bank(("only",), held_out=True) == bank(("only",), held_out=False) == ("only",)  # shared
    assert not set(VOICES[True]) & set(VOICES[False])


def test_held_out_plans_draw_only_from_the_test_banks() -> None:
    for i in range(40):
        plan = plan_session(0, i, held_out=True, closing_question=True)
        assert plan.held_out and plan.voice.voice == VOICES[True][plan.gender]
        answers = [t for t in plan.turns if t.speaker == "patient" and t.item]
        neutral = plan.mode == "words_neutral"
        assert all(t.template == (4 if neutral else 2) or (neutral and t.template == 5) for t in answers)
        trained = plan_session(0, i, held_out=False)
        assert all(t.template in ((0, 1, 2, 3) if neutral else (0, 1)) for t in trained.turns if t.item and
                   t.speaker == "patient")  # fmt: skip


def test_overlap_measure_counts_5grams_and_verbatim_answers() -> None:
    train = ["I sleep really well, about eight hours a night.", "Fine."]
    test = ["i sleep really well about eight", "Fine!", "Nothing in common with anything here."]
    out = content_overlap(train, test, held_out=False)
    # test 5-grams: 2 from the first answer (both shared) + 2 from the third (none); "Fine!" is verbatim
    assert out == {
        "held_out": False,
        "shared_5gram_share": 0.5,
        "verbatim_answers": 1,
        "test_answers": 3,
        "train_answers": 2,
    }
    plans = [plan_session(0, i, held_out=i >= 60, closing_question=True) for i in range(80)]
    texts = [[t.text for t in p.turns if t.speaker == "patient"] for p in plans]
    train, test, seen = (
        [t for group in part for t in group] for part in (texts[:60], texts[60:], texts[40:60])
    )
    held = content_overlap(train, test, held_out=True)
    mixed = content_overlap(train, seen, held_out=False)
    assert held["shared_5gram_share"] == 0.0 and held["verbatim_answers"] == 0
    assert mixed["shared_5gram_share"] > 0.5 and mixed["verbatim_answers"] > 20  # same bank: recall


def test_corpus_with_extra_masked_test_sessions_reports_its_overlap(tmp_path: Path) -> None:
    cfg = SynthConfig(
        n=3, seed=0, video=False, test_sessions=2, test_words_neutral_share=1.0, media_neutral_share=0.0
    )
    assert [split_of(cfg, i) for i in (3, 4)] == ["test", "test"]
    summary = generate_corpus(cfg, tmp_path, progress=False)
    assert summary["sessions"] == 5 and summary["splits"]["test"] >= 2
    metas = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*_P/synth_meta.json"))]
    tests = [m for m in metas if m["split"] == "test"]
    assert all(m["held_out"] for m in tests) and not any(m["held_out"] for m in metas if m["split"] != "test")
    assert all(m["masked"] for m in metas[3:])  # the extra test sessions use the test masked share
    assert summary["masked_test"] == sum(m["masked"] for m in tests)
    assert summary["content_held_out"]["held_out"] is True
    assert summary["content_held_out"]["verbatim_answers"] == 0
    assert summary["content_held_out"]["shared_5gram_share"] == 0.0
    assert (
        json.loads((tmp_path / "corpus.json").read_text())["content_held_out"] == summary["content_held_out"]
    )
    with pytest.raises(ConfigError, match="masked shares"):
        SynthConfig(test_words_neutral_share=0.95, media_neutral_share=0.1).validate()
