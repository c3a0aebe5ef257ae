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

The pass reads an :data:`EyeImage`: an (H, W, 3) RGB array (patches converted with
``cv2.COLOR_RGB2GRAY``) or a :class:`LumaPlane`, a decoded YUV frame's own luma plane, read only inside
the boxes. The ingest and replay hand it the luma plane of every frame, the mesh frames' included, so
a thinned-out frame is never converted to RGB at all (that conversion cost ~4× the pass itself) and
reference and measurement share one grey scale (limited-range luma is mapped to 0–255, the scale of
the RGB route; the ratio would not change anyway).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from mllmdr_core.features.eye_image import Box, EyeImage, LumaPlane, bounds
from mllmdr_core.features.face_mediapipe import EYE_L, EYE_R

OPEN_EAR = 0.25  # a mesh frame with mean eye aspect ratio ≥ this sets the open-eye reference
REF_BOX = (1.0, 0.5)  # reference eye box, eye widths (w, h)
SEARCH_BOX = (1.6, 1.0)  # box searched for the darkest pixel on every frame


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


def _grey(image: EyeImage, box: Box) -> np.ndarray | None:
    if isinstance(image, LumaPlane):
        return image.grey(box)
    h, w = image.shape[:2]
    cut = bounds(w, h, box)
    if cut is None:
        return None
    a, b, c, d = cut
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(image[c:d, a:b]), cv2.COLOR_RGB2GRAY))


def _size(image: EyeImage) -> tuple[int, int]:
    """(width, height) of ``image``."""
    if isinstance(image, LumaPlane):
        return image.width, image.height
    return int(image.shape[1]), int(image.shape[0])


class EyeOpenness:
    """``reference(image, landmarks)`` on mesh frames, ``measure(image)`` on every frame → openness or
    None (``image``: an :data:`EyeImage`; give both the same kind within a session)."""

    def __init__(self) -> None:
        self._search: list[Box] | None = None
        self._ref: list[tuple[float, float]] | None = None  # per eye (mean, min) of the open reference

    def reset(self) -> None:
        self._search = None
        self._ref = None

    def reference(self, image: EyeImage, landmarks: np.ndarray | None) -> None:
        """A mesh frame: its search boxes (``landmarks`` (478, 3) normalised; None = no face: the pass
        pauses until the next face) and, when its eyes are open, the reference per eye."""
        if landmarks is None or not _usable(image):
            self._search = None
            return
        w, h = _size(image)
        p = np.asarray(landmarks, dtype=np.float64)[:, :2] * np.array([w, h])
        self._search = _boxes(p, w, h, SEARCH_BOX)
        if (_ear(p, EYE_R) + _ear(p, EYE_L)) / 2.0 < OPEN_EAR:
            return
        ref = []
        for box in _boxes(p, w, h, REF_BOX):
            grey = _grey(image, box)
            if grey is None or float(grey.mean()) - float(grey.min()) <= 1.0:
                return
            ref.append((float(grey.mean()), float(grey.min())))
        self._ref = ref

    def measure(self, image: EyeImage) -> float | None:
        """Openness of this frame (≈ 1 open, lower as the lid covers the iris), None without a face
        or before the first open-eye reference."""
        if self._ref is None or self._search is None or not _usable(image):
            return None
        values = []
        for box, (mean, low) in zip(self._search, self._ref, strict=True):
            grey = _grey(image, box)
            if grey is None:
                return None
            values.append((mean - float(grey.min())) / (mean - low))
        return float(np.mean(values))


def _usable(image: EyeImage) -> bool:
    if isinstance(image, LumaPlane):
        return min(image.width, image.height) >= 32
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        return False
    return bool(image.shape[2] == 3 and min(image.shape[:2]) >= 32)
