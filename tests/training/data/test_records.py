"""SessionRecord pieces: label derivation and the visual table's shape check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.errors import DatasetError
from mllmdr_core.phq8 import ITEM_KEYS
from training.data.records import PHQLabels
from training.data.visual_table import VisualTable


def test_labels_derive_total_and_binary_and_drop_incomplete_items() -> None:
    items = dict.fromkeys(ITEM_KEYS, 2)
    assert PHQLabels.build(total=None, binary=None, items=items) == PHQLabels(16, 1, items)
    assert PHQLabels.build(total=9, binary=1, items=None).binary == 0  # binary follows the total (≥ 10)
    partial = PHQLabels.build(total=None, binary=1, items={"sleep": 3})
    assert partial == PHQLabels(None, 1, None)


def test_visual_table_shape_mismatch_names_the_source() -> None:
    with pytest.raises(DatasetError, match=r"x\.csv: values \(3, 1\) != \(2 times, 1 names\)"):
        times, values = np.zeros(2, np.float32), np.zeros((3, 1), np.float32)
        VisualTable("spec", ("a",), times, values, (), (Path("x.csv"),))
