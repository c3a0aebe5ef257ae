"""Delimited-text helpers shared by the readers: tolerant headers, participant ids, label columns."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mllmdr_core.errors import DatasetError
from mllmdr_core.phq8 import ITEM_MAX, PHQ8_ITEMS

_ID_RE = re.compile(r"^(\d+)(?:\.0+)?(?:_P)?$", re.IGNORECASE)


def normalize_id(raw: str, where: str) -> str:
    """``300``, ``"300"``, ``300.0``, ``300_P`` → ``"300"``; ``where`` ("file:line") names bad ids."""
    text = raw.strip().strip('"').strip("'").strip()
    m = _ID_RE.match(text)
    if not m:
        raise DatasetError(f"{where}: participant id {raw!r} is not a number like 300 or 300_P")
    return str(int(m.group(1)))


def norm_header(cell: str) -> str:
    """Header cell → comparison key: ``" PHQ_8NoInterest"`` → ``"phq8nointerest"``."""
    return re.sub(r"[^a-z0-9]", "", cell.lower())


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line number in the file
    cells: dict[str, str]  # normalized header → raw cell (stripped)


def read_rows(
    path: Path, delimiter: str = ",", *, required: tuple[str, ...] = (), quotes: bool = True
) -> Iterator[Row]:
    """Rows of a delimited file with a header; ``required`` normalized header keys must be present."""
    if not path.is_file():
        raise DatasetError(f"{path}: file missing")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(
            fh,
            delimiter=delimiter,
            skipinitialspace=True,
            quoting=csv.QUOTE_MINIMAL if quotes else csv.QUOTE_NONE,
        )
        header = next(reader, None)
        if not header:
            raise DatasetError(f"{path}:1: empty file (no header)")
        keys = [norm_header(c) for c in header]
        missing = [r for r in required if r not in keys]
        if missing:
            raise DatasetError(
                f"{path}:1: header lacks column(s) {missing}; found {[c.strip() for c in header]}"
            )
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(keys):
                raise DatasetError(f"{path}:{line}: expected {len(keys)} fields, found {len(cells)}")
            yield Row(line, {k: c.strip() for k, c in zip(keys, cells, strict=True)})


def int_cell(row: Row, keys: tuple[str, ...], path: Path, *, lo: int, hi: int) -> int | None:
    """The first present column of ``keys`` as an int in [lo, hi]; empty/NA → None."""
    for key in keys:
        if key not in row.cells:
            continue
        raw = row.cells[key]
        if raw == "" or raw.upper() in {"NA", "NAN", "N/A"}:
            return None
        try:
            value = float(raw)
        except ValueError as exc:
            raise DatasetError(f"{path}:{row.line}: column {key} value {raw!r} is not a number") from exc
        if value != int(value) or not lo <= value <= hi:
            raise DatasetError(f"{path}:{row.line}: column {key} value {raw!r} outside {lo}–{hi}")
        return int(value)
    return None


# DAIC-WOZ writes PHQ8_NoInterest, E-DAIC writes PHQ_8NoInterest: both normalize to "phq8nointerest".
ITEM_COLUMN_KEYS: dict[str, str] = {item.key: norm_header(item.dataset_column) for item in PHQ8_ITEMS}
TOTAL_KEYS = ("phq8score", "phqscore", "phq8total", "phqtotal")
BINARY_KEYS = ("phq8binary", "phqbinary")


def item_cells(row: Row, path: Path) -> dict[str, int] | None:
    """Per-item scores when every item column is present and filled, else None."""
    items: dict[str, int] = {}
    for key, col in ITEM_COLUMN_KEYS.items():
        value = int_cell(row, (col,), path, lo=0, hi=ITEM_MAX)
        if value is None:
            return None
        items[key] = value
    return items


def find_file(root: Path, names: tuple[str, ...]) -> Path | None:
    """First existing ``root/name`` or ``root/labels/name``."""
    for name in names:
        for base in (root, root / "labels"):
            if (base / name).is_file():
                return base / name
    return None
