"""Dataset label files and the evaluation of replayed scores against them."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_sdk.labels import evaluate, evaluation_markdown, normalise_id, read_labels
from mllmdr_core.errors import DatasetError
from mllmdr_core.phq8 import ITEM_KEYS

DAIC_SPLIT = (
    "Participant_ID,PHQ8_Binary,PHQ8_Score,Gender,PHQ8_NoInterest,PHQ8_Depressed,PHQ8_Sleep,PHQ8_Tired,"
    "PHQ8_Appetite,PHQ8_Failure,PHQ8_Concentrating,PHQ8_Moving\n"
    "303,0,0,0,0,0,0,0,0,0,0,0\n"
    "321,1,20,0,2,3,3,3,3,3,2,1\n"
)
EDAIC_SPLIT = (
    "Participant_ID, Gender, PHQ_Binary, PHQ_Score, PCL-C (PTSD), PTSD Severity\n600_P, 0, 0, 4, 0, 20\n"
    "601, 1, 1, 15, 1, 50\n"
)


def _pred(total: int, items: dict[str, int] | None = None) -> dict[str, object]:
    row: dict[str, object] = {"total": total, "binary": int(total >= 10)}
    row.update({f"item_{k}": (items or {}).get(k, 0) for k in ITEM_KEYS})
    return row


def test_ids_normalised() -> None:
    assert [normalise_id(x) for x in ("300", "300.0", " 300_P ", "abc")] == ["300", "300", "300", "abc"]


def test_daic_split_with_items(tmp_path: Path) -> None:
    path = tmp_path / "train_split_Depression_AVEC2017.csv"
    path.write_text(DAIC_SPLIT)
    labels = read_labels(path)
    assert labels["321"].total == 20 and labels["321"].binary is True
    assert labels["321"].items["mood"] == 3 and labels["303"].items["interest"] == 0


def test_edaic_split_spaced_headers_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "dev_split.csv"
    path.write_text(EDAIC_SPLIT)
    labels = read_labels(path)
    assert (labels["600"].total, labels["600"].binary, dict(labels["600"].items)) == (4, False, {})
    assert labels["601"].total == 15 and labels["601"].binary is True


def test_evaluate_hand_computed(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    path.write_text(DAIC_SPLIT)
    labels = read_labels(path)
    preds = {
        "303": _pred(12, {"sleep": 3, "tired": 3, "mood": 3, "interest": 3}),
        "321": _pred(18, {k: 2 for k in ITEM_KEYS} | {"psychomotor": 2, "failure": 2}),
    }
    preds["321"]["total"] = 16  # items sum to 16
    ev = evaluate(preds, labels)
    # 303: truth negative, predicted positive (FP); 321: both positive (TP)
    assert (ev["binary"]["tp"], ev["binary"]["fp"], ev["binary"]["fn"]) == (1, 1, 0)
    assert ev["binary"]["precision"] == pytest.approx(0.5) and ev["binary"]["recall"] == pytest.approx(1.0)
    assert ev["regression"]["mae"] == pytest.approx((12 + 4) / 2)
    assert ev["regression"]["rmse"] == pytest.approx(((144 + 16) / 2) ** 0.5)
    assert ev["item_mae"]["mood"] == pytest.approx((3 + 1) / 2)
    assert "F1" in evaluation_markdown(ev)


def test_missing_predictions_listed_and_malformed_rows(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    path.write_text(DAIC_SPLIT)
    ev = evaluate({"303": _pred(0)}, read_labels(path))
    assert ev["n"] == 1 and ev["missing_predictions"] == ["321"]
    bad = tmp_path / "bad.csv"
    bad.write_text("Participant_ID,PHQ8_Score\n300,lots\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:2: not a number"):
        read_labels(bad)
    noid = tmp_path / "noid.csv"
    noid.write_text("who,PHQ8_Score\n1,2\n")
    with pytest.raises(DatasetError, match="no id column"):
        read_labels(noid)
