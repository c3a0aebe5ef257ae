"""E-DAIC (AVEC 2019, "Extended DAIC") reader.

Layout under ``root`` (label files may also sit in ``root/labels/``)::

    {train,dev,test}_split.csv   Participant_ID, Gender, PHQ_Binary, PHQ_Score, PCL-C (PTSD), PTSD Severity
    Detailed_PHQ8_Labels.csv     Participant_ID, PHQ_8NoInterest … PHQ_8Moving, PHQ_8Total (not every session)
    300_P/300_AUDIO.wav          16 kHz mono
    300_P/300_Transcript.csv     Start_Time, End_Time, Text, Confidence (participant, ASR)
    300_P/features/300_OpenFace2.1.0_Pose_gaze_AUs.csv   OpenFace 2.1 output, header cells separated by ", "
"""

from __future__ import annotations

from mllmdr_core.errors import DatasetError
from mllmdr_core.phq8 import TOTAL_MAX
from mllmdr_core.transcripts import read_transcript
from training.data.daic import labels_from_row
from training.data.records import AudioRef, PHQLabels, SessionRecord
from training.data.split_reader import SplitFileReader
from training.data.tables import find_file, int_cell, item_cells, normalize_id, read_rows
from training.data.visual_check import checked

SPLIT_FILES = {"train": "train_split.csv", "dev": "dev_split.csv", "test": "test_split.csv"}
DETAILED_FILE = "Detailed_PHQ8_Labels.csv"


class EDaicReader(SplitFileReader):
    """Iterate E-DAIC sessions; per-item labels come from Detailed_PHQ8_Labels.csv where listed."""

    dataset = "e-daic"
    title = "E-DAIC"
    split_files = SPLIT_FILES

    def detailed_items(self) -> dict[str, dict[str, int]]:
        """Session id → item scores from Detailed_PHQ8_Labels.csv ({} when the file is absent)."""
        path = find_file(self.root, (DETAILED_FILE,))
        if path is None:
            return {}
        out: dict[str, dict[str, int]] = {}
        for row in read_rows(path, required=("participantid",)):
            sid = normalize_id(row.cells["participantid"], f"{path}:{row.line}")
            items = item_cells(row, path)
            if items is None:
                continue
            total = int_cell(row, ("phq8total",), path, lo=0, hi=TOTAL_MAX)
            if total is not None and total != sum(items.values()):
                raise DatasetError(
                    f"{path}:{row.line}: PHQ_8Total {total} != sum of items {sum(items.values())}"
                )
            out[sid] = items
        return out

    def split_ids(self) -> list[tuple[str, str, PHQLabels]]:
        """(split, session id, labels); Detailed_PHQ8_Labels.csv item scores win over the split file's."""
        items = self.detailed_items()
        out: list[tuple[str, str, PHQLabels]] = []
        for split, sid, row, path in self.split_rows():
            base = labels_from_row(row, path)
            labels = PHQLabels.build(total=base.total, binary=base.binary, items=items.get(sid, base.items))
            out.append((split, sid, labels))
        return out

    def read_session(self, sid: str, split: str, labels: PHQLabels) -> SessionRecord:
        folder, audio = self.session_paths(sid, split)
        transcript = read_transcript(folder / f"{sid}_Transcript.csv", "edaic")
        openface = folder / "features" / f"{sid}_OpenFace2.1.0_Pose_gaze_AUs.csv"
        rec = SessionRecord(
            session_id=sid,
            dataset=self.dataset,
            split=split,
            transcript=transcript,
            labels=labels,
            audio=(AudioRef(audio, 0.0, "both"),),
            visual_files=(openface,) if openface.is_file() else (),
            visual_format="openface" if openface.is_file() else None,
        )
        return checked(rec, expected_file=openface)  # bad visual files found now, not at extraction
