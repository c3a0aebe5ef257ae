"""The live "visual-v2" tracker: mediapipe face-mesh landmarks → the schema of ``visual_schema.py``.

It runs :class:`~mllmdr_core.features.face_mediapipe.MediapipeFaceTracker` (same mesh, same face-frame
geometry normalised by the inter-ocular distance D; its "mediapipe-face-v1" vector is left as it is),
takes the head pose from the mesh's 3D landmarks (``face_pose.landmark_pose``: rigid-template Procrustes,
not v1's six-point ``solvePnP``) and maps the geometry onto the shared schema by fixed, documented
formulas. Every mapping is a clipped linear ramp
``AU = 5 · clip((x − x₀) / span, 0, 1)`` on one landmark measure; ``x₀`` and ``span`` were set on the
project's synthetic face (neutral, smile ±1, mouth open, blink; ``training/synth/face.py``) measured
with mediapipe 0.10.21 at 320×240. They are **not** OpenFace's intensities: OpenFace regresses AUs
from appearance (HOG texture: wrinkles, cheek bulge, furrows) on a person-normalised face; a landmark
geometry sees only shape changes, with population constants, so wrinkle-only units (AU06's cheek
bulge, AU04's furrow lines) are estimated from their shape side effects only. No equivalence with
OpenFace is claimed (``docs/features.md``).

- head pose: ``face_pose.landmark_pose`` (degrees; validated against planted poses on the synthetic
  relief head: ``bench/visual_validation.py``)
- gaze: head angle + eye-in-head angle, ``asin(2.4 · iris offset / eye width)`` (eye width ≈ 2.4 ×
  eyeball radius), per axis; OpenFace's gaze angles are camera-frame as well
- ``eye_open``: mean eye aspect ratio (EAR)
- AU01 inner brow raiser: inner-brow height above the inner eye corners / D, x₀ 0.16, span 0.08
- AU02 outer brow raiser: outer-brow height above the outer eye corners / D, x₀ 0.17, span 0.08
- AU04 brow lowerer: inner-brow distance / D below x₀ 0.28, span 0.08
- AU06 cheek raiser: eye narrowing (EAR below 0.30, span 0.12), only while AU12 is active (min of both)
- AU12 lip corner puller: mouth width / D above x₀ 0.72, span 0.12
- AU15 lip corner depressor: lip corners below the upper-lip centre / D (drop vs x₀ −0.02, span 0.06)
- AU25 lips part: inner-lip gap / D above x₀ 0.02, span 0.25
- AU26 jaw drop: lower-lip lower border (landmark 17, carried by the jaw) below the nose tip / D above
  x₀ 0.38, span 0.25 (mediapipe's chin point 152 barely follows a jaw opening: r 0.37 vs 0.99 on the
  planted jaw ramp, ``bench/visual_validation.py``)
- AU45 blink: EAR below x₀ 0.30, span 0.20 (EAR 0.10 → 5)

Blinks are events, counted from a sequence of ``AU45_r`` values by :func:`count_blinks` (hysteresis:
a blink starts at AU45 ≥ 2.5, i.e. EAR < 0.20, and ends when AU45 falls below 1.0, EAR > 0.26); it can
only count blinks the analysed frames catch closed (0.12–0.18-s blinks, measured: 9 of 9 at 10
analysed frames per s, 4 at 5, 2 at 2.5).

No usable face → ``face_present`` 0 and every other value missing (mask 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.features.face import IDX, SPEC
from mllmdr_core.features.face_pose import landmark_pose
from mllmdr_core.features.visual_schema import V2_IDX, V2_K, V2_SPEC, pack
from mllmdr_core.frames import FaceObservation, FloatArray

EYE_WIDTH_PER_RADIUS = 2.4
MOUTH_R, MOUTH_L, LIP_UP = 61, 291, 13
BROW_IN = (55, 285)
BROW_OUT = (70, 300)
EYE_IN = (133, 362)
EYE_OUT = (33, 263)
NOSE_TIP = 1
LIP_LO_BORDER = 17


def _ramp(x: float, x0: float, span: float) -> float:
    return float(5.0 * np.clip((x - x0) / span, 0.0, 1.0))


BLINK_ON, BLINK_OFF = 2.5, 1.0  # AU45 hysteresis of count_blinks


def count_blinks(au45: npt.ArrayLike) -> int:
    """Blink events in a sequence of AU45 values (NaN = no face: ends nothing, starts nothing)."""
    closed, n = False, 0
    for v in np.asarray(au45, dtype=np.float64):
        if np.isnan(v):
            continue
        if not closed and v >= BLINK_ON:
            closed, n = True, n + 1
        elif closed and v < BLINK_OFF:
            closed = False
    return n


def v2_values(
    v1: FloatArray,
    q: npt.NDArray[np.float64] | None,
    pose: tuple[float, float, float] | None = None,
) -> npt.NDArray[np.float64]:
    """A present face's "mediapipe-face-v1" vector, face-frame points (478, 2) / D and head pose
    (pitch, yaw, roll; ``None``: v1's) → (K,) values."""
    out = np.full(V2_K, np.nan)
    out[V2_IDX["face_present"]] = 1.0
    pitch, yaw, roll = pose or tuple(
        float(v1[IDX[n]]) for n in ("head_pitch_deg", "head_yaw_deg", "head_roll_deg")
    )
    out[V2_IDX["head_pitch_deg"]], out[V2_IDX["head_yaw_deg"]], out[V2_IDX["head_roll_deg"]] = (
        pitch,
        yaw,
        roll,
    )
    eye_angle = np.degrees(
        np.arcsin(np.clip(EYE_WIDTH_PER_RADIUS * v1[[IDX["gaze_x"], IDX["gaze_y"]]], -1, 1))
    )
    out[V2_IDX["gaze_yaw_deg"]] = yaw + float(eye_angle[0])
    out[V2_IDX["gaze_pitch_deg"]] = pitch + float(eye_angle[1])
    ear = float((v1[IDX["eye_open_left"]] + v1[IDX["eye_open_right"]]) / 2.0)
    out[V2_IDX["eye_open"]] = ear
    au12 = _ramp(float(v1[IDX["mouth_width"]]), 0.72, 0.12)
    out[V2_IDX["AU12_r"]] = au12
    out[V2_IDX["AU06_r"]] = min(au12, _ramp(-ear, -0.30, 0.12))
    out[V2_IDX["AU04_r"]] = _ramp(-float(v1[IDX["expr_brow_furrow"]]), -0.28, 0.08)
    out[V2_IDX["AU25_r"]] = _ramp(float(v1[IDX["mouth_open"]]), 0.02, 0.25)
    out[V2_IDX["AU45_r"]] = _ramp(-ear, -0.30, 0.20)
    if q is not None:
        brow_in = float(np.mean([q[e][1] - q[b][1] for e, b in zip(EYE_IN, BROW_IN, strict=True)]))
        brow_out = float(np.mean([q[e][1] - q[b][1] for e, b in zip(EYE_OUT, BROW_OUT, strict=True)]))
        out[V2_IDX["AU01_r"]] = _ramp(brow_in, 0.16, 0.08)
        out[V2_IDX["AU02_r"]] = _ramp(brow_out, 0.17, 0.08)
        corner_drop = float((q[MOUTH_R][1] + q[MOUTH_L][1]) / 2.0 - q[LIP_UP][1])
        out[V2_IDX["AU15_r"]] = _ramp(corner_drop, -0.02, 0.06)
        out[V2_IDX["AU26_r"]] = _ramp(float(q[LIP_LO_BORDER][1] - q[NOSE_TIP][1]), 0.38, 0.25)
    return out


def face_frame(lm: np.ndarray, width: int, height: int) -> npt.NDArray[np.float64]:
    """Normalised landmarks (478, 3) → face-frame points (478, 2) / D (as ``face_mediapipe``)."""
    p = np.asarray(lm, dtype=np.float64)[:, :2] * np.array([width, height])
    ex = p[EYE_OUT[1]] - p[EYE_OUT[0]]
    d = float(np.linalg.norm(ex)) + 1e-9
    ux = ex / d
    uy = np.array([-ux[1], ux[0]])
    return np.stack([(p - p[NOSE_TIP]) @ ux, (p - p[NOSE_TIP]) @ uy], axis=1) / d


def absent_v2() -> FloatArray:
    """The packed vector of a frame without a usable face: face_present 0 observed, the rest missing."""
    values = np.full((1, V2_K), np.nan)
    values[0, V2_IDX["face_present"]] = 0.0
    return pack(values)[0]


class VisualV2Tracker:
    """``process(rgb, t_s) → FaceObservation`` whose vector is the packed "visual-v2" (2K,) vector."""

    spec = V2_SPEC

    def __init__(self, cfg: VisualConfig) -> None:
        if cfg.spec != V2_SPEC:
            raise ConfigError(f"VisualV2Tracker produces {V2_SPEC!r}, config asks for {cfg.spec!r}")
        from mllmdr_core.features.face_mediapipe import MediapipeFaceTracker

        self._mesh = MediapipeFaceTracker(dataclasses.replace(cfg, spec=SPEC))

    def process(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        obs = self._mesh.process(rgb, t_s)
        if not obs.present or obs.landmarks is None:
            return FaceObservation(t_s=t_s, vector=absent_v2(), present=False, indicator_vector=obs.vector)
        h, w = rgb.shape[:2]
        lm = np.asarray(obs.landmarks, dtype=np.float64)
        values = v2_values(obs.vector, face_frame(lm, w, h), landmark_pose(lm, w, h))
        vec = pack(values[None, :])[0]
        return FaceObservation(
            t_s=t_s, vector=vec, present=True, landmarks=obs.landmarks, indicator_vector=obs.vector
        )

    def close(self) -> None:
        self._mesh.close()
