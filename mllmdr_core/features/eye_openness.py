"""A cheap eye-openness pass at the full frame rate, for the blink indicator only.

The face mesh runs at the analysis rate (2.5–5 frames/s), which almost never samples a 150-ms blink.
Between mesh frames this pass looks only at small grey patches around the eyes, placed from the last
mesh frame's eye landmarks (mediapipe indices of ``face_mediapipe.EYE_R/EYE_L``). On a mesh frame whose
eyes are open (mean eye aspect ratio ≥ :data:`OPEN_EAR`) it records, per eye, the grey mean and minimum
of the eye box (centred on the eye's six landmarks, 1.0 × 0.5 eye widths): the minimum is the pupil and
iris. On every frame, per eye, openness = (reference mean − minimum of the search box) / (reference mean
− reference minimum), the search box being 1.6 × 1.0 eye widths (room for the head to move between mesh
frames); the frame's openness is the mean of both eyes: ≈ 1 while the dark iris shows, lower when the
lid covers it (0.6–0.75 mid-blink on the synthetic face). Openness
< :data:`~mllmdr_core.features.indicators.BLINK_OPENNESS` counts as closed. Lighting and face size
cancel in the ratio; a mesh frame without a face pauses the pass until the next face.

It never touches the model's features: the v1 tracker's vectors are unchanged; the openness series
feeds ``IndicatorTracker.add_eye`` only. Cost: two patch crops and grey conversions per frame,
0.2–0.35 ms at 320×240 here (``bench/panel_indicators.py`` measures it per session).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from mllmdr_core.features.face_mediapipe import EYE_L, EYE_R

OPEN_EAR = 0.25  # a mesh frame with mean eye aspect ratio ≥ this sets the open-eye reference
REF_BOX = (1.0, 0.5)  # reference eye box, eye widths (w, h)
SEARCH_BOX = (1.6, 1.0)  # box searched for the darkest pixel on every frame
MIN_PATCH_PX = 4

Box = tuple[float, float, float, float]  # x0, y0, x1, y1, normalised image coordinates


def _ear(p: npt.NDArray[np.float64], idx: tuple[int, ...]) -> float:
    a, b, c, d, e, f = (p[i] for i in idx)
    return float((np.linalg.norm(b - f) + np.linalg.norm(c - e)) / (2.0 * np.linalg.norm(a - d) + 1e-9))


def _boxes(p: npt.NDArray[np.float64], w: int, h: int, size: tuple[float, float]) -> list[Box]:
    """Per eye (right, left), a box of ``size`` eye widths centred on its landmarks (normalised)."""
    out = []
    for eye in (EYE_R, EYE_L):
        pts = p[list(eye)]
        cx, cy = pts.mean(axis=0)
        ew = float(np.linalg.norm(pts[0] - pts[3]))
        bw, bh = size[0] / 2 * ew, size[1] / 2 * ew
        out.append(((cx - bw) / w, (cy - bh) / h, (cx + bw) / w, (cy + bh) / h))
    return out


def _grey(rgb: np.ndarray, box: Box) -> npt.NDArray[np.uint8] | None:
    h, w = rgb.shape[:2]
    a, b = max(0, int(box[0] * w)), min(w, int(np.ceil(box[2] * w)))
    c, d = max(0, int(box[1] * h)), min(h, int(np.ceil(box[3] * h)))
    if b - a < MIN_PATCH_PX or d - c < MIN_PATCH_PX:
        return None
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb[c:d, a:b]), cv2.COLOR_RGB2GRAY))


class EyeOpenness:
    """``reference(rgb, landmarks)`` on mesh frames, ``measure(rgb)`` on every frame → openness or None."""

    def __init__(self) -> None:
        self._search: list[Box] | None = None
        self._ref: list[tuple[float, float]] | None = None  # per eye (mean, min) of the open reference

    def reset(self) -> None:
        self._search = None
        self._ref = None

    def reference(self, rgb: np.ndarray, landmarks: np.ndarray | None) -> None:
        """A mesh frame: its search boxes (``landmarks`` (478, 3) normalised; None = no face: the pass
        pauses until the next face) and, when its eyes are open, the reference per eye."""
        if landmarks is None or not _usable(rgb):
            self._search = None
            return
        h, w = rgb.shape[:2]
        p = np.asarray(landmarks, dtype=np.float64)[:, :2] * np.array([w, h])
        self._search = _boxes(p, w, h, SEARCH_BOX)
        if (_ear(p, EYE_R) + _ear(p, EYE_L)) / 2.0 < OPEN_EAR:
            return
        ref = []
        for box in _boxes(p, w, h, REF_BOX):
            grey = _grey(rgb, box)
            if grey is None or float(grey.mean()) - float(grey.min()) <= 1.0:
                return
            ref.append((float(grey.mean()), float(grey.min())))
        self._ref = ref

    def measure(self, rgb: np.ndarray) -> float | None:
        """Openness of this frame (≈ 1 open, lower as the lid covers the iris), None without a face
        or before the first open-eye reference."""
        if self._ref is None or self._search is None or not _usable(rgb):
            return None
        values = []
        for box, (mean, low) in zip(self._search, self._ref, strict=True):
            grey = _grey(rgb, box)
            if grey is None:
                return None
            values.append((mean - float(grey.min())) / (mean - low))
        return float(np.mean(values))


def _usable(rgb: np.ndarray) -> bool:
    return isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 32
