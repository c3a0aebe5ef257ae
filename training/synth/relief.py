"""A 3D head relief for the synthetic face: the photo's pixels on a depth surface, rotated in 3D.

Depth (pixels, away from the camera) is an elliptic paraboloid head (half-width 0.85 D, half-height
1.3 D; 0.75 D deep at its side rim, 0.45 D at its top and bottom; D = outer eye-corner distance in
the image) plus a nose ridge (0.30 D high at the tip), constant beyond the rim. The depths follow
mediapipe's own 3D landmarks on the unwarped photo (behind the nose tip: cheek contour 1.05 D, chin
0.50 D, eye corners 0.45 D, forehead 0.20 D), i.e. a real face's proportions, not the planted poses.

Each pixel is unprojected at its depth (camera focal length = image width, nose tip at distance f),
rotated about the head centre (1.1 D behind the nose tip) by roll · yaw · pitch (the plane model's
order; pitch > 0 = head down, yaw > 0 = nose toward image right, the tracker's convention; roll > 0 =
clockwise), shifted down by 0.9 px per degree of pitch (the head drops as it bows, as in the plane
model) and projected. The backward map is found by fixed-point iteration of the forward one (the
relief is smooth and the angles small: at ±15° the forward map of the result is within 0.1 px of the
target pixel at the median, 0.5 px at the 99th percentile). Occlusion is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
ITERATIONS = 4
DEPTH_X_D, DEPTH_Y_D = 0.75, 0.45  # paraboloid depth at the rim across / along the face, × D


def _rotation(pitch: float, yaw: float, roll: float) -> npt.NDArray[np.float64]:
    """roll · yaw · pitch (degrees) in camera axes (x image-right, y image-down, z away)."""
    p, yw, r = np.radians([pitch, -yaw, roll])  # −yaw: a positive yaw brings the nose to image right
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(yw), 0, np.sin(yw)], [0, 1, 0], [-np.sin(yw), 0, np.cos(yw)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return np.asarray(rz @ ry @ rx, dtype=np.float64)


@dataclass(frozen=True)
class Relief:
    """Depth surface + pivot of one rendered face; :meth:`maps` gives ``cv2.remap`` maps for a pose."""

    depth: npt.NDArray[np.float64]  # (H, W) pixels, nose tip 0
    centre: tuple[float, float]  # nose tip (x, y), the projection centre
    pivot_z: float  # head-centre depth behind the nose tip, pixels
    focal: float
    drop_px_per_deg: float
    _last: tuple[tuple[float, float, float], tuple[F32, F32]] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def for_face(cls, lm: dict[str, tuple[float, float]], width: int, height: int) -> Relief:
        """The relief of a face with landmarks ``lm`` (pixels; ``training.synth.face.LANDMARKS`` keys)."""
        (rx, ry), (lx, ly) = lm["eye_r_outer"], lm["eye_l_outer"]
        d = float(np.hypot(lx - rx, ly - ry))
        nx, ny = lm["nose_tip"]
        eye_y = (lm["eye_l_outer"][1] + lm["eye_r_outer"][1]) / 2.0
        gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
        hx, hy = nx, ny - 0.25 * d  # head centre in the image
        u2, v2 = ((gx - hx) / (0.85 * d)) ** 2, ((gy - hy) / (1.3 * d)) ** 2
        rim = np.maximum(u2 + v2, 1.0)  # beyond the rim: the rim's depth in that direction
        head = d * (DEPTH_X_D * u2 + DEPTH_Y_D * v2) / rim
        # nose ridge from between the eyes (0.1 D high) to the tip (0.30 D), 0.12 D wide
        t = np.clip((gy - eye_y) / max(ny - eye_y, 1.0), 0.0, 1.15)
        ridge_h = np.where(gy <= ny, 0.10 + 0.20 * t, 0.30 * np.clip(1.0 - (gy - ny) / (0.15 * d), 0.0, 1.0))
        nose = d * ridge_h * np.exp(-((gx - nx) ** 2) / (2 * (0.12 * d) ** 2)) * (gy >= eye_y - 0.1 * d)
        depth = head - nose
        depth -= float(depth.min())
        scale = width / 260.0  # the rig's px per photo px (CROP is 260 wide)
        return cls(depth, (float(nx), float(ny)), 1.1 * d, float(width), 0.9 * scale)

    def _forward(
        self,
        x: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        rot: npt.NDArray[np.float64],
        shift: float,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Source pixels → where the rotated head images them."""
        h, w = self.depth.shape
        xi = np.clip(np.rint(x).astype(np.int64), 0, w - 1)
        yi = np.clip(np.rint(y).astype(np.int64), 0, h - 1)
        z0 = self.focal + self.depth[yi, xi]
        cx, cy = self.centre
        pts = np.stack(
            [(x - cx) * z0 / self.focal, (y - cy) * z0 / self.focal, z0 - self.focal - self.pivot_z]
        )
        q = np.tensordot(rot, pts, axes=1)
        zq = q[2] + self.focal + self.pivot_z
        return cx + self.focal * q[0] / zq, cy + self.focal * q[1] / zq + shift

    def maps(self, pitch: float, yaw: float, roll: float) -> tuple[F32, F32]:
        """Backward maps (destination pixel → source pixel) for a head pose in degrees (the last
        pose's maps are kept: a sequence at a fixed pose computes them once)."""
        key = (pitch, yaw, roll)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        maps = self._maps(pitch, yaw, roll)
        object.__setattr__(self, "_last", (key, maps))
        return maps

    def forward(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], pitch: float, yaw: float, roll: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Source pixels → where the head at this pose (degrees) images them."""
        return self._forward(x, y, _rotation(pitch, yaw, roll), self.drop_px_per_deg * pitch)

    def _maps(self, pitch: float, yaw: float, roll: float) -> tuple[F32, F32]:
        rot = _rotation(pitch, yaw, roll)
        h, w = self.depth.shape
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        x, y = u.copy(), v.copy()
        shift = self.drop_px_per_deg * pitch
        for _ in range(ITERATIONS):
            fx, fy = self._forward(x, y, rot, shift)
            x += u - fx
            y += v - fy
        return x.astype(np.float32), y.astype(np.float32)
