"""Read-time checks of OpenFace files (training/data/visual_check.py) on small E-DAIC fixtures: each bad
input gets a message naming the file; the session is kept with the video masked, or skipped with the
reason in the run's summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_edaic_reader import make_edaic

from mllmdr_core.features.visual_schema import V2_IDX, unpack
from training.data import EDaicReader
from training.data.records import SessionRecord
from training.data.visual_check import MASKED


def _csv(root: Path, sid: str = "300") -> Path:
    return root / f"{sid}_P" / "features" / f"{sid}_OpenFace2.1.0_Pose_gaze_AUs.csv"


def _edit(path: Path, column: str, values: list[str] | None = None, rename: str | None = None) -> None:
    """Replace one column's cells (``values``, per row) or its header name (``rename``)."""
    lines = path.read_text().splitlines()
    header = [c.strip() for c in lines[0].split(",")]
    j = header.index(column)
    if rename is not None:
        header[j] = rename
    rows = [line.split(", ") for line in lines[1:]]
    for row, v in zip(rows, values or [], strict=False):
        row[j] = v
    path.write_text("\n".join([", ".join(header), *(", ".join(r) for r in rows)]) + "\n")


def _read(root: Path) -> tuple[dict[str, SessionRecord], list[dict[str, str]]]:
    records, skipped = EDaicReader(root).read_all()
    return {r.session_id: r for r in records}, skipped


def test_renamed_and_missing_columns_are_named_and_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_edaic(tmp_path / "e")
    _edit(_csv(root), "pose_Rx", rename="pose_rx")  # renamed
    _edit(_csv(root), "AU12_r", rename="AU_12")  # renamed beyond recognition: just missing
    records, skipped = _read(root)
    rec = records["300"]
    assert skipped == [] and rec.visual_format == "openface"  # kept: the other columns carry data
    [note] = [n for n in rec.meta["visual_issues"] if "columns missing" in n]
    assert note.startswith("300_OpenFace2.1.0_Pose_gaze_AUs.csv: columns missing:")
    assert "pose_Rx (found 'pose_rx': renamed?)" in note and "AU12_r" in note
    err = capsys.readouterr().err
    assert "session 300 (train): 300_OpenFace2.1.0_Pose_gaze_AUs.csv: columns missing" in err
    table = rec.load_visual_v2()
    assert table is not None
    v = unpack(table.values)
    assert np.isnan(v[:, V2_IDX["head_pitch_deg"]]).all() and np.isnan(v[:, V2_IDX["AU12_r"]]).all()
    assert v[0, V2_IDX["head_roll_deg"]] == pytest.approx(np.degrees(0.01), abs=1e-4)  # still there


@pytest.mark.parametrize(
    ("column", "cells", "message"),
    [
        ("success", ["0", "0", "0", "0"], "success = 0 in every frame (4): " + MASKED),
        ("confidence", ["0", "0", "0", "0"], "confidence = 0 in every frame: " + MASKED),
    ],
)
def test_no_tracked_frame_keeps_the_session_with_video_masked(
    tmp_path: Path, column: str, cells: list[str], message: str
) -> None:
    root = make_edaic(tmp_path / "e")
    _edit(_csv(root), column, cells)
    records, skipped = _read(root)
    rec = records["300"]
    assert skipped == [] and rec.visual_format is None and rec.visual_files == ()  # video masked
    assert any(n.endswith(message) and n.startswith("300_OpenFace") for n in rec.meta["visual_issues"])
    assert records["301"].visual_format == "openface"  # the others untouched


def test_no_success_column_nans_and_a_missing_file(tmp_path: Path) -> None:
    root = make_edaic(tmp_path / "e")
    _edit(_csv(root), "success", rename="tracked")
    _edit(_csv(root, "301"), "AU45_r", ["nan", "0.25", "NaN", "0.75"])
    _csv(root, "302").unlink()  # a session without its video-feature file
    records, skipped = _read(root)
    assert skipped == []
    assert any("no 'success' column" in n and MASKED in n for n in records["300"].meta["visual_issues"])
    assert records["300"].visual_format is None
    rec301 = records["301"]
    assert rec301.meta["visual_issues"] == [
        "301_OpenFace2.1.0_Pose_gaze_AUs.csv: 1 of 4 frames with success = 0 (masked)",
        "301_OpenFace2.1.0_Pose_gaze_AUs.csv: 2 NaN cells in AU45_r (masked)",
    ]
    assert rec301.visual_format == "openface"
    [note] = records["302"].meta["visual_issues"]
    assert note == f"{_csv(root, '302')}: visual-feature file missing: {MASKED}"
    assert records["302"].visual_format is None and records["600"].visual_format == "openface"
