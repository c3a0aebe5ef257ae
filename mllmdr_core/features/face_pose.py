"""Head pose of "visual-v2": mediapipe's 3D face-mesh landmarks fitted to a rigid face template.

mediapipe's face mesh gives every landmark a depth (``z``, on the scale of ``x``: image widths), so the
pose is the rotation that best maps a 3D template onto the frame's landmarks (Kabsch / orthogonal
Procrustes, after removing both centroids; mediapipe's mesh is weak-perspective, so no camera model is
needed). Only rigid landmarks take part — 12 mirror pairs (eye corners, temples, forehead, cheekbone
contour) and 10 midline points (forehead, nose bridge and ridge) — so blinks, brows, smiles and lips do
not enter the fit (they move the pose only through mediapipe's own landmark shifts; measured in
``bench/visual_validation.py``).

Template (:data:`TEMPLATE`, × D = outer eye-corner distance): mediapipe 0.10.21's landmarks on a real
upright portrait (``skimage.data.astronaut()``, 512²), mirror-averaged (left = right with x negated,
midline x = 0) and rotated so the left–right axis is the x axis. So yaw 0 and roll 0 are the symmetric
face by construction; pitch 0 is that portrait's own head pitch (a convention: OpenFace's zero is its
own mean shape's frame, and the offset between the two has not been measured). The synthetic face is
rendered from the same photo, so on it the pose at "planted 0" reads the photo's own pitch (0 by this
convention) and its own yaw and roll (not 0: the astronaut's head is turned and tilted a little).

Angles (degrees) from ``cv2.RQDecomp3x3`` of the rotation, in the signs of
``face_mediapipe.head_pose``: pitch > 0 head down, yaw > 0 nose toward image right, roll > 0 clockwise.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

# the subject's right / left landmark of each mirror pair, and the midline landmarks
PAIRS_RIGHT = (33, 133, 234, 93, 127, 162, 21, 54, 103, 67, 109, 116)
PAIRS_LEFT = (263, 362, 454, 323, 356, 389, 251, 284, 332, 297, 338, 345)
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4)
_RIGHT_SIDE = np.array(
    [
        (-0.500, 0.089, -0.036),
        (-0.196, 0.118, -0.091),
        (-0.751, 0.257, 0.566),
        (-0.745, 0.404, 0.587),
        (-0.753, 0.114, 0.501),
        (-0.737, -0.033, 0.376),
        (-0.703, -0.148, 0.224),
        (-0.643, -0.255, 0.082),
        (-0.545, -0.340, -0.061),
        (-0.385, -0.393, -0.188),
        (-0.210, -0.416, -0.261),
        (-0.695, 0.238, 0.113),
    ]
)
_MIDLINE = np.array(
    [
        (0.0, -0.421, -0.281),
        (0.0, -0.269, -0.301),
        (0.0, -0.110, -0.314),
        (0.0, -0.025, -0.294),
        (0.0, 0.054, -0.286),
        (0.0, 0.139, -0.330),
        (0.0, 0.219, -0.380),
        (0.0, 0.294, -0.435),
        (0.0, 0.375, -0.492),
        (0.0, 0.472, -0.512),
    ]
)
TEMPLATE_IDX = np.array(PAIRS_RIGHT + PAIRS_LEFT + MIDLINE)
TEMPLATE = np.concatenate([_RIGHT_SIDE, _RIGHT_SIDE * np.array([-1.0, 1.0, 1.0]), _MIDLINE])  # (34, 3)
_TEMPLATE_C = TEMPLATE - TEMPLATE.mean(axis=0)


def landmark_pose(lm: npt.NDArray[np.float64], width: int, height: int) -> tuple[float, float, float]:
    """(pitch, yaw, roll) degrees from normalised mediapipe landmarks (≥ 468, 3) of one image."""
    p = np.asarray(lm, dtype=np.float64)[TEMPLATE_IDX, :3] * np.array([width, height, width])
    p -= p.mean(axis=0)
    u, _, vt = np.linalg.svd(p.T @ _TEMPLATE_C)  # rotation R with p ≈ s · R · template
    d = float(np.sign(np.linalg.det(u @ vt)))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    ax, ay, az = (float(a) for a in cv2.RQDecomp3x3(rot)[0])
    return ax, -ay, az
