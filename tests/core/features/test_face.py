from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from skimage import data

from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.features.face import (
    EYE_L,
    EYE_R,
    IDX,
    POSE_MODEL,
    VISUAL_DIM,
    VISUAL_FEATURE_NAMES,
    FaceTracker,
    geometry_vector,
    head_pose,
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture()
def tracker() -> Iterator[FaceTracker]:
    ft = FaceTracker(VisualConfig())
    yield ft
    ft.close()


def test_astronaut_face_found_with_plausible_pose(tracker: FaceTracker, astronaut: np.ndarray) -> None:
    obs = tracker.process(astronaut, 1.5)
    v = obs.vector
    assert obs.present and obs.t_s == 1.5 and v.shape == (VISUAL_DIM,) and v.dtype == np.float32
    assert obs.landmarks is not None and obs.landmarks.shape == (478, 3)
    assert v[IDX["face_present"]] == 1.0
    for name in ("head_pitch_deg", "head_yaw_deg", "head_roll_deg"):
        assert abs(v[IDX[name]]) < 30.0, name
    assert 0.2 < v[IDX["eye_open_left"]] < 0.45 and 0.2 < v[IDX["eye_open_right"]] < 0.45
    assert v[IDX["blink"]] == 0.0
    assert abs(v[IDX["gaze_x"]]) < 0.15 and abs(v[IDX["gaze_y"]]) < 0.15
    assert 0.5 < v[IDX["mouth_width"]] < 1.0 and 0.5 < v[IDX["expr_jaw_drop"]] < 1.2
    assert v[IDX["smile"]] > 0.0  # she smiles: lip corners above the lip centre
    assert 0.08 < v[IDX["face_scale"]] < 0.2
    assert v[IDX["landmark_motion"]] == 0.0  # first frame


def test_still_image_repeated_has_near_zero_motion(tracker: FaceTracker, astronaut: np.ndarray) -> None:
    obs = [tracker.process(astronaut, i / 5) for i in range(5)]
    motion = [o.vector[IDX["landmark_motion"]] for o in obs[1:]]
    assert max(motion) < 1e-3  # static-image mode: identical frames, identical landmarks
    pitch = [o.vector[IDX["head_pitch_deg"]] for o in obs]
    assert np.ptp(pitch) < 1.0


def test_roll_follows_image_rotation_and_mirror(astronaut: np.ndarray) -> None:
    def pose(img: np.ndarray) -> np.ndarray:
        ft = FaceTracker(VisualConfig())
        try:
            obs = ft.process(np.ascontiguousarray(img), 0.0)
        finally:
            ft.close()
        assert obs.present
        return obs.vector[IDX["head_pitch_deg"] : IDX["head_roll_deg"] + 1]

    base = pose(astronaut)
    rot = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), -15, 1.0), (512, 512))  # clockwise
    assert pose(rot)[2] - base[2] == pytest.approx(15.0, abs=3.0)
    mirrored = pose(astronaut[:, ::-1])
    assert mirrored[2] == pytest.approx(-base[2], abs=2.0)
    assert mirrored[1] == pytest.approx(-base[1], abs=3.0)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 255, np.uint8),
        np.zeros((8, 8, 3), np.uint8),
        np.full((1, 1, 3), 200, np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((480, 640), np.uint8),
        np.zeros((480, 640, 4), np.uint8),
    ],
    ids=["black", "white", "8x8", "1x1", "empty", "gray", "rgba"],
)
def test_unusable_frames_give_absent_vector(tracker: FaceTracker, frame: np.ndarray) -> None:
    obs = tracker.process(frame, 2.0)
    assert not obs.present and obs.landmarks is None
    assert obs.vector.shape == (VISUAL_DIM,) and not obs.vector.any()


def test_two_faces_tiny_face_and_float_frames(tracker: FaceTracker, astronaut: np.ndarray) -> None:
    two = np.ascontiguousarray(np.concatenate([astronaut, astronaut], axis=1))
    assert not tracker.process(two, 0).present
    small = cv2.resize(astronaut, (96, 96))  # face ≈ 30 px < min_face_px
    assert not tracker.process(small, 0.2).present
    assert tracker.process(astronaut.astype(np.float32), 0.4).present  # float 0..255 accepted


def test_blink_from_closed_lids(tracker: FaceTracker, astronaut: np.ndarray) -> None:
    lm = tracker.process(astronaut, 0.0).landmarks
    assert lm is not None
    closed = lm.astype(np.float64).copy()
    for eye in (EYE_R, EYE_L):  # move upper lid points onto the lower lid
        closed[eye[1]], closed[eye[2]] = closed[eye[5]], closed[eye[4]]
    v, _ = geometry_vector(closed, 512, 512)
    assert v[IDX["blink"]] == 1.0 and v[IDX["eye_open_left"]] < 0.05
    v_open, _ = geometry_vector(lm.astype(np.float64), 512, 512)
    assert v_open[IDX["blink"]] == 0.0


@pytest.mark.parametrize("axis,sign", [(0, 1.0), (1, -1.0), (2, 1.0)])
def test_head_pose_recovers_known_rotation(axis: int, sign: float) -> None:
    rv = np.zeros(3)
    rv[axis] = np.deg2rad(12.0)
    rot, _ = cv2.Rodrigues(rv)
    cam = np.array([[640.0, 0, 320], [0, 640, 240], [0, 0, 1]])
    pts = POSE_MODEL @ rot.T + np.array([0.0, 0.0, 600.0])  # (6, 3) camera coordinates
    uv = pts @ cam.T
    angles = head_pose(uv[:, :2] / uv[:, 2:], 640, 480)
    expected = np.zeros(3)
    expected[axis] = sign * 12.0
    assert np.allclose(angles, expected, atol=0.1)


def test_names_close_and_spec() -> None:
    assert len(VISUAL_FEATURE_NAMES) == VISUAL_DIM == len(set(VISUAL_FEATURE_NAMES)) == 19
    ft = FaceTracker(VisualConfig())
    ft.close()
    ft.close()
    assert not ft.process(np.zeros((64, 64, 3), np.uint8), 0.0).present
    with pytest.raises(ConfigError):
        FaceTracker(VisualConfig(spec="openface-pose-gaze-au-v1"))
