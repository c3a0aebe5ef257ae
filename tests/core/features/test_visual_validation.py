"""Issue 19 item 2 on a short planted sequence: the live "visual-v2" estimates match the plant."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from mllmdr_core.features.face_v2 import count_blinks
from training.synth.visual_check import Checker


@pytest.fixture(scope="module")
def checker() -> Iterator[Checker]:
    chk = Checker()
    yield chk
    chk.close()


@pytest.mark.parametrize("axis", ["pitch", "yaw", "roll"])
def test_pose_change_within_3_degrees_of_the_plant(checker: Checker, axis: str) -> None:
    sweep = checker.pose_sweep(axis, max_deg=10.0, step=5.0)
    assert sweep["max_abs_error_deg"] <= 3.0, sweep
    assert 0.8 < sweep["slope"] < 1.2, sweep


def test_smile_and_jaw_ramps_correlate(checker: Checker) -> None:
    smile = checker.ramp("smile", -1.0, 1.0, ("AU12_r",), n=6)
    jaw = checker.ramp("mouth_open", 0.0, 1.0, ("AU25_r", "AU26_r"), n=6)
    assert smile["AU12_r"]["r"] >= 0.8, smile
    assert jaw["AU25_r"]["r"] >= 0.8 and jaw["AU26_r"]["r"] >= 0.8, jaw
    assert smile["AU12_r"]["measured"][0] == 0.0 < 3.0 < smile["AU12_r"]["measured"][-1]


def test_blink_count_within_one_per_minute(checker: Checker) -> None:
    train = checker.blink_train(12.0, 10.0, per_min=20.0)
    assert train["planted"] >= 2, train
    assert train["error_per_min"] <= 1.0, train


def test_count_blinks_hysteresis() -> None:
    assert count_blinks([0, 3, 4, 2, 3, 0.5, 0, 5, np.nan, 5, 0]) == 2  # 2 stays closed; NaN ends nothing
    assert count_blinks([]) == 0
