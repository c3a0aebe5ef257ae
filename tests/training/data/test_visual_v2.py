"""OpenFace/CLNF tables → the "visual-v2" schema: units, signs, success = 0 frames, missing columns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_daic_reader import make_daic
from test_edaic_reader import make_edaic

from mllmdr_core.features.visual_schema import V2_DIM, V2_IDX, V2_K, V2_SPEC, observed_columns, unpack
from training.data import DaicWozReader, EDaicReader
from training.data.visual_v2 import pool_v2


def test_edaic_openface_maps_to_v2_with_no_face_frames_masked(tmp_path: Path) -> None:
    rec = next(r for r in EDaicReader(make_edaic(tmp_path / "e")) if r.session_id == "300")
    table = rec.load_visual_v2()
    assert table is not None and table.spec == V2_SPEC and table.values.shape == (4, V2_DIM)
    v = unpack(table.values)  # (4, K), NaN = missing
    assert v[0, V2_IDX["head_pitch_deg"]] == pytest.approx(math.degrees(0.2), abs=1e-4)
    assert v[0, V2_IDX["head_yaw_deg"]] == pytest.approx(math.degrees(0.1), abs=1e-4)  # −pose_Ry
    assert v[1, V2_IDX["gaze_yaw_deg"]] == pytest.approx(math.degrees(0.05), abs=1e-4)
    assert v[1, V2_IDX["AU12_r"]] == pytest.approx(1.5) and v[3, V2_IDX["AU45_r"]] == pytest.approx(0.75)
    # frame 3 has success = 0: face absent (observed), every other value missing — not zeros
    assert v[2, V2_IDX["face_present"]] == 0.0 and np.isnan(v[2, 1:]).all()
    assert np.isnan(v[:, V2_IDX["eye_open"]]).all() and table.missing == ("eye_open",)
    pooled = unpack(pool_v2(table.times, table.values, 2.0))  # 4 frames at 30 fps → one bin
    assert pooled.shape == (1, V2_K)
    assert pooled[0, V2_IDX["AU45_r"]] == pytest.approx((0.0 + 0.25 + 0.75) / 3)  # the no-face frame is out
    assert pooled[0, V2_IDX["face_present"]] == pytest.approx(0.75) and np.isnan(
        pooled[0, V2_IDX["eye_open"]]
    )


def test_daic_clnf_lacks_au45_and_a_zero_confidence_frame_is_no_face(tmp_path: Path) -> None:
    root = make_daic(tmp_path / "d")
    aus = root / "300_P" / "300_CLNF_AUs.txt"
    lines = aus.read_text().splitlines()
    cells = lines[2].split(", ")
    cells[2] = "0"  # confidence 0 with success 1: not a tracked face
    aus.write_text("\n".join([lines[0], lines[1], ", ".join(cells), *lines[3:]]) + "\n")
    rec = next(r for r in DaicWozReader(root) if r.session_id == "300")
    table = rec.load_visual_v2()
    assert table is not None
    assert set(table.missing) == {"eye_open", "AU45_r"}
    assert "AU45_r" not in observed_columns(table.values) and "AU12_r" in observed_columns(table.values)
    v = unpack(table.values)
    assert v[1, V2_IDX["face_present"]] == 0.0 and np.isnan(v[1, V2_IDX["AU12_r"]])
    assert v[0, V2_IDX["head_roll_deg"]] == pytest.approx(math.degrees(0.05), abs=1e-4)
    assert v[0, V2_IDX["gaze_pitch_deg"]] == pytest.approx(math.degrees(math.atan2(0.2, 0.97)), abs=1e-3)
