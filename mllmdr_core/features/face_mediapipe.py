"""The mediapipe face tracker: the "mediapipe-face-v1" visual vector (one per analysed frame).

Tracker: mediapipe 0.10.21 ``solutions.face_mesh`` (``refine_landmarks=True``: 478 landmarks with
iris; its model files ship inside the wheel, so it runs offline). It is the last release with the
solutions API and bundled models; newer releases need a downloaded ``.task`` file. It is the first
implementation of the ``FaceTracker`` interface (``features/face.py``), built by ``make_face_tracker``.
It runs in static-image mode (detection on every analysed frame, ~50 ms at 512² here): no tracking
state, so identical frames give identical vectors and replay equals live.

Vector layout: :data:`~mllmdr_core.features.face.VISUAL_FEATURE_NAMES`. Geometry is normalised by
the inter-ocular distance D (outer eye corners 33–263) and measured in the face's own frame (x along
the eye line, y perpendicular, pointing down the face), so it does not depend on image size or
in-plane head roll. Head pose: ``cv2.solvePnP`` of six landmarks (nose tip 1, chin 152, outer eye
corners 33/263, mouth corners 61/291) against a generic 3D face, camera focal length = image width;
pitch > 0 = head tilted down (forehead toward the camera), yaw > 0 = face turned toward image right,
roll > 0 = clockwise in the image. No face, several faces, blank, tiny or malformed frames give the "absent"
vector: all zeros with ``face_present`` = 0 — never an exception.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.features.face import BLINK_EAR, IDX, SPEC, absent_vector
from mllmdr_core.frames import FaceObservation, FloatArray

MIN_FRAME_PX = 32

# landmark indices (mediapipe face mesh); "right" = the subject's right eye (image left)
EYE_R = (33, 160, 158, 133, 153, 144)  # outer, upper×2, inner, lower×2
EYE_L = (263, 387, 385, 362, 380, 373)
IRIS_R, IRIS_L = 468, 473
LIP_UP, LIP_LO, MOUTH_R, MOUTH_L = 13, 14, 61, 291
BROW_R, BROW_L, BROW_R_INNER, BROW_L_INNER = 105, 334, 55, 285
NOSE_TIP, CHIN = 1, 152
POSE_IDX = (NOSE_TIP, CHIN, 33, 263, MOUTH_R, MOUTH_L)
# generic adult 3D face in mm from average anthropometric proportions (pronasale origin; exocanthion
# ±45 mm wide, 37 mm above, 45 mm behind the nose tip; cheilion ±25/30/28; menton 0/72/28), camera
# axes: x image-right, y image-down, z away from the camera
POSE_MODEL = np.array(
    [(0.0, 0.0, 0.0), (0.0, 72.0, 28.0), (-45.0, -37.0, 45.0), (45.0, -37.0, 45.0),
     (-25.0, 30.0, 28.0), (25.0, 30.0, 28.0)],
    dtype=np.float64,
)


def head_pose(points2d: npt.NDArray[np.float64], width: int, height: int) -> tuple[float, float, float]:
    """(pitch, yaw, roll) degrees from the six :data:`POSE_IDX` image points (6, 2) in pixels.

    The iterative PnP starts from a frontal pose at the distance the eye span implies, which keeps it
    out of the mirrored solution six points allow.
    """
    cam = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)
    eye_px = float(np.linalg.norm(points2d[3] - points2d[2])) + 1e-9
    z = width * float(np.linalg.norm(POSE_MODEL[3] - POSE_MODEL[2])) / eye_px
    nose = points2d[0]
    tvec = np.array([[(nose[0] - width / 2) * z / width], [(nose[1] - height / 2) * z / width], [z]])
    ok, rvec, _ = cv2.solvePnP(
        POSE_MODEL, points2d.astype(np.float64), cam, np.zeros(4), np.zeros((3, 1)), tvec,
        useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return 0.0, 0.0, 0.0
    rot, _ = cv2.Rodrigues(rvec)
    ax, ay, az = (float(a) for a in cv2.RQDecomp3x3(rot)[0])  # degrees about camera x, y, z
    return ax, -ay, az  # +x: forehead toward the camera (head down); −y: nose toward image right


def _ear(p: npt.NDArray[np.float64], idx: tuple[int, ...]) -> float:
    """Eye aspect ratio: (|p2−p6| + |p3−p5|) / (2·|p1−p4|)."""
    a, b, c, d, e, f = (p[i] for i in idx)
    return float((np.linalg.norm(b - f) + np.linalg.norm(c - e)) / (2.0 * np.linalg.norm(a - d) + 1e-9))


def geometry_vector(
    lm: npt.NDArray[np.float64], width: int, height: int
) -> tuple[FloatArray, npt.NDArray[np.float64]]:
    """Landmarks (478, 3) normalised → (vector without motion, face-frame points (478, 2) / D)."""
    p = lm[:, :2] * np.array([width, height])  # (478, 2) pixels
    ex = p[EYE_L[0]] - p[EYE_R[0]]  # eye line, image-left → image-right
    d = float(np.linalg.norm(ex)) + 1e-9
    ux = ex / d
    uy = np.array([-ux[1], ux[0]])  # perpendicular, pointing down the face
    q = np.stack([(p - p[NOSE_TIP]) @ ux, (p - p[NOSE_TIP]) @ uy], axis=1) / d  # (478, 2) face frame

    v = absent_vector()
    v[IDX["face_present"]] = 1.0
    v[IDX["head_pitch_deg"] : IDX["head_roll_deg"] + 1] = head_pose(p[list(POSE_IDX)], width, height)
    gx, gy = [], []
    for eye, iris in ((EYE_R, IRIS_R), (EYE_L, IRIS_L)):
        a, b = q[eye[0]], q[eye[3]]
        left, right = (a, b) if a[0] < b[0] else (b, a)
        w = right[0] - left[0] + 1e-9
        centre = (left + right) / 2.0
        gx.append((q[iris][0] - centre[0]) / w)
        gy.append((q[iris][1] - centre[1]) / w)
    v[IDX["gaze_x"]], v[IDX["gaze_y"]] = float(np.mean(gx)), float(np.mean(gy))
    ear_l, ear_r = _ear(q, EYE_L), _ear(q, EYE_R)
    v[IDX["eye_open_left"]], v[IDX["eye_open_right"]] = ear_l, ear_r
    v[IDX["blink"]] = float((ear_l + ear_r) / 2.0 < BLINK_EAR)
    v[IDX["mouth_open"]] = float(np.linalg.norm(q[LIP_UP] - q[LIP_LO]))
    v[IDX["mouth_width"]] = float(np.linalg.norm(q[MOUTH_L] - q[MOUTH_R]))
    lip_centre_y = (q[LIP_UP][1] + q[LIP_LO][1]) / 2.0
    v[IDX["smile"]] = float(lip_centre_y - (q[MOUTH_L][1] + q[MOUTH_R][1]) / 2.0)
    v[IDX["brow_raise_left"]] = float(q[EYE_L[2]][1] - q[BROW_L][1])
    v[IDX["brow_raise_right"]] = float(q[EYE_R[2]][1] - q[BROW_R][1])
    v[IDX["expr_brow_furrow"]] = float(np.linalg.norm(q[BROW_L_INNER] - q[BROW_R_INNER]))
    v[IDX["expr_jaw_drop"]] = float(np.linalg.norm(q[CHIN] - q[NOSE_TIP]))
    v[IDX["expr_mouth_asymmetry"]] = float(q[MOUTH_R][1] - q[MOUTH_L][1])
    v[IDX["face_scale"]] = d / width
    return v, q


class MediapipeFaceTracker:
    """``process(rgb (H, W, 3) uint8, t_s) → FaceObservation``; one mediapipe FaceMesh per tracker."""

    spec = SPEC

    def __init__(self, cfg: VisualConfig) -> None:
        if cfg.spec != SPEC:
            raise ConfigError(f"MediapipeFaceTracker produces {SPEC!r}, config asks for {cfg.spec!r}")
        import mediapipe as mp  # heavy import, only when a tracker is built

        self.cfg = cfg
        self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=2, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )
        self._prev: npt.NDArray[np.float64] | None = None
        self.frames = 0
        self.faces = 0

    def process(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        """One frame ``(H, W, 3)`` (uint8 or float 0–255) → observation; unusable frames give "absent"."""
        self.frames += 1
        lm = self._landmarks(rgb)
        if lm is None:
            self._prev = None
            return FaceObservation(t_s=t_s, vector=absent_vector(), present=False)
        h, w = rgb.shape[:2]
        vec, q = geometry_vector(lm, w, h)
        if self._prev is not None:
            vec[IDX["landmark_motion"]] = float(np.linalg.norm(q - self._prev, axis=1).mean())
        self._prev = q
        self.faces += 1
        return FaceObservation(t_s=t_s, vector=vec, present=True, landmarks=lm.astype(np.float32))

    def _landmarks(self, rgb: np.ndarray) -> npt.NDArray[np.float64] | None:
        """(478, 3) normalised landmarks of the single large-enough face, else None."""
        if self._mesh is None or not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            return None
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_FRAME_PX or not rgb.any():
            return None
        img = np.ascontiguousarray(rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 255).astype(np.uint8))
        try:
            res = self._mesh.process(img)
        except (RuntimeError, ValueError):
            return None
        faces = res.multi_face_landmarks or []
        if len(faces) != 1:
            return None
        lm = np.array([(p.x, p.y, p.z) for p in faces[0].landmark], dtype=np.float64)  # (478, 3)
        if len(lm) < IRIS_L + 5:
            return None
        span = (lm[:, :2].max(axis=0) - lm[:, :2].min(axis=0)) * np.array([w, h])
        return lm if float(span.min()) >= self.cfg.min_face_px else None

    def reset(self) -> None:
        """Ready for a new video stream (the face mesh runs per image; only the motion reference and
        the counters carry over between frames), so a replay can reuse one tracker across recordings."""
        self._prev = None
        self.frames = 0
        self.faces = 0

    def close(self) -> None:
        """Idempotent: releases the mediapipe graph."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None
