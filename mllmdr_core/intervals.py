"""Bootstrap confidence intervals: resample sessions with replacement, recompute the metrics, take the
percentiles (pure numpy, seeded).

``bootstrap_intervals(stat, y_true, y_pred)``: ``stat`` maps the paired arrays (one row per session) to
named metric values; every resample draws the same row indices for all arrays, so paired values stay
together. Returns ``{name: (low, high)}`` of the ``confidence`` percentile interval. With ``groups``
(one subject id per row) the resampling is subject-level: each resample draws subjects with replacement
and takes every row of each drawn subject, so a subject's sessions stay together (a cluster bootstrap,
the unit leave-one-subject-out cross-validation leaves out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

N_RESAMPLES = 1000
CONFIDENCE = 0.95

Stat = Callable[..., Mapping[str, float]]


def bootstrap_intervals(
    stat: Stat,
    *arrays: npt.ArrayLike,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every value ``stat(*arrays)`` returns, over ``n_resamples`` session-level
    resamples (rows drawn with replacement, the same rows for each array; with ``groups``, subjects
    drawn with replacement, all their rows taken). Empty input: no intervals."""
    data = [np.asarray(a) for a in arrays]
    if not data or len(data[0]) == 0:
        return {}
    n = len(data[0])
    if any(len(a) != n for a in data):
        raise ValueError(f"paired arrays differ in length: {[len(a) for a in data]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    if groups is None:
        resamples: list[npt.NDArray[np.intp]] = list(rng.integers(0, n, size=(n_resamples, n)))  # (R, n)
    else:
        resamples = _group_resamples(np.asarray(groups), n, n_resamples, rng)
    draws: dict[str, list[float]] = {}
    for rows in resamples:
        for name, value in stat(*(a[rows] for a in data)).items():
            draws.setdefault(name, []).append(float(value))
    tail = 100 * (1 - confidence) / 2
    out: dict[str, tuple[float, float]] = {}
    for name, values in draws.items():
        v = np.asarray(values)
        v = v[np.isfinite(v)]
        out[name] = (
            (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
            if len(v)
            else (
                float("nan"),
                float("nan"),
            )
        )
    return out


def _group_resamples(
    groups: npt.NDArray[np.generic], n: int, n_resamples: int, rng: np.random.Generator
) -> list[npt.NDArray[np.intp]]:
    """Row indices of ``n_resamples`` subject-level resamples (subjects drawn with replacement)."""
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} rows")
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
    drawn = rng.integers(0, len(members), size=(n_resamples, len(members)))  # (R, subjects)
    return [np.concatenate([members[g] for g in row]) for row in drawn]
