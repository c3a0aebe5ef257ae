"""OpenFace 2.x (E-DAIC, CMDC) and CLNF (DAIC-WOZ) tables → the shared "visual-v2" schema.

Column map (``mllmdr_core/features/visual_schema.py`` names ← OpenFace names):

- ``face_present`` ← ``success`` (a frame with ``success`` 0, or a ``confidence`` of 0, is "no face":
  ``face_present`` 0, every other value missing — never averaged in as zeros)
- ``head_pitch_deg`` ← ``pose_Rx``, ``head_yaw_deg`` ← −``pose_Ry``, ``head_roll_deg`` ← ``pose_Rz``
  (radians → degrees; the sign of yaw follows the live tracker: > 0 = face turned toward image right)
- ``gaze_yaw_deg`` ← ``gaze_angle_x``, ``gaze_pitch_deg`` ← ``gaze_angle_y`` (radians → degrees)
- ``AU01_r … AU45_r`` ← the same names (0–5)
- ``eye_open`` ← nothing (the released feature files carry no eye landmarks): always missing

A source column that is absent (CLNF has no AU45 intensity) or NaN is missing in the mask. Per-frame
tables are pooled to the analysis rate by :func:`pool_v2` (mean of the observed values per bin).
"""

from __future__ import annotations

import numpy as np

from mllmdr_core.features.visual_schema import V2_IDX, V2_K, V2_NAMES, V2_SPEC, pack, unpack
from mllmdr_core.frames import FloatArray
from training.data.visual_table import VisualTable

_DIRECT: dict[str, tuple[str, float]] = {
    "head_pitch_deg": ("pose_Rx", float(np.degrees(1.0))),
    "head_yaw_deg": ("pose_Ry", -float(np.degrees(1.0))),
    "head_roll_deg": ("pose_Rz", float(np.degrees(1.0))),
    "gaze_yaw_deg": ("gaze_angle_x", float(np.degrees(1.0))),
    "gaze_pitch_deg": ("gaze_angle_y", float(np.degrees(1.0))),
    **{au: (au, 1.0) for au in V2_NAMES if au.startswith("AU")},
}


def openface_to_v2(table: VisualTable) -> VisualTable:
    """A raw OpenFace/CLNF table (``training/data/openface.py``, NaN where missing) → packed v2 table."""
    col = {n: table.values[:, i].astype(np.float64) for i, n in enumerate(table.names)}
    t = len(table.times)
    values = np.full((t, V2_K), np.nan)  # (T, K)
    success = col.get("success", np.full(t, np.nan))
    conf = col.get("confidence")
    tracked = np.isfinite(success) & (success > 0.5)
    if conf is not None:
        tracked &= ~(np.isfinite(conf) & (conf <= 0.0))
    values[:, V2_IDX["face_present"]] = np.where(np.isfinite(success), tracked.astype(np.float64), np.nan)
    for name, (src, scale) in _DIRECT.items():
        if src in col and src not in table.missing:
            values[:, V2_IDX[name]] = col[src] * scale
    values[~tracked, 1:] = np.nan  # no face: nothing but face_present is observed
    missing = tuple(n for n, seen in zip(V2_NAMES, np.isfinite(values).any(axis=0), strict=True) if not seen)
    return VisualTable(
        spec=V2_SPEC,
        names=tuple(V2_NAMES) + tuple(f"mask:{n}" for n in V2_NAMES),
        times=table.times,
        values=pack(values),
        missing=missing,
        sources=table.sources,
    )


def pool_v2(times: FloatArray, packed: FloatArray, rate_hz: float) -> FloatArray:
    """Packed (T, 2K) frames → packed (T', 2K) at ``rate_hz``: per bin, the mean of observed values."""
    if len(times) == 0:
        return np.zeros((0, 2 * V2_K), dtype=np.float32)
    values = unpack(packed)  # (T, K), NaN = missing
    bins = np.floor(np.asarray(times, dtype=np.float64) * rate_hz).astype(np.int64)
    bins -= bins.min()
    n = int(bins.max()) + 1
    seen = np.isfinite(values)
    sums = np.zeros((n, V2_K))
    counts = np.zeros((n, V2_K))
    np.add.at(sums, bins, np.where(seen, values, 0.0))
    np.add.at(counts, bins, seen.astype(np.float64))
    frames = np.zeros(n)
    np.add.at(frames, bins, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
    return pack(pooled[frames > 0])
