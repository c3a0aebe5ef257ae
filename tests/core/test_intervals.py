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


def test_subject_level_resampling_keeps_a_subjects_sessions_together() -> None:
    """With ``groups`` whole subjects are drawn: 10 subjects × 6 near-identical sessions behave like 10
    observations (wider interval than 60 independent rows), and each resample's size is a multiple of 6."""
    rng = np.random.default_rng(2)
    subject_error = rng.normal(0, 3, 10)  # one error level per subject
    t = np.zeros(60)
    p = np.repeat(subject_error, 6) + rng.normal(0, 0.05, 60)
    groups = np.repeat([f"s{i}" for i in range(10)], 6)
    mean = lambda t, p: {"bias": float(np.mean(p - t)), "n": float(len(t))}  # noqa: E731
    rows = bootstrap_intervals(mean, t, p, seed=1)
    subj = bootstrap_intervals(mean, t, p, seed=1, groups=groups)
    assert subj == bootstrap_intervals(mean, t, p, seed=1, groups=list(groups))  # seeded
    assert (subj["bias"][1] - subj["bias"][0]) > 2.0 * (rows["bias"][1] - rows["bias"][0])
    assert subj["n"] == (60.0, 60.0)  # 10 subjects of 6 sessions drawn each time
    uneven = np.array(["a"] * 5 + ["b"])  # one subject with 5 sessions, one with 1
    sizes = bootstrap_intervals(lambda t: {"n": float(len(t))}, np.zeros(6), groups=uneven, confidence=0.5)
    assert set(sizes["n"]) <= {2.0, 6.0, 10.0}
    with pytest.raises(ValueError, match="groups has 3 entries"):
        bootstrap_intervals(mean, t, p, groups=["a", "b", "c"])
