"""Screening metrics, once for training evaluation and replay: binary precision/recall/F1 of the screen
(total ≥ 10), MAE, RMSE, Lin's CCC, per-item MAE, the grounding check of rationales, and the confusion
plot of the binary screen (matplotlib, imported when drawn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mllmdr_core.phq8 import BINARY_CUTOFF, ITEM_KEYS


def binary_scores(
    y_true: Sequence[float], y_pred: Sequence[float], cutoff: int = BINARY_CUTOFF
) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of the positive screen (total ≥ ``cutoff``) + confusion counts."""
    return screen_scores(
        list(np.asarray(y_true, dtype=float) >= cutoff), list(np.asarray(y_pred, dtype=float) >= cutoff)
    )


def screen_scores(true_positive: Sequence[bool], pred_positive: Sequence[bool]) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of screening decisions already made + confusion counts."""
    t = np.asarray(true_positive, dtype=bool)
    p = np.asarray(pred_positive, dtype=bool)
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    tn = int(np.sum(~t & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = max(1, len(t))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / n,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def ccc(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Lin's concordance correlation coefficient (0 when both are constant)."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if len(t) < 2:
        return 0.0
    cov = float(np.mean((t - t.mean()) * (p - p.mean())))
    denom = float(t.var() + p.var() + (t.mean() - p.mean()) ** 2)
    return 2 * cov / denom if denom > 0 else 0.0


def regression_scores(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    err = p - t
    return {
        "mae": float(np.mean(np.abs(err))) if len(t) else float("nan"),
        "rmse": float(np.sqrt(np.mean(err**2))) if len(t) else float("nan"),
        "ccc": ccc(t, p),
    }


def item_mae(
    true_items: Sequence[Mapping[str, int]], pred_items: Sequence[Mapping[str, float]]
) -> dict[str, float]:
    """Mean absolute error per PHQ-8 item key over sessions."""
    out: dict[str, float] = {}
    for key in ITEM_KEYS:
        errs = [abs(float(p[key]) - float(t[key])) for t, p in zip(true_items, pred_items, strict=True)]
        out[key] = float(np.mean(errs)) if errs else float("nan")
    return out


def screening_report(
    true_items: Sequence[Mapping[str, int]],
    pred_items: Sequence[Mapping[str, float]],
    cutoff: int = BINARY_CUTOFF,
) -> dict[str, Any]:
    """All metrics for one prediction set: totals are item sums."""
    t_tot = [float(sum(t[k] for k in ITEM_KEYS)) for t in true_items]
    p_tot = [float(sum(p[k] for k in ITEM_KEYS)) for p in pred_items]
    return {
        "n": len(t_tot),
        **binary_scores(t_tot, p_tot, cutoff),
        **regression_scores(t_tot, p_tot),
        "item_mae": item_mae(true_items, pred_items),
    }


def plot_confusion(true_totals: Sequence[int], pred_totals: Sequence[int], out_png: Path, title: str) -> Path:
    """2×2 confusion matrix of the binary screen (total ≥ 10)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(true_totals) >= BINARY_CUTOFF
    p = np.asarray(pred_totals) >= BINARY_CUTOFF
    cm = np.array([[np.sum(~t & ~p), np.sum(~t & p)], [np.sum(t & ~p), np.sum(t & p)]])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=14,
            color="white" if v > cm.max() / 2 else "black",
        )
    ax.set_xticks([0, 1], ["pred < 10", "pred ≥ 10"])
    ax.set_yticks([0, 1], ["true < 10", "true ≥ 10"])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
