from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import cv2
import numpy as np
import pytest
from skimage import data

from mllmdr_core.config import AudioEncoderConfig, MllmdrConfig, VisualConfig
from mllmdr_core.errors import ConfigError, FeatureSpecError
from mllmdr_core.features.face import (
    _REGISTRY,
    IDX,
    SPEC,
    VISUAL_DIM,
    VISUAL_FEATURE_NAMES,
    FaceTracker,
    face_tracker_specs,
    make_face_tracker,
    register_face_tracker,
    visual_dim,
)
from mllmdr_core.features.face_mediapipe import (
    EYE_L,
    EYE_R,
    POSE_MODEL,
    MediapipeFaceTracker,
    geometry_vector,
    head_pose,
)
from mllmdr_core.features.spec import extractor_spec
from mllmdr_core.frames import FaceObservation
from mllmdr_core.session_state import SessionState


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture()
def tracker() -> Iterator[FaceTracker]:
    ft = make_face_tracker(VisualConfig())
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
        ft = MediapipeFaceTracker(VisualConfig())
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
    ft = MediapipeFaceTracker(VisualConfig())
    ft.close()
    ft.close()
    assert not ft.process(np.zeros((64, 64, 3), np.uint8), 0.0).present
    with pytest.raises(ConfigError):
        MediapipeFaceTracker(VisualConfig(spec="openface-pose-gaze-au-v1"))


# ---- the interface: registry, a second implementation, SessionState uses the configured one


def test_mediapipe_is_the_registered_default() -> None:
    assert face_tracker_specs() == (SPEC, "visual-v2") and SPEC == VisualConfig().spec == "mediapipe-face-v1"
    assert visual_dim(SPEC) == VISUAL_DIM == 19
    ft = make_face_tracker(VisualConfig())
    try:
        assert type(ft) is MediapipeFaceTracker and isinstance(ft, FaceTracker) and ft.spec == SPEC
    finally:
        ft.close()
    with pytest.raises(ConfigError, match="no face tracker produces visual spec 'openface-pose-gaze-au-v1'"):
        make_face_tracker(VisualConfig(spec="openface-pose-gaze-au-v1"))
    with pytest.raises(ConfigError, match="registered: mediapipe-face-v1"):
        visual_dim("nope")


class MeanColourTracker:
    """A second tracker: the frame's mean R, G, B / 255 (3 values), to prove the interface suffices."""

    spec = "mean-colour-v1"
    built: ClassVar[list[MeanColourTracker]] = []

    def __init__(self, cfg: VisualConfig) -> None:
        self.cfg = cfg
        self.closed = 0
        self.times: list[float] = []
        MeanColourTracker.built.append(self)

    def process(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        self.times.append(t_s)
        vec = np.asarray(rgb, dtype=np.float32).reshape(-1, 3).mean(axis=0) / 255.0
        return FaceObservation(t_s=t_s, vector=vec.astype(np.float32), present=True)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture()
def mean_colour() -> Iterator[type[MeanColourTracker]]:
    register_face_tracker(MeanColourTracker.spec, 3, MeanColourTracker)
    MeanColourTracker.built.clear()
    try:
        yield MeanColourTracker
    finally:
        del _REGISTRY[MeanColourTracker.spec]


def test_second_tracker_satisfies_the_interface_and_spec(mean_colour: type[MeanColourTracker]) -> None:
    cfg = VisualConfig(spec="mean-colour-v1")
    ft = make_face_tracker(cfg)
    assert isinstance(ft, mean_colour) and isinstance(ft, FaceTracker)
    obs = ft.process(np.full((4, 4, 3), (255, 0, 51), np.uint8), 0.5)
    assert np.allclose(obs.vector, [1.0, 0.0, 0.2]) and obs.t_s == 0.5
    assert face_tracker_specs() == (SPEC, "visual-v2", "mean-colour-v1")
    mc = MllmdrConfig(audio=AudioEncoderConfig(hubert={"hidden_size": 8}), visual=cfg)
    live = extractor_spec(mc)
    assert (live.visual_spec, live.visual_dim) == ("mean-colour-v1", 3)


def test_session_state_uses_the_configured_tracker(mean_colour: type[MeanColourTracker]) -> None:
    cfg = MllmdrConfig(visual=VisualConfig(spec="mean-colour-v1", analysis_fps=5.0))
    state = SessionState(cfg, session_id="s1")
    for k in range(10):  # 30 fps for 1/3 s → slots 0 and 1 at 5 fps
        state.push_video(np.full((8, 8, 3), 10 * k, np.uint8), k / 30.0)
    _, visual = state.features()
    [ft] = mean_colour.built
    assert ft.times == [0.0, 6 / 30.0]
    assert visual.shape == (2, 3) and np.allclose(visual[:, 0], [0.0, 60 / 255.0])
    assert state.stats["video_frames_analysed"] == 2.0 and state.stats["faces_found"] == 2.0
    # indicators read the mediapipe layout only: not fed, so not available (never 0.0)
    assert np.isnan(state.indicators()["smile_ratio"]) and "smile_ratio" in state.unavailable()
    state.close()
    assert ft.closed == 1  # the state built it, so the state closes it


def test_unregistered_spec_is_refused_live() -> None:
    cfg = MllmdrConfig(audio=AudioEncoderConfig(hubert={"hidden_size": 8}), visual=VisualConfig(spec="x-v1"))
    with pytest.raises(FeatureSpecError, match="face trackers make 'mediapipe-face-v1'"):
        extractor_spec(cfg)
    with pytest.raises(ConfigError, match="no face tracker produces visual spec 'x-v1'"):
        SessionState(cfg, session_id="s1")
