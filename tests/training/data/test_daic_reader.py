"""DAIC-WOZ reader on a small format-exact fixture (generated audio, a handful of rows)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.errors import DatasetError
from mllmdr_core.features.visual_schema import V2_SPEC
from training.data import OPENFACE_FEATURE_NAMES, OPENFACE_SPEC, DaicWozReader
from training.data.wav import write_wav

ITEM_HEADER = ",".join(
    f"PHQ8_{c}"
    for c in ("NoInterest", "Depressed", "Sleep", "Tired", "Appetite", "Failure", "Concentrating", "Moving")
)
TRANSCRIPT = (
    "start_time\tstop_time\tspeaker\tvalue\n"
    "36.588\t39.868\tEllie\thi i'm ellie thanks for coming in today\n"
    "40.100\t41.000\tParticipant\tokay\n"
    "41.5\t43.2\tEllie\thow easy is it for you to get a good night's sleep\n"
    '43.9\t47.25\tParticipant\tnot easy <laughter> i wake up at "four"\n'
    "47.3\t47.9\tParticipant\t\n"
)


def _clnf(path: Path, columns: list[str], rows: list[list[float]]) -> None:
    head = ", ".join(["frame", "timestamp", "confidence", "success", *columns])
    body = "\n".join(", ".join(f"{v:g}" for v in row) for row in rows)
    path.write_text(head + "\n" + body + "\n")


def make_daic(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_split_Depression_AVEC2017.csv").write_text(
        f"Participant_ID,PHQ8_Binary,PHQ8_Score,Gender,{ITEM_HEADER}\n300,0,2,1,0,1,0,1,0,0,0,0\n"
        f"301,1,13,0,2,2,1,2,2,1,2,1\n"
    )
    (root / "dev_split_Depression_AVEC2017.csv").write_text(
        f"Participant_ID,PHQ8_Binary,PHQ8_Score,Gender,{ITEM_HEADER}\n302_P,1,10,1,,,,,,,,\n"
    )
    (root / "test_split_Depression_AVEC2017.csv").write_text("participant_ID,Gender\n303,1\n")
    (root / "full_test_split.csv").write_text("Participant_ID,PHQ_Binary,PHQ_Score,Gender\n303,1,17,1\n")
    rate = 16000
    t = np.arange(2 * rate) / rate
    tone = (0.3 * np.sin(2 * math.pi * 220 * t)).astype(np.float32)
    for sid in ("300", "301", "302", "303"):
        folder = root / f"{sid}_P"
        folder.mkdir(exist_ok=True)
        (folder / f"{sid}_TRANSCRIPT.csv").write_text(TRANSCRIPT)
        write_wav(folder / f"{sid}_AUDIO.wav", tone, rate)
    folder = root / "300_P"
    frames = [[i + 1, i / 30, 0.98, 1] for i in range(3)]
    _clnf(
        folder / "300_CLNF_pose.txt",
        ["Tx", "Ty", "Tz", "Rx", "Ry", "Rz"],
        [[*f, 1, 2, 500, 0.1, -0.2, 0.05] for f in frames],
    )
    gaze = ["x_0", "y_0", "z_0", "x_1", "y_1", "z_1", "x_h0", "y_h0", "z_h0", "x_h1", "y_h1", "z_h1"]
    _clnf(
        folder / "300_CLNF_gaze.txt",
        gaze,
        [f + [0.1, 0.2, -0.97, 0.1, 0.2, -0.97] + [0.0] * 6 for f in frames],
    )
    aus = [
        "AU01_r",
        "AU02_r",
        "AU04_r",
        "AU05_r",
        "AU06_r",
        "AU09_r",
        "AU10_r",
        "AU12_r",
        "AU14_r",
        "AU15_r",
        "AU17_r",
        "AU20_r",
        "AU25_r",
        "AU26_r",
        "AU04_c",
        "AU12_c",
        "AU15_c",
        "AU23_c",
        "AU28_c",
        "AU45_c",
    ]
    _clnf(folder / "300_CLNF_AUs.txt", aus, [f + [0.5] * 7 + [2.5] + [0.0] * 12 for f in frames])
    return root


def test_reads_splits_labels_transcript_audio_and_clnf(tmp_path: Path) -> None:
    records = {r.session_id: r for r in DaicWozReader(make_daic(tmp_path / "daic"))}
    assert sorted(records) == ["300", "301", "302", "303"]
    r300, r301, r302, r303 = (records[k] for k in ("300", "301", "302", "303"))
    assert (r300.split, r302.split, r303.split) == ("train", "dev", "test")
    assert r300.labels.total == 2 and r300.labels.binary == 0
    assert r301.labels.items == {
        "interest": 2,
        "mood": 2,
        "sleep": 1,
        "tired": 2,
        "appetite": 2,
        "failure": 1,
        "concentration": 2,
        "psychomotor": 1,
    }
    assert r302.labels.items is None and r302.labels.total == 10 and r302.labels.binary == 1
    assert r303.labels.total == 17 and r303.labels.binary == 1  # from full_test_split.csv

    lines = r300.transcript
    assert [ln.speaker for ln in lines] == [
        "clinician",
        "patient",
        "clinician",
        "patient",
    ]  # empty line dropped
    assert lines[0].start_s == pytest.approx(36.588) and lines[0].end_s == pytest.approx(39.868)
    # quotes kept verbatim (QUOTE_NONE); the non-verbal tag in its one cue form
    assert lines[3].text == 'not easy [laughter] i wake up at "four"'
    assert all(ln.source == "dataset" for ln in lines)

    audio = r300.load_audio()
    assert audio.dtype == np.float32 and audio.shape == (32000,)
    assert float(np.abs(audio).max()) == pytest.approx(0.3, abs=1e-3)
    assert r300.audio_path == tmp_path / "daic" / "300_P" / "300_AUDIO.wav"

    vis = r300.load_visual()
    assert vis is not None and vis.spec == OPENFACE_SPEC and r300.visual_spec == V2_SPEC
    assert vis.values.shape == (3, len(OPENFACE_FEATURE_NAMES))
    col = {n: vis.values[:, i] for i, n in enumerate(vis.names)}
    assert col["pose_Rx"][0] == pytest.approx(0.1) and col["pose_Rz"][0] == pytest.approx(0.05)
    assert col["gaze_angle_x"][0] == pytest.approx(math.atan2(0.1, 0.97), abs=1e-6)
    assert col["gaze_angle_y"][0] == pytest.approx(math.atan2(0.2, 0.97), abs=1e-6)
    assert col["AU12_r"][1] == pytest.approx(2.5) and col["success"][2] == 1.0
    assert set(vis.missing) == {"AU07_r", "AU23_r", "AU45_r"}
    assert vis.times[1] == pytest.approx(1 / 30)
    assert r301.load_visual() is None and r301.video_path is None


def _expect(root: Path, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        list(DaicWozReader(root))


def test_malformed_transcript_names_file_and_line(tmp_path: Path) -> None:
    root = make_daic(tmp_path / "d")
    path = root / "301_P" / "301_TRANSCRIPT.csv"
    path.write_text(TRANSCRIPT.replace("Participant\tokay", "Interviewer\tokay"))
    _expect(root, r"301_TRANSCRIPT\.csv:3: unknown speaker 'Interviewer'")
    path.write_text(TRANSCRIPT.replace("41.5\t43.2", "41.5\tlate"))
    _expect(root, r"301_TRANSCRIPT\.csv:4: stop_time is not a number: 'late'")
    path.write_text(TRANSCRIPT.replace("41.5\t43.2", "45.0\t43.2"))
    _expect(root, r"301_TRANSCRIPT\.csv:4: stop_time 43.2 before start_time 45.0")
    path.write_text(TRANSCRIPT.replace("40.100\t41.000\t", "40.100\t"))
    _expect(root, r"301_TRANSCRIPT\.csv:3: expected 4 fields, found 3")
    path.write_text("start\tstop\twho\ttext\n")
    _expect(root, r"301_TRANSCRIPT\.csv:1: header lacks column")


def test_missing_and_bad_label_files(tmp_path: Path) -> None:
    root = make_daic(tmp_path / "d")
    split = root / "train_split_Depression_AVEC2017.csv"
    good = split.read_text()
    split.write_text(good.replace("301,1,13,0,2,", "301,1,13,0,7,"))
    _expect(root, r"train_split_Depression_AVEC2017\.csv:3: column phq8nointerest value '7' outside 0–3")
    split.write_text(good.replace("301,", "P301x,"))
    _expect(root, r"train_split_Depression_AVEC2017\.csv:3: participant id 'P301x'")
    split.write_text(good)
    (root / "302_P" / "302_AUDIO.wav").unlink()
    _expect(root, r"302_AUDIO\.wav: audio file missing")
    (root / "dev_split_Depression_AVEC2017.csv").unlink()
    _expect(root, r"dev_split_Depression_AVEC2017\.csv: split file missing")


def test_malformed_clnf_and_wav(tmp_path: Path) -> None:
    root = make_daic(tmp_path / "d")
    rec = next(iter(DaicWozReader(root, splits=("train",))))
    aus = root / "300_P" / "300_CLNF_AUs.txt"
    lines = aus.read_text().splitlines()
    lines[2] = lines[2].replace("2.5", "oops", 1)
    aus.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"300_CLNF_AUs\.txt:3: non-numeric value"):
        rec.load_visual()
    aus.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DatasetError, match="disagree on frame count"):
        rec.load_visual()
    (root / "300_P" / "300_CLNF_gaze.txt").unlink()
    with pytest.raises(DatasetError, match=r"incomplete CLNF features, missing \['300_CLNF_gaze\.txt'\]"):
        list(DaicWozReader(root, splits=("train",)))
    (root / "301_P" / "301_AUDIO.wav").write_bytes(b"RIFF not really")
    rec301 = DaicWozReader(root).read_session("301", "train", rec.labels)
    with pytest.raises(DatasetError, match=r"301_AUDIO\.wav: not a readable PCM WAV"):
        rec301.load_audio()
