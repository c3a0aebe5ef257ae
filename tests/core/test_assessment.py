"""Assessment schema: consistency rules and the non-clinical label."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment, ItemAssessment, ModelInfo
from mllmdr_core.phq8 import ITEM_KEYS


def _items(scores: list[int]) -> list[ItemAssessment]:
    return [ItemAssessment(key=k, score=s, rationale="r") for k, s in zip(ITEM_KEYS, scores, strict=True)]


def _model(non_clinical: bool = True) -> ModelInfo:
    return ModelInfo(
        bundle_id="b", training_data="synthetic", non_clinical=non_clinical, backend="transformers"
    )


def test_total_and_binary_follow_items() -> None:
    a = Assessment(
        session_id="s",
        kind="final",
        window_start_s=0,
        window_end_s=1,
        items=_items([2, 2, 1, 1, 1, 1, 1, 1]),
        total=10,
        binary=True,
        model=_model(),
        labels=[SYNTHETIC_LABEL],
    )
    assert a.binary and a.total == 10
    again = Assessment.model_validate_json(a.model_dump_json())
    assert again == a


@pytest.mark.parametrize(
    ("total", "binary", "labels"),
    [
        (9, True, [SYNTHETIC_LABEL]),
        (10, False, [SYNTHETIC_LABEL]),
        (11, True, [SYNTHETIC_LABEL]),
        (10, True, []),
    ],
)
def test_inconsistent_results_are_rejected(total: int, binary: bool, labels: list[str]) -> None:
    with pytest.raises(ValidationError):
        Assessment(
            session_id="s",
            kind="final",
            window_start_s=0,
            window_end_s=1,
            items=_items([2, 2, 1, 1, 1, 1, 1, 1]),
            total=total,
            binary=binary,
            model=_model(),
            labels=labels,
        )


def test_schema_lists_items() -> None:
    schema = Assessment.model_json_schema()
    assert "items" in schema["properties"] and "ItemAssessment" in schema["$defs"]
