"""The bundle's report.json (merged per split, replaced for another bundle) and its model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mllmdr_core.metrics import screening_report
from training.eval import metric_intervals
from training.model_card import model_card, write_bundle_report, write_model_card

ITEMS = ("interest", "mood", "sleep", "tired", "appetite", "failure", "concentration", "psychomotor")


def _metrics(shift: float) -> dict[str, Any]:
    true = [dict.fromkeys(ITEMS, v) for v in (0, 1, 2, 3, 2)]
    pred = [{k: t[k] + shift for k in ITEMS} for t in true]  # unclipped: every total moves by 8·shift
    return {
        **screening_report(true, pred),
        "intervals": metric_intervals(true, pred),
        "grounded_share": 0.5,
        "fallback_share": 0.0,
    }


def _results(split: str) -> dict[str, Any]:
    abl = {name: {"all": _metrics(s), "masked": _metrics(s)} for name, s in (("all", 0.0), ("text", 1.0))}
    return {
        "ablations": abl,
        "meta": {"split": split, "n_sessions": 5, "masked_sessions": 5},
        "test_ledger": {"fingerprint": "f", "evaluations": 1, "forced": False} if split == "test" else None,
        "content_held_out": {"held_out": True, "shared_5gram_share": 0.0, "verbatim_answers": 0},
        "targets": {"f1_all": {"value": 1.0, "target": 0.9, "met": True}},
    }


def test_report_merges_splits_of_one_bundle_and_the_card_shows_them(tmp_path: Path) -> None:
    write_bundle_report(tmp_path, "abc", _results("dev"))
    write_bundle_report(tmp_path, "abc", _results("test"))
    doc = json.loads((tmp_path / "report.json").read_text())
    assert set(doc) == {"bundle_id", "dev", "test"} and doc["test"]["evaluations"] == 1
    assert doc["dev"]["evaluations"] is None  # only the test split is counted by the ledger
    test = doc["test"]
    assert test["grounding"] == 0.5 and test["masked"]["n"] == 5 and test["masked"]["text"]["mae"] == 8.0
    assert test["metrics"]["mae"] == 0.0 and test["ablations"]["text"]["all"]["mae"] == 8.0
    assert test["ablations"]["all"]["inputs"] == "all: text + audio + video"
    write_bundle_report(tmp_path, "other", _results("test"))  # another bundle: the old report goes
    assert set(json.loads((tmp_path / "report.json").read_text())) == {"bundle_id", "test"}

    manifest = {"bundle_id": "other", "non_clinical": True, "training_data": "synthetic"}
    training = {"corpus_kind": "synth", "dataset": "synth-x", "sessions": {"train": 7, "dev": 2, "test": 5}}
    card = write_model_card(tmp_path, manifest, training).read_text()
    assert card.startswith("---\n") and "\nnon_clinical: true\n" in card and "  - synth-x\n" in card
    assert "sessions per split: train 7, dev 2, test 5" in card
    assert "## Evaluation (test split, 5 sessions, 5 masked)" in card and "scored 1 time(s)" in card
    assert "| text only | 5 |" in card and "| 8.00 [8.00, 8.00] |" in card  # MAE 8 on every resample
    assert "- target f1_all: 1.00 (required 0.9: met)" in card
    clinical = model_card({}, {**manifest, "non_clinical": False}, {**training, "corpus_kind": "daic-woz"})
    assert "## Non-clinical" not in clinical and "## Evaluation" not in clinical
    assert "non_clinical: false" in clinical and "synthetic-data" not in clinical


def test_report_and_card_name_the_test_round_and_the_retired_sessions(tmp_path: Path) -> None:
    reason = "in the test split of round 1, already scored: never used again (not train, not dev)"
    rnd = {"round": 2, "retired": {"n": 3, "reason": reason, "session_ids": ["1002", "1006", "1007"]}}
    write_bundle_report(tmp_path, "abc", {**_results("test"), "test_round": rnd})
    test = json.loads((tmp_path / "report.json").read_text())["test"]
    assert test["round"] == 2 and test["retired"] == rnd["retired"]
    card = write_model_card(tmp_path, {"bundle_id": "abc"}, {"corpus_kind": "synth"}).read_text()
    assert (
        "Test round 2: the 3 sessions of the earlier rounds' test splits were retired after being scored "
        f"(in no split since: {reason})." in card
    )
    assert "new sessions, not new content" in card  # a later synthetic round reuses the held-out banks
    first = {"round": 1, "retired": {"n": 0, "reason": "", "session_ids": []}}
    write_bundle_report(tmp_path, "abc", {**_results("test"), "test_round": first})
    card = write_model_card(tmp_path, {"bundle_id": "abc"}, {"corpus_kind": "synth"}).read_text()
    assert "Test round 1: the first test split of this corpus." in card
    assert "new sessions, not new content" not in card


def test_card_limitation_follows_the_decoding(tmp_path: Path) -> None:
    for grounded, words in ((True, "numbers come from the prompt"), (False, "check the grounding mark")):
        results = _results("test")
        results["meta"]["grounded_decoding"] = grounded
        write_bundle_report(tmp_path, "abc", results)
        card = write_model_card(tmp_path, {"bundle_id": "abc"}, {"corpus_kind": "synth"}).read_text()
        assert words in card.split("## Limitations")[1]
