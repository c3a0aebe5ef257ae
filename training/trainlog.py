"""Loss-curve logging (JSONL + PNG plot), atomic checkpoints and deterministic seeding."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU); deterministic algorithms where torch offers them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class CurveLog:
    """Appends one JSON object per logged step to ``path`` (survives restarts: it only appends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_curves(
    log_paths: list[Path], out_png: Path, keys: tuple[str, ...] = ("loss", "lm_loss", "mse_loss")
) -> Path:
    """Plot every ``key`` found in the JSONL logs against the global step, one panel per log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [(p, CurveLog(p).read()) for p in log_paths if p.exists()]
    fig, axes = plt.subplots(1, max(1, len(logs)), figsize=(5 * max(1, len(logs)), 3.6), squeeze=False)
    for ax, (path, rows) in zip(axes[0], logs, strict=False):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for row in rows:
            for key in keys:
                if key in row and row[key] is not None:
                    series[key].append((int(row["step"]), float(row[key])))
        for key, pts in series.items():
            pts.sort()
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=key, linewidth=1.2)
        ax.set_title(path.stem)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` to a temp file and rename: never a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state
