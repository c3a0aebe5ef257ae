"""OpenFace 2 / CLNF per-frame features → the ``openface-pose-gaze-au-v1`` spec.

The spec (23 columns, in this order): head rotation ``pose_Rx, pose_Ry, pose_Rz`` (radians, camera
frame: Rx = pitch, Ry = yaw, Rz = roll), ``gaze_angle_x, gaze_angle_y`` (radians, mean of both eyes),
the 17 OpenFace 2 action-unit intensities ``AU01_r … AU45_r`` (0–5), ``success`` (1 face tracked,
0 not) and ``confidence``. Columns a source lacks are NaN (never 0.0) and listed in
``VisualTable.missing``; NaN cells stay NaN (DAIC-WOZ's
CLNF files have no AU07_r, AU23_r, AU45_r intensities and no gaze angles: the angles are computed from
the world-frame gaze vectors the way OpenFace does, ``atan2(x, -z)`` and ``atan2(y, -z)`` of the mean
of both eyes' unit vectors). This raw table is not a model input: ``training/data/visual_v2.py`` maps
it onto the "visual-v2" schema the live tracker produces too (values ⊕ mask).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mllmdr_core.errors import DatasetError
from mllmdr_core.frames import FloatArray
from training.data.visual_table import VisualTable

OPENFACE_SPEC = "openface-pose-gaze-au-v1"
OPENFACE_AU_NAMES: tuple[str, ...] = tuple(
    f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
)
OPENFACE_FEATURE_NAMES: tuple[str, ...] = (
    "pose_Rx",
    "pose_Ry",
    "pose_Rz",
    "gaze_angle_x",
    "gaze_angle_y",
    *OPENFACE_AU_NAMES,
    "success",
    "confidence",
)


def _read_numeric(path: Path) -> tuple[list[str], np.ndarray]:
    """Header (cells stripped of the leading spaces OpenFace writes) and a float matrix (T, C)."""
    if not path.is_file():
        raise DatasetError(f"{path}: visual feature file missing")
    with path.open(encoding="utf-8-sig") as fh:
        header = [c.strip() for c in fh.readline().strip().split(",")]
        body = fh.read()
    if len(header) < 4 or header[:2] != ["frame", "timestamp"]:
        raise DatasetError(f"{path}:1: not an OpenFace/CLNF header (expected 'frame, timestamp, …')")
    try:  # fast path (numpy's C parser); on failure re-scan line by line to name the bad line
        data = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        data = None
    if data is None or (data.size and data.shape[1] != len(header)):
        _locate_error(path, header, body)
        raise DatasetError(f"{path}: malformed numeric table")
    return header, data.reshape(-1, len(header))  # (T, C)


def _locate_error(path: Path, header: list[str], body: str) -> None:
    for lineno, line in enumerate(body.splitlines(), start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != len(header):
            raise DatasetError(f"{path}:{lineno}: expected {len(header)} fields, found {len(cells)}")
        try:
            [float(c) for c in cells]
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: non-numeric value ({exc})") from exc


def _column(header: list[str], data: np.ndarray, name: str) -> np.ndarray | None:
    return data[:, header.index(name)] if name in header else None


def _to_spec(columns: dict[str, np.ndarray], times: np.ndarray, sources: tuple[Path, ...]) -> VisualTable:
    values = np.full((len(times), len(OPENFACE_FEATURE_NAMES)), np.nan, dtype=np.float32)  # (T, D)
    missing: list[str] = []
    for j, name in enumerate(OPENFACE_FEATURE_NAMES):
        col = columns.get(name)
        if col is None:
            missing.append(name)
        else:
            values[:, j] = col
    values[~np.isfinite(values)] = np.nan  # ±inf counts as missing too
    return VisualTable(
        spec=OPENFACE_SPEC,
        names=OPENFACE_FEATURE_NAMES,
        times=times.astype(np.float32),
        values=values,
        missing=tuple(missing),
        sources=sources,
    )


def read_openface_csv(path: Path) -> VisualTable:
    """An OpenFace 2.x CSV (E-DAIC ``XXX_OpenFace2.1.0_Pose_gaze_AUs.csv``) mapped to the spec."""
    header, data = _read_numeric(path)
    times = _column(header, data, "timestamp")
    assert times is not None
    columns = {n: c for n in OPENFACE_FEATURE_NAMES if (c := _column(header, data, n)) is not None}
    return _to_spec(columns, times, (path,))


def gaze_angles(eye0: np.ndarray, eye1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenFace's gaze angles from two (T, 3) gaze direction vectors."""
    mean = (eye0 + eye1) / 2.0  # (T, 3)
    return np.arctan2(mean[:, 0], -mean[:, 2]), np.arctan2(mean[:, 1], -mean[:, 2])


def read_clnf(pose_path: Path, gaze_path: Path, aus_path: Path) -> VisualTable:
    """DAIC-WOZ ``XXX_CLNF_pose.txt``, ``_gaze.txt`` and ``_AUs.txt`` joined row by row."""
    parts = [_read_numeric(p) for p in (pose_path, gaze_path, aus_path)]
    lengths = {len(d) for _, d in parts}
    if len(lengths) != 1:
        raise DatasetError(
            f"{pose_path.parent}: CLNF files disagree on frame count "
            f"(pose {len(parts[0][1])}, gaze {len(parts[1][1])}, AUs {len(parts[2][1])})"
        )
    (ph, pd), (gh, gd), (ah, ad) = parts
    columns: dict[str, np.ndarray] = {}
    for src, dst in (("Rx", "pose_Rx"), ("Ry", "pose_Ry"), ("Rz", "pose_Rz")):
        col = _column(ph, pd, src)
        if col is None:
            col = _column(ph, pd, dst)
        if col is not None:
            columns[dst] = col
    eye = [[_column(gh, gd, f"{a}_{i}") for a in "xyz"] for i in (0, 1)]
    if all(c is not None for e in eye for c in e):
        e0 = np.stack([c for c in eye[0] if c is not None], axis=1)  # (T, 3)
        e1 = np.stack([c for c in eye[1] if c is not None], axis=1)  # (T, 3)
        columns["gaze_angle_x"], columns["gaze_angle_y"] = gaze_angles(e0, e1)
    for name in OPENFACE_AU_NAMES:
        col = _column(ah, ad, name)
        if col is not None:
            columns[name] = col
    for name in ("success", "confidence"):
        col = _column(ah, ad, name)
        if col is not None:
            columns[name] = col
    times = _column(ah, ad, "timestamp")
    assert times is not None
    return _to_spec(columns, times, (pose_path, gaze_path, aus_path))


def stack_tables(tables: Sequence[VisualTable], offsets: Sequence[float]) -> VisualTable:
    """Concatenate per-question tables, shifting each one's times by its session-clock offset."""
    if not tables:
        raise DatasetError("no visual tables to stack")
    times: FloatArray = np.concatenate([t.times + off for t, off in zip(tables, offsets, strict=True)])
    values: FloatArray = np.concatenate([t.values for t in tables], axis=0)
    missing = tuple(sorted(set().union(*(t.missing for t in tables))))
    return VisualTable(
        spec=OPENFACE_SPEC,
        names=OPENFACE_FEATURE_NAMES,
        times=times.astype(np.float32),
        values=values,
        missing=missing,
        sources=tuple(p for t in tables for p in t.sources),
    )
