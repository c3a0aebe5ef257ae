"""Face tracker behind one interface (like speech-to-text's ``Transcriber``), chosen by the visual spec.

A :class:`FaceTracker` turns one RGB frame into a :class:`FaceObservation` whose vector has the layout
its spec names. :func:`make_face_tracker` builds the tracker registered for ``VisualConfig.spec``;
:func:`register_face_tracker` adds one (a spec name, its vector width, a factory). Registered here:

- ``"mediapipe-face-v1"`` — :class:`~mllmdr_core.features.face_mediapipe.MediapipeFaceTracker`
  (mediapipe face mesh + head pose, 19 values, :data:`VISUAL_FEATURE_NAMES`), imported only when built;
  the live default bundle (``bundles/demo``) is trained on it.
- ``"visual-v2"`` — :class:`~mllmdr_core.features.face_v2.VisualV2Tracker`: the schema shared with the
  dataset readers (``features/visual_schema.py``; 16 values ⊕ their 16-value mask); new bundles use it.
  Its observations also carry the "mediapipe-face-v1" vector (``indicator_vector``) for the panel.

Contract: ``process`` never raises on a bad frame (no face, several faces, blank, tiny or malformed frames
give the "absent" observation, ``present=False``), returns a float32 ``(dim,)`` vector, and ``close`` is
idempotent. Live indicators (``features/indicators.py``) read the "mediapipe-face-v1" layout below, so a
tracker with another layout feeds the feature buffer only.

Vector layout of "mediapipe-face-v1" (D = inter-ocular distance, see ``face_mediapipe.py``; units in
``docs/features.md``): all zeros with ``face_present`` = 0 when absent.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from mllmdr_core.config import VisualConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.features.visual_schema import V2_DIM, V2_SPEC
from mllmdr_core.frames import FaceObservation, FloatArray

SPEC = "mediapipe-face-v1"
VISUAL_FEATURE_NAMES: tuple[str, ...] = (
    "face_present",  # 1 when exactly one face of at least min_face_px was found
    "head_pitch_deg",
    "head_yaw_deg",
    "head_roll_deg",
    "gaze_x",  # iris offset from the eye centre along the eye line / eye width; > 0 toward image right
    "gaze_y",  # same, perpendicular; > 0 looking down
    "eye_open_left",  # eye aspect ratio (subject's left eye)
    "eye_open_right",
    "blink",  # 1 when the mean eye aspect ratio < BLINK_EAR
    "mouth_open",  # inner-lip gap / D
    "mouth_width",  # lip-corner distance / D
    "smile",  # lip-corner raise above the inner-lip centre / D
    "brow_raise_left",  # brow height above the eye / D
    "brow_raise_right",
    "expr_brow_furrow",  # inner-brow distance / D (lower = furrowed)
    "expr_jaw_drop",  # nose-tip to chin / D
    "expr_mouth_asymmetry",  # right minus left lip-corner height / D
    "landmark_motion",  # mean landmark displacement vs the previous analysed frame, in the face frame / D
    "face_scale",  # D / image width
)
VISUAL_DIM = len(VISUAL_FEATURE_NAMES)
IDX = {name: i for i, name in enumerate(VISUAL_FEATURE_NAMES)}
BLINK_EAR = 0.2


@runtime_checkable
class FaceTracker(Protocol):
    """One video stream's face tracker: ``process(rgb (H, W, 3), t_s) → FaceObservation``."""

    spec: str  # the vector layout it produces, e.g. "mediapipe-face-v1"

    def process(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        """One frame at session time ``t_s`` → observation; unusable frames give "absent", never raise."""
        ...

    def close(self) -> None:
        """Idempotent: releases what the tracker holds."""
        ...


@dataclass(frozen=True)
class FaceTrackerEntry:
    """A registered tracker: its vector width and how to build it (``factory`` or ``"module:Class"``)."""

    dim: int
    factory: Callable[[VisualConfig], FaceTracker] | str


_REGISTRY: dict[str, FaceTrackerEntry] = {
    # by name: mediapipe (and cv2) are imported only when a tracker is built
    SPEC: FaceTrackerEntry(VISUAL_DIM, "mllmdr_core.features.face_mediapipe:MediapipeFaceTracker"),
    # the schema shared with the dataset readers (features/visual_schema.py): 16 values ⊕ 16 mask
    V2_SPEC: FaceTrackerEntry(V2_DIM, "mllmdr_core.features.face_v2:VisualV2Tracker"),
}


def register_face_tracker(spec: str, dim: int, factory: Callable[[VisualConfig], FaceTracker] | str) -> None:
    """Make ``VisualConfig(spec=spec)`` build ``factory(cfg)``, whose vectors are ``(dim,)``."""
    _REGISTRY[spec] = FaceTrackerEntry(int(dim), factory)


def face_tracker_specs() -> tuple[str, ...]:
    """The visual specs a live tracker can produce."""
    return tuple(_REGISTRY)


def _entry(spec: str) -> FaceTrackerEntry:
    try:
        return _REGISTRY[spec]
    except KeyError:
        raise ConfigError(
            f"no face tracker produces visual spec {spec!r}; registered: {', '.join(_REGISTRY)}"
        ) from None


def visual_dim(spec: str) -> int:
    """Width of the visual vector of ``spec`` (without building a tracker)."""
    return _entry(spec).dim


def make_face_tracker(cfg: VisualConfig) -> FaceTracker:
    """The tracker registered for ``cfg.spec`` (``ConfigError`` when none is)."""
    factory = _entry(cfg.spec).factory
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = getattr(importlib.import_module(module), name)
    return factory(cfg)


def absent_vector() -> FloatArray:
    """The all-zero ``(VISUAL_DIM,)`` vector of a frame without one usable face (face_present = 0)."""
    return np.zeros(VISUAL_DIM, dtype=np.float32)
