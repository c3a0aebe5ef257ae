"""The "visual-v2" schema: values ⊕ mask, the bundle column check, the live tracker on planted frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mllmdr_core.config import MllmdrConfig, VisualConfig
from mllmdr_core.errors import FeatureSpecError
from mllmdr_core.features.face import make_face_tracker, visual_dim
from mllmdr_core.features.spec import FeatureSpec, ensure_supported, extractor_spec
from mllmdr_core.features.visual_schema import (
    V2_DIM,
    V2_IDX,
    V2_K,
    V2_NAMES,
    V2_SPEC,
    observed_columns,
    pack,
    restrict,
    unpack,
)


def test_pack_keeps_missing_apart_from_zero() -> None:
    values = np.full((2, V2_K), np.nan)
    values[0, V2_IDX["face_present"]] = 1.0
    values[0, V2_IDX["AU12_r"]] = 0.0  # an observed zero
    packed = pack(values)
    assert packed.shape == (2, V2_DIM) == (2, visual_dim(V2_SPEC))
    assert packed[0, V2_K + V2_IDX["AU12_r"]] == 1.0 and packed[0, V2_K + V2_IDX["AU25_r"]] == 0.0
    assert packed[1].sum() == 0.0  # nothing observed: value 0 and mask 0 everywhere
    back = unpack(packed)
    assert back[0, V2_IDX["AU12_r"]] == 0.0 and np.isnan(back[0, V2_IDX["AU25_r"]])
    assert observed_columns(packed) == ("face_present", "AU12_r")
    only = restrict(packed, ["face_present"])
    assert only[0, V2_K + V2_IDX["AU12_r"]] == 0.0 and only[0, V2_K + V2_IDX["face_present"]] == 1.0


def test_live_v2_spec_and_column_check() -> None:
    cfg = MllmdrConfig()
    cfg = dataclasses.replace(cfg, visual=VisualConfig(spec=V2_SPEC))
    live = extractor_spec(cfg)
    assert (live.visual_spec, live.visual_dim) == (V2_SPEC, V2_DIM)
    ensure_supported(dataclasses.replace(live, visual_columns=V2_NAMES[:5]), cfg)
    wants = dataclasses.replace(live, visual_columns=("face_present", "AU07_r", "AU23_r"))
    with pytest.raises(FeatureSpecError) as err:
        ensure_supported(wants, cfg)
    assert str(err.value) == (
        "visual: bundle was trained on columns the live tracker 'visual-v2' does not produce: AU07_r, AU23_r"
    )
    assert FeatureSpec.from_dict({**live.to_dict(), "visual_columns": ["AU12_r"]}).visual_columns == (
        "AU12_r",
    )


def test_live_tracker_estimates_follow_the_planted_face() -> None:
    from training.synth.face import FaceRig, FaceTimeline

    rig = FaceRig(320, 240)
    relief = FaceRig(320, 240, head="relief")  # the plane head's pose is not a true 3D rotation
    tracker = make_face_tracker(VisualConfig(spec=V2_SPEC))

    def measure(head: FaceRig = rig, **planted: float) -> np.ndarray:
        chan = dict(pitch=0.0, yaw=0.0, roll=0.0, blink=0.0, gaze_down=0.0, smile=0.0, mouth_open=0.0)
        chan.update(planted)
        tl = FaceTimeline(times=np.zeros(1), **{k: np.array([v], np.float32) for k, v in chan.items()})
        obs = tracker.process(head.render(tl, 0), 0.0)
        assert obs.present and obs.indicator_vector is not None and obs.vector.shape == (V2_DIM,)
        return unpack(obs.vector[None])[0]

    try:
        neutral, smile, blink = measure(), measure(smile=1.0), measure(blink=1.0)
        upright = measure(relief)
        down, roll = measure(relief, pitch=13.0), measure(relief, roll=10.0)
        assert neutral[V2_IDX["AU12_r"]] < 0.5 < 3.0 < smile[V2_IDX["AU12_r"]]
        assert neutral[V2_IDX["AU45_r"]] == 0.0 and blink[V2_IDX["AU45_r"]] == 5.0
        assert blink[V2_IDX["eye_open"]] < 0.15 < 0.25 < neutral[V2_IDX["eye_open"]]
        pitch = down[V2_IDX["head_pitch_deg"]] - upright[V2_IDX["head_pitch_deg"]]
        assert pitch == pytest.approx(13.0, abs=3.0)  # planted 13° (the photo's own pose is the zero)
        assert roll[V2_IDX["head_roll_deg"]] - upright[V2_IDX["head_roll_deg"]] == pytest.approx(
            10.0, abs=3.0
        )
        absent = tracker.process(np.zeros((240, 320, 3), np.uint8), 0.0)
        assert not absent.present and absent.vector[V2_K + V2_IDX["face_present"]] == 1.0
        assert absent.vector[V2_K + 1 :].sum() == 0.0  # every other value missing
    finally:
        tracker.close()
