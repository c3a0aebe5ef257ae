"""CMDC reader on a small fixture (PHQ-9 subject table, per-question wav/txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.errors import DatasetError
from training.data import OPENFACE_FEATURE_NAMES, CmdcReader
from training.data.wav import write_wav


def make_cmdc(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "labels.csv").write_text("subject,PHQ-9,split\nHC01,3,train\nMDD01,19,test\n")
    for group, sid, n in (("HC", "HC01", 3), ("MDD", "MDD01", 2)):
        folder = root / group / sid
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            write_wav(folder / f"Q{k}.wav", np.full(16000 * k, 0.1, dtype=np.float32))
            (folder / f"Q{k}.txt").write_text(f"回答 {k}\n", encoding="utf-8")
    return root


def test_reads_subjects_as_question_sessions(tmp_path: Path) -> None:
    records = {r.session_id: r for r in CmdcReader(make_cmdc(tmp_path / "c"))}
    hc, mdd = records["HC01"], records["MDD01"]
    assert (
        hc.labels.scale == "PHQ-9"
        and hc.labels.total == 3
        and hc.labels.binary == 0
        and hc.labels.items is None
    )
    assert mdd.labels.total == 19 and mdd.labels.binary == 1 and mdd.split == "test"
    assert [(ln.speaker, ln.text) for ln in hc.transcript] == [
        ("clinician", "Q1"),
        ("patient", "回答 1"),
        ("clinician", "Q2"),
        ("patient", "回答 2"),
        ("clinician", "Q3"),
        ("patient", "回答 3"),
    ]
    assert [a.start_s for a in hc.audio] == [0.0, 1.0, 3.0]  # answers laid end to end
    assert hc.transcript[5].end_s == pytest.approx(6.0)
    assert hc.load_audio().shape == (16000 * 6,) and hc.audio_path is None and hc.load_visual() is None
    assert [r.session_id for r in CmdcReader(tmp_path / "c", splits=("test",))] == ["MDD01"]


def test_cmdc_errors(tmp_path: Path) -> None:
    root = make_cmdc(tmp_path / "c")
    (root / "HC" / "HC01" / "Q2.txt").unlink()
    with pytest.raises(DatasetError, match=r"Q2\.txt: answer transcript missing"):
        list(CmdcReader(root))
    (root / "questions.txt").write_text("only one question\n")
    with pytest.raises(DatasetError, match=r"questions\.txt: expected 12 questions, found 1"):
        list(CmdcReader(root))
    (root / "questions.txt").unlink()
    (root / "labels.csv").write_text("subject,PHQ-9\nHC01,31\n")
    with pytest.raises(DatasetError, match=r"labels\.csv:2: column phq9 value '31' outside 0–27"):
        list(CmdcReader(root))
    (root / "labels.csv").unlink()
    with pytest.raises(DatasetError, match="no subject table"):
        list(CmdcReader(root))


def test_cmdc_per_question_openface_is_stacked_on_the_session_clock(tmp_path: Path) -> None:
    root = make_cmdc(tmp_path / "c")
    head = ", ".join(["frame", "timestamp", "confidence", "success", "pose_Rx", "AU12_r"])
    for k in (1, 2, 3):
        rows = "\n".join(f"{i + 1}, {i * 0.5:g}, 0.9, 1, {0.1 * k:g}, {k:g}" for i in range(2))
        (root / "HC" / "HC01" / f"Q{k}.csv").write_text(head + "\n" + rows + "\n")
    hc = next(r for r in CmdcReader(root) if r.session_id == "HC01")
    vis = hc.load_visual()
    assert vis is not None and vis.values.shape == (6, len(OPENFACE_FEATURE_NAMES))
    assert np.isnan(vis.values[:, vis.names.index("gaze_angle_x")]).all()  # missing: NaN, never 0.0
    np.testing.assert_allclose(vis.times, [0.0, 0.5, 1.0, 1.5, 3.0, 3.5])  # answers start at 0, 1 and 3 s
    np.testing.assert_allclose(vis.values[:, vis.names.index("AU12_r")], [1, 1, 2, 2, 3, 3])
    assert "gaze_angle_x" in vis.missing and "pose_Rx" not in vis.missing
    (root / "HC" / "HC01" / "Q3.csv").unlink()
    with pytest.raises(DatasetError, match="OpenFace CSVs for 2 of 3 answers"):
        list(CmdcReader(root))
