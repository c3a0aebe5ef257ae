"""Screening metrics against hand-computed numbers, the grounding check, the confusion plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.grounding import check, quoted_spans
from mllmdr_core.metrics import (
    binary_scores,
    ccc,
    plot_confusion,
    regression_scores,
    screen_scores,
    screening_report,
)
from mllmdr_core.phq8 import ITEM_KEYS


def test_binary_and_regression_metrics_match_hand_computation() -> None:
    true = [12, 3, 15, 9, 10]
    pred = [11, 10, 4, 2, 13]  # TP: 12→11, 10→13; FP: 3→10; FN: 15→4; TN: 9→2
    b = binary_scores(true, pred)
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (2, 1, 1, 1)
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == pytest.approx(2 / 3)
    assert b["f1"] == pytest.approx(2 / 3)
    r = regression_scores(true, pred)
    assert r["mae"] == pytest.approx((1 + 7 + 11 + 7 + 3) / 5)
    assert r["rmse"] == pytest.approx(np.sqrt((1 + 49 + 121 + 49 + 9) / 5))
    assert ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert 0 < ccc([1, 2, 3, 4], [2, 3, 4, 5]) < 1  # a constant shift lowers CCC, not correlation
    items_true = [dict.fromkeys(ITEM_KEYS, 2), dict.fromkeys(ITEM_KEYS, 0)]
    items_pred = [dict.fromkeys(ITEM_KEYS, 1.0), dict.fromkeys(ITEM_KEYS, 0.0)]
    rep = screening_report(items_true, items_pred)
    assert rep["item_mae"]["sleep"] == pytest.approx(0.5) and rep["mae"] == pytest.approx(4.0)
    assert rep["recall"] == 0.0 and rep["f1"] == 0.0  # 16 → 8 is a missed positive


def test_eval_grounding_is_the_core_check_against_the_prompt() -> None:
    """Evaluation's grounded share uses ``mllmdr_core.grounding`` (one implementation): quotes must be in
    the prompt's Q/A lines; a rationale without quotes or numbers claims nothing unverifiable."""
    prompt = 'Rate PHQ-8 item "Sleep".\nA: I barely sleep, maybe four hours. I wake up at 3 a.m. every night.'
    assert quoted_spans('The patient said "I wake up at 3 a.m." and more') == ["I wake up at 3 a.m."]
    assert check('Reports "barely sleep, maybe four hours".', prompt).score == 1.0
    assert check('Reports "sleeps like a baby".', prompt).score == 0.0
    assert check("Low speech_ratio and long pauses.", prompt).score == 1.0
    assert check("Seems fine overall.", prompt).ungrounded == ()


def test_screen_scores_of_decisions_match_the_thresholded_totals() -> None:
    true = [12, 3, 15, 9, 10]
    pred = [11, 10, 4, 2, 13]
    decided = screen_scores([t >= 10 for t in true], [p >= 10 for p in pred])
    assert decided == binary_scores(true, pred)
    assert decided["accuracy"] == pytest.approx(3 / 5)
    empty = regression_scores([], [])
    assert np.isnan(empty["mae"]) and np.isnan(empty["rmse"]) and empty["ccc"] == 0.0


def test_confusion_plot_is_a_png(tmp_path: Path) -> None:
    out = plot_confusion([12, 3, 15], [11, 10, 4], tmp_path / "sub" / "confusion.png", "screen")
    assert out == tmp_path / "sub" / "confusion.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
