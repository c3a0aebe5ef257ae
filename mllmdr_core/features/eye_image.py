"""What the eye-openness pass reads (``eye_openness.py``): an RGB array or a decoded frame's luma plane.

Kept free of OpenCV and mediapipe: ``mllmdr_core.media`` (light SDK install) builds :class:`LumaPlane`
views of decoded frames without importing the face stack.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MIN_PATCH_PX = 4

Box = tuple[float, float, float, float]  # x0, y0, x1, y1, normalised image coordinates


class LumaPlane:
    """A decoded frame's 8-bit luma plane (``y``: (H, W), any stride) for the eye pass: patches are cut
    from it directly; ``full_range`` False maps limited-range luma (16–235) onto 0–255. ``owner`` keeps
    the decoded frame whose buffer ``y`` views alive."""

    def __init__(self, y: npt.NDArray[np.uint8], *, full_range: bool, owner: object = None) -> None:
        self.y = y
        self.full_range = full_range
        self._owner = owner

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    def grey(self, box: Box) -> npt.NDArray[np.float32] | None:
        cut = bounds(self.width, self.height, box)
        if cut is None:
            return None
        patch = self.y[cut[2] : cut[3], cut[0] : cut[1]].astype(np.float32)
        if self.full_range:
            return patch
        return np.clip(np.rint((patch - 16.0) * (255.0 / 219.0)), 0.0, 255.0)


EyeImage = np.ndarray | LumaPlane  # what the pass reads: an (H, W, 3) RGB array or a luma plane


def bounds(w: int, h: int, box: Box) -> tuple[int, int, int, int] | None:
    """Pixel bounds (x0, x1, y0, y1) of ``box`` in a ``w`` × ``h`` image; None when under 4 px a side."""
    a, b = max(0, int(box[0] * w)), min(w, int(np.ceil(box[2] * w)))
    c, d = max(0, int(box[1] * h)), min(h, int(np.ceil(box[3] * h)))
    if b - a < MIN_PATCH_PX or d - c < MIN_PATCH_PX:
        return None
    return a, b, c, d
