"""The "visual-v2" schema: one named visual vector shared by the dataset readers and the live tracker.

Values (:data:`V2_NAMES`, K = 16), in this order:

- ``face_present`` — 1 when one face was tracked (OpenFace/CLNF ``success``), else 0 (always observed)
- ``head_pitch_deg``, ``head_yaw_deg``, ``head_roll_deg`` — degrees; pitch > 0 head down, yaw > 0 face
  turned toward image right, roll > 0 clockwise in the image (OpenFace ``pose_Rx``, ``−pose_Ry``,
  ``pose_Rz`` in degrees)
- ``gaze_yaw_deg``, ``gaze_pitch_deg`` — gaze direction in the camera frame, degrees; > 0 toward image
  right / down (OpenFace ``gaze_angle_x``, ``gaze_angle_y`` in degrees)
- ``eye_open`` — mean eye aspect ratio of both eyes (landmark trackers only)
- ``AU01_r AU02_r AU04_r AU06_r AU12_r AU15_r AU25_r AU26_r AU45_r`` — action-unit intensities with
  OpenFace's names and 0–5 scale (live: geometric estimates, see ``face_v2.py``; not OpenFace's values)

Missing values. The vector a bundle sees is ``values ⊕ mask`` (width 2K): ``mask[j]`` = 1 when value
``j`` was observed, 0 when it was not, and a missing value is 0.0 in the value half. So the model (its
LQ-former input projection) always receives which values are real; a zero never pretends to be data.
A frame without a tracked face (``success = 0``, no face live) has ``face_present`` = 0 observed and every
other value missing. A source that cannot give a column (CLNF has no AU45 intensity, dataset files
have no eye landmarks) leaves it missing in every frame; the bundle records the columns its training
data observed (:func:`observed_columns`), and at serving time live columns outside that set are masked
too (:func:`restrict`), so the model sees the same mask pattern it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mllmdr_core.errors import FeatureSpecError
from mllmdr_core.frames import FloatArray

V2_SPEC = "visual-v2"
V2_AU_NAMES: tuple[str, ...] = tuple(f"AU{n:02d}_r" for n in (1, 2, 4, 6, 12, 15, 25, 26, 45))
V2_NAMES: tuple[str, ...] = (
    "face_present",
    "head_pitch_deg",
    "head_yaw_deg",
    "head_roll_deg",
    "gaze_yaw_deg",
    "gaze_pitch_deg",
    "eye_open",
    *V2_AU_NAMES,
)
V2_K = len(V2_NAMES)
V2_DIM = 2 * V2_K  # values ⊕ mask
V2_IDX = {name: i for i, name in enumerate(V2_NAMES)}


def pack(values: np.ndarray) -> FloatArray:
    """(T, K) values with NaN for missing → (T, 2K) ``values ⊕ mask`` (missing: value 0, mask 0)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != V2_K:
        raise FeatureSpecError(f"{V2_SPEC}: values {v.shape} must be (T, {V2_K})")
    mask = np.isfinite(v)
    out = np.concatenate([np.where(mask, v, 0.0), mask.astype(np.float64)], axis=1)
    return out.astype(np.float32)


def unpack(vectors: np.ndarray) -> np.ndarray:
    """(T, 2K) packed vectors → (T, K) float64 values with NaN where the mask is 0."""
    p = np.asarray(vectors, dtype=np.float64).reshape(-1, V2_DIM)
    return np.where(p[:, V2_K:] > 0.5, p[:, :V2_K], np.nan)


def observed_columns(vectors: np.ndarray) -> tuple[str, ...]:
    """The value names observed in at least one frame of packed ``vectors`` (T, 2K), schema order."""
    p = np.asarray(vectors).reshape(-1, V2_DIM)
    seen = (p[:, V2_K:] > 0.5).any(axis=0)
    return tuple(n for n, s in zip(V2_NAMES, seen, strict=True) if s)


def restrict(vectors: np.ndarray, columns: Iterable[str]) -> FloatArray:
    """Mask every value not in ``columns`` (packed (T, 2K) in, packed out)."""
    keep = set(columns)
    p = np.array(vectors, dtype=np.float32).reshape(-1, V2_DIM)
    drop = [i for i, n in enumerate(V2_NAMES) if n not in keep]
    p[:, drop] = 0.0
    p[:, [V2_K + i for i in drop]] = 0.0
    return p


def check_columns(wanted: Sequence[str], produced: Sequence[str], who: str) -> None:
    """One-line ``FeatureSpecError`` naming the ``wanted`` columns ``who`` does not produce."""
    lacking = [c for c in wanted if c not in produced]
    if lacking:
        raise FeatureSpecError(
            f"visual: bundle was trained on columns {who} does not produce: {', '.join(lacking)}"
        )
