"""The dev-split choice of a bundle option (training/select.py): the rule, on recorded dev figures."""

from __future__ import annotations

from typing import Any

from training.select import GROUNDING_TARGET, choose


def _variant(value: bool, f1: float, mae: float, grounding: float) -> dict[str, Any]:
    return {"indicators_in_prompt": value, "dev": {"f1": f1, "mae": mae, "grounding": grounding}}


def test_grounding_first_then_f1_then_mae_and_ties_keep_the_first() -> None:
    off, on = _variant(False, 0.90, 2.0, 0.99), _variant(True, 0.95, 1.5, 0.99)
    assert choose([off, on]) is on  # better F1
    assert choose([off, _variant(True, 0.90, 1.9, 0.99)])["indicators_in_prompt"] is True  # same F1, MAE
    assert choose([off, _variant(True, 0.90, 2.0, 0.99)]) is off  # a tie keeps the paper's prompt
    ungrounded = _variant(True, 1.0, 0.5, GROUNDING_TARGET - 0.01)
    assert choose([off, ungrounded]) is off  # accuracy never buys back a grounding miss
    assert choose([_variant(False, 0.5, 3.0, 0.5), ungrounded]) is ungrounded  # both miss: accuracy
