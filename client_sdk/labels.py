"""PHQ-8 labels from dataset split files, and the evaluation of replayed scores against them.

Reads DAIC-WOZ split CSVs (``Participant_ID, PHQ8_Binary, PHQ8_Score, …, PHQ8_NoInterest…``), E-DAIC
splits (``PHQ_Binary, PHQ_Score``) and ``Detailed_PHQ8_Labels.csv`` (``PHQ_8NoInterest…``), or our own
``session_id,total[,interest…]`` CSV. Header cells may carry spaces; IDs may read ``300``, ``300.0`` or
``300_P``. The metrics are ``mllmdr_core.metrics``' (binary screen at total ≥ 10, MAE, RMSE, Lin's CCC),
the ones training's evaluation reports.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mllmdr_core.errors import DatasetError
from mllmdr_core.metrics import regression_scores, screen_scores
from mllmdr_core.phq8 import BINARY_CUTOFF, ITEM_KEYS, PHQ8_ITEMS

_ID_COLUMNS = ("participant_id", "session_id", "id", "participant")
_TOTAL_COLUMNS = ("phq8_score", "phq_score", "phq_8total", "total", "phq8_total")
_BINARY_COLUMNS = ("phq8_binary", "phq_binary", "binary")
METRICS_FROM = "mllmdr_core.metrics"  # named in evaluation.json / evaluation.md


@dataclass(frozen=True)
class SessionLabel:
    session_id: str
    total: int | None
    binary: bool | None
    items: Mapping[str, int] = field(default_factory=dict)


def normalise_id(raw: str) -> str:
    """``"300"``, ``"300.0"``, ``"300_P"``, ``" 300 "`` → ``"300"``; other ids unchanged (stripped)."""
    text = raw.strip()
    if text.upper().endswith("_P"):
        text = text[:-2]
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _item_column(name: str) -> str | None:
    key = name.replace("_", "").replace(" ", "").lower()
    for item in PHQ8_ITEMS:
        suffix = item.dataset_column.split("_", 1)[1].lower()  # "NoInterest"
        if key in (f"phq8{suffix}", item.key.lower(), f"item{item.key.lower()}"):
            return item.key
    return None


def read_labels(path: str | Path) -> dict[str, SessionLabel]:
    """Labels by normalised session id; raises ``DatasetError`` (file:line) on malformed rows."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{p}: labels file not found") from exc
    reader = csv.reader(text.splitlines(), skipinitialspace=True)
    rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"{p}:1: empty labels file")
    header = [h.strip().lower() for h in rows[0][1]]
    id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
    if id_col is None:
        raise DatasetError(f"{p}:1: no id column (want one of {', '.join(_ID_COLUMNS)})")
    total_col = next((header.index(c) for c in _TOTAL_COLUMNS if c in header), None)
    binary_col = next((header.index(c) for c in _BINARY_COLUMNS if c in header), None)
    item_cols = {i: key for i, h in enumerate(rows[0][1]) if (key := _item_column(h)) is not None}
    out: dict[str, SessionLabel] = {}
    for lineno, row in rows[1:]:
        sid = normalise_id(row[id_col]) if id_col < len(row) else ""
        if not sid:
            raise DatasetError(f"{p}:{lineno}: missing session id")
        items = {
            key: _int(row, i, p, lineno) for i, key in item_cols.items() if i < len(row) and row[i].strip()
        }
        total = _int(row, total_col, p, lineno) if total_col is not None and row[total_col].strip() else None
        if total is None and len(items) == len(ITEM_KEYS):
            total = sum(items.values())
        binary = (
            bool(_int(row, binary_col, p, lineno))
            if binary_col is not None and row[binary_col].strip()
            else None
        )
        if binary is None and total is not None:
            binary = total >= BINARY_CUTOFF
        out[sid] = SessionLabel(sid, total, binary, items if len(items) == len(ITEM_KEYS) else {})
    return out


def _int(row: Sequence[str], col: int | None, path: Path, lineno: int) -> int:
    if col is None or col >= len(row):
        raise DatasetError(f"{path}:{lineno}: missing column")
    try:
        value = float(row[col])
    except ValueError as exc:
        raise DatasetError(f"{path}:{lineno}: not a number: {row[col]!r}") from exc
    if not value.is_integer():
        raise DatasetError(f"{path}:{lineno}: not an integer score: {row[col]!r}")
    return int(value)


def evaluate(
    predictions: Mapping[str, Mapping[str, Any]], labels: Mapping[str, SessionLabel]
) -> dict[str, Any]:
    """Compare replayed summary rows (``total``, ``binary``, ``item_<key>``) with labels.

    Binary P/R/F1 use the predicted ``binary`` against the label's binary (or total ≥ 10); MAE/RMSE/CCC
    use totals where the label has one; per-item MAE where the label has all eight items.
    """
    ids = sorted(set(predictions) & set(labels))
    missing = sorted(set(labels) - set(predictions))
    with_binary = [i for i in ids if labels[i].binary is not None]
    t_bin = [bool(labels[i].binary) for i in with_binary]
    p_bin = [bool(int(predictions[i]["binary"])) for i in with_binary]
    with_total = [i for i in ids if labels[i].total is not None]
    t_tot = [float(labels[i].total or 0) for i in with_total]
    p_tot = [float(predictions[i]["total"]) for i in with_total]
    binary = screen_scores(t_bin, p_bin)
    regression = regression_scores(t_tot, p_tot)
    with_items = [i for i in ids if labels[i].items]
    item_mae = {
        key: (
            sum(abs(float(predictions[i][f"item_{key}"]) - labels[i].items[key]) for i in with_items)
            / len(with_items)
        )
        if with_items
        else None
        for key in ITEM_KEYS
    }
    return {
        "n": len(ids),
        "n_binary": len(with_binary),
        "n_total": len(with_total),
        "n_items": len(with_items),
        "missing_predictions": missing,
        "binary": binary,
        "regression": dict(regression),
        "item_mae": item_mae,
        "metrics_from": METRICS_FROM,
    }


def evaluation_markdown(ev: Mapping[str, Any]) -> str:
    b, r = ev["binary"], ev["regression"]
    lines = [
        "# Evaluation",
        "",
        f"Sessions scored with labels: {ev['n']} (binary {ev['n_binary']}, totals {ev['n_total']}, "
        f"items {ev['n_items']}); labels without a prediction: {len(ev['missing_predictions'])}.",
        "",
        "| Metric | Value |",
        "|---|---|",
        f"| Precision (total ≥ 10) | {b['precision']:.3f} |",
        f"| Recall | {b['recall']:.3f} |",
        f"| F1 | {b['f1']:.3f} |",
        f"| MAE (total) | {r['mae']:.3f} |",
        f"| RMSE (total) | {r['rmse']:.3f} |",
        f"| CCC (total) | {r['ccc']:.3f} |",
        "",
        "Per-item MAE: "
        + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} –" for k, v in ev["item_mae"].items()),
        "",
        f"Metrics computed by `{ev['metrics_from']}`.",
    ]
    return "\n".join(lines) + "\n"
