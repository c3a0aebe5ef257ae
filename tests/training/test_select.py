"""The dev-split choice of a bundle option (training/select.py): the rule, on recorded dev figures."""

from __future__ import annotations

from typing import Any

from training.eval import selection_markdown
from training.run_config import RunConfig, SelectConfig
from training.select import (
    GROUNDING_TARGET,
    choose,
    combination_name,
    decode_combinations,
    decode_name,
    selection_record,
)


def _variant(value: bool, f1: float, mae: float, grounding: float) -> dict[str, Any]:
    dev = {"f1": f1, "mae": mae, "grounding": grounding, "n_sessions": "–", "rmse": 0.0, "ccc": 0.0}
    return {"indicators_in_prompt": value, "dev": dev}


def test_grounding_first_then_f1_then_mae_and_ties_keep_the_first() -> None:
    off, on = _variant(False, 0.90, 2.0, 0.99), _variant(True, 0.95, 1.5, 0.99)
    assert choose([off, on]) is on  # better F1
    assert choose([off, _variant(True, 0.90, 1.9, 0.99)])["indicators_in_prompt"] is True  # same F1, MAE
    assert choose([off, _variant(True, 0.90, 2.0, 0.99)]) is off  # a tie keeps the paper's prompt
    ungrounded = _variant(True, 1.0, 0.5, GROUNDING_TARGET - 0.01)
    assert choose([off, ungrounded]) is off  # accuracy never buys back a grounding miss
    assert choose([_variant(False, 0.5, 3.0, 0.5), ungrounded]) is ungrounded  # both miss: accuracy


def test_decode_options_multiply_the_trained_variants_and_the_record_names_every_combination() -> None:
    cfg = RunConfig(select=SelectConfig(indicators_in_prompt=(False, True), grounded_decoding=(False, True)))
    assert decode_combinations(cfg) == [{"grounded_decoding": False}, {"grounded_decoding": True}]
    assert decode_combinations(RunConfig()) == [{}]  # none selected: one bundle per trained variant
    assert decode_name({"grounded_decoding": True}) == "grounded_on"
    rows = [
        {**_variant(ind, f1, 2.0, g), "grounded_decoding": dec, "train_s": 10.0, "dev_s": 2.0}
        for ind, dec, f1, g in (
            (False, False, 0.9, 0.50), (False, True, 0.9, 0.97),
            (True, False, 1.0, 0.60), (True, True, 0.9, 0.97),
        )
    ]  # fmt: skip
    record = selection_record(rows, cfg.select)
    assert record["chosen"] is rows[1]  # grounded and first of the two grounded ties
    assert record["chosen_values"] == {"indicators_in_prompt": False, "grounded_decoding": True}
    assert record["options"] == ["indicators_in_prompt", "grounded_decoding"]
    assert record["chosen_value"] is False
    assert combination_name(rows[1], cfg.select) == "indicators_off, grounded_decoding on"
    md = selection_markdown({k: v for k, v in record.items() if k != "chosen"})
    assert md[0] == (
        "## Options chosen on the dev split: `assess.indicators_in_prompt` = False, "
        "`assess.grounded_decoding` = True"
    )
    table = md[md.index("") + 3 :]
    assert table[0].startswith("| indicators_in_prompt | grounded_decoding | dev n |")
    assert len(table) == 2 + 4 + 1  # header, rule, 4 combinations, blank
    assert table[3] == "| False | True | – | 0.90 | 2.00 | 0.00 | 0.00 | 0.97 | – | 10 | 2 |"
