"""E-DAIC (AVEC 2019) reader on a small format-exact fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.errors import DatasetError
from training.data import OPENFACE_FEATURE_NAMES, EDaicReader
from training.data.openface import OPENFACE_AU_NAMES
from training.data.wav import write_wav

DETAILED_HEADER = (
    "Participant_ID,PHQ_8NoInterest,PHQ_8Depressed,PHQ_8Sleep,PHQ_8Tired,PHQ_8Appetite,PHQ_8Failure,"
    "PHQ_8Concentrating,PHQ_8Moving,PHQ_8Total"
)
TRANSCRIPT = (
    "Start_Time,End_Time,Text,Confidence\n"
    "5.2,7.9,i'm doing okay,0.93\n"
    '9.0,12.5,"well, not great, honestly",0.81\n'
)


def _openface(path: Path, n: int = 4) -> None:
    cols = ["frame", "timestamp", "confidence", "success"]
    cols += [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    cols += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    cols += list(OPENFACE_AU_NAMES) + [a.replace("_r", "_c") for a in OPENFACE_AU_NAMES] + ["AU28_c"]
    rows = []
    for i in range(n):
        values = {c: 0.0 for c in cols}
        values.update(frame=i + 1, timestamp=i * 0.033, confidence=0.9, success=1.0 if i != 2 else 0.0)
        values.update(gaze_angle_x=0.05 * i, gaze_angle_y=-0.1, pose_Rx=0.2, pose_Ry=-0.1, pose_Rz=0.01)
        values.update(AU12_r=1.5, AU45_r=0.25 * i)
        rows.append(", ".join(f"{values[c]:g}" for c in cols))
    path.write_text(", ".join(cols) + "\n" + "\n".join(rows) + "\n")


def make_edaic(root: Path) -> Path:
    (root / "labels").mkdir(parents=True)
    head = "Participant_ID, Gender, PHQ_Binary, PHQ_Score, PCL-C (PTSD), PTSD Severity\n"
    (root / "labels" / "train_split.csv").write_text(head + '300,male,0,4,0,20\n"301_P",female,1,12,1,45\n')
    (root / "labels" / "dev_split.csv").write_text(head + "302,female,0,1,0,18\n")
    (root / "labels" / "test_split.csv").write_text(head + "600.0,male,1,20,1,60\n")
    (root / "labels" / "Detailed_PHQ8_Labels.csv").write_text(
        DETAILED_HEADER + "\n300,1,0,1,0,1,0,1,0,4\n301,2,2,2,2,1,1,1,1,12\n"
    )
    tone = (0.2 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 180)).astype(np.float32)
    for sid in ("300", "301", "302", "600"):
        folder = root / f"{sid}_P"
        (folder / "features").mkdir(parents=True)
        (folder / f"{sid}_Transcript.csv").write_text(TRANSCRIPT)
        write_wav(folder / f"{sid}_AUDIO.wav", tone)
        _openface(folder / "features" / f"{sid}_OpenFace2.1.0_Pose_gaze_AUs.csv")
    return root


def test_reads_edaic_with_partial_item_labels(tmp_path: Path) -> None:
    records = {r.session_id: r for r in EDaicReader(make_edaic(tmp_path / "e"))}
    assert sorted(records) == ["300", "301", "302", "600"]
    assert records["300"].labels.items is not None and records["300"].labels.items["sleep"] == 1
    assert records["301"].labels.total == 12 and records["301"].labels.binary == 1
    assert records["302"].labels.items is None and records["302"].labels.total == 1  # not in Detailed labels
    assert records["600"].split == "test" and records["600"].labels.binary == 1
    lines = records["301"].transcript
    assert [ln.text for ln in lines] == ["i'm doing okay", "well, not great, honestly"]
    assert all(ln.speaker == "patient" for ln in lines)
    assert lines[1].confidence == pytest.approx(0.81) and lines[1].end_s == pytest.approx(12.5)
    vis = records["300"].load_visual()
    assert vis is not None and vis.missing == ()
    col = {n: vis.values[:, i] for i, n in enumerate(OPENFACE_FEATURE_NAMES)}
    np.testing.assert_allclose(col["gaze_angle_x"], [0.0, 0.05, 0.1, 0.15], atol=1e-6)
    np.testing.assert_allclose(col["AU45_r"], [0.0, 0.25, 0.5, 0.75], atol=1e-6)
    np.testing.assert_allclose(col["success"], [1, 1, 0, 1])
    assert col["pose_Rx"][0] == pytest.approx(0.2) and col["AU12_r"][3] == pytest.approx(1.5)
    assert records["302"].load_audio().shape == (8000,)


def test_edaic_malformed_files(tmp_path: Path) -> None:
    root = make_edaic(tmp_path / "e")
    detailed = root / "labels" / "Detailed_PHQ8_Labels.csv"
    detailed.write_text(DETAILED_HEADER + "\n300,1,0,1,0,1,0,1,0,9\n")
    with pytest.raises(DatasetError, match=r"Detailed_PHQ8_Labels\.csv:2: PHQ_8Total 9 != sum of items 4"):
        list(EDaicReader(root))
    detailed.unlink()
    records = list(EDaicReader(root))
    assert all(r.labels.items is None for r in records)  # items are optional
    (root / "301_P" / "301_Transcript.csv").write_text(TRANSCRIPT + "13.0,14.0,hmm,high\n")
    with pytest.raises(DatasetError, match=r"301_Transcript\.csv:4: Confidence is not a number: 'high'"):
        list(EDaicReader(root))
    of = root / "300_P" / "features" / "300_OpenFace2.1.0_Pose_gaze_AUs.csv"
    text = of.read_text().splitlines()
    of.write_text("\n".join([*text[:3], text[3] + ", 1.0", *text[4:]]) + "\n")
    reader = EDaicReader(root, splits=("train",))
    with pytest.raises(DatasetError, match=r"300_OpenFace2\.1\.0_Pose_gaze_AUs\.csv:4: expected \d+ fields"):
        reader.read_session("300", "train", records[0].labels)  # caught at read time, not at extraction
    kept, skipped = reader.read_all()  # 301's transcript is broken too (above): both skipped, with reasons
    assert kept == [] and [s["session_id"] for s in skipped] == ["300", "301"]
    assert "Pose_gaze_AUs.csv:4: expected" in skipped[0]["reason"] and "Transcript" in skipped[1]["reason"]
    of.write_text("timestamp,frame\n0,1\n")
    with pytest.raises(DatasetError, match=r"Pose_gaze_AUs\.csv:1: not an OpenFace/CLNF header"):
        reader.read_session("300", "train", records[0].labels)
    with pytest.raises(DatasetError, match="unknown E-DAIC split"):
        EDaicReader(root, splits=("validation",))
