"""Bootstrap intervals: seeded, paired resampling, percentile bounds around the point value."""

from __future__ import annotations

import numpy as np
import pytest

from mllmdr_core.intervals import bootstrap_intervals


def _mae(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"mae": float(np.mean(np.abs(t - p))), "n_pos": float(np.sum(t))}


def test_intervals_are_seeded_paired_and_cover_the_point_value() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 25, 60).astype(float)
    p = t + rng.normal(0, 2, 60)
    ci = bootstrap_intervals(_mae, t, p, seed=3)
    assert ci == bootstrap_intervals(_mae, t, p, seed=3) and ci != bootstrap_intervals(_mae, t, p, seed=4)
    lo, hi = ci["mae"]
    assert lo < _mae(t, p)["mae"] < hi and 0.3 < hi - lo < 1.5  # about ±2 SE of a mean of |N(0, 2)|
    # paired: a perfect prediction stays perfect in every resample (rows move together)
    assert bootstrap_intervals(_mae, t, t.copy())["mae"] == (0.0, 0.0)
    # a constant sample has a zero-width interval; wider confidence → wider interval
    assert bootstrap_intervals(_mae, np.ones(5), np.zeros(5))["mae"] == (1.0, 1.0)
    lo90, hi90 = bootstrap_intervals(_mae, t, p, confidence=0.9, seed=3)["mae"]
    assert lo <= lo90 and hi90 <= hi


def test_bad_inputs_are_refused_and_empty_input_gives_no_intervals() -> None:
    assert bootstrap_intervals(_mae, np.zeros(0), np.zeros(0)) == {}
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_intervals(_mae, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_intervals(_mae, np.zeros(3), np.zeros(3), confidence=1.0)
