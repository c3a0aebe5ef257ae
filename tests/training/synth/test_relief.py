"""The relief head: identity at zero pose, a consistent backward map, parallax that a plane lacks."""

from __future__ import annotations

import numpy as np
import pytest

from training.synth.face import FaceRig
from training.synth.visual_check import timeline


def test_relief_at_zero_pose_renders_the_plane_frame() -> None:
    tl = timeline(1, smile=0.5, mouth_open=0.3, blink=0.2)
    plane, relief = FaceRig(320, 240), FaceRig(320, 240, head="relief")
    assert np.array_equal(plane.render(tl, 0), relief.render(tl, 0))
    with pytest.raises(ValueError, match="head must be"):
        FaceRig(320, 240, head="sphere")


def test_backward_map_inverts_the_forward_projection() -> None:
    rig = FaceRig(320, 240, head="relief")
    assert rig.relief is not None
    mx, my = rig.relief.maps(10.0, 10.0, 10.0)
    fx, fy = rig.relief.forward(mx.astype(np.float64), my.astype(np.float64), 10.0, 10.0, 10.0)
    v, u = np.mgrid[0:240, 0:320]
    err = np.hypot(fx - u, fy - v)
    assert float(np.median(err)) < 0.1 and float(np.percentile(err, 99)) < 0.5


def test_yaw_moves_the_nose_against_the_eye_corners() -> None:
    """Parallax: turning the head shifts the protruding nose tip more than the eye corners."""
    rig = FaceRig(320, 240, head="relief")
    assert rig.relief is not None
    nx, ny = rig.lm["nose_tip"]
    ex, ey = rig.lm["eye_r_outer"]
    pts_x, pts_y = np.array([nx, ex]), np.array([ny, ey])
    fx, _ = rig.relief.forward(pts_x, pts_y, 0.0, 15.0, 0.0)
    nose_dx, eye_dx = fx - pts_x
    assert nose_dx > 0 and nose_dx - eye_dx > 0.1 * (rig.lm["eye_l_outer"][0] - ex)  # toward image right
