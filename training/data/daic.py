"""DAIC-WOZ reader (AVEC 2017 layout); the synthetic corpus is written in this layout too.

Layout under ``root``::

    train_split_Depression_AVEC2017.csv  Participant_ID, PHQ8_Binary, PHQ8_Score, Gender, PHQ8_NoInterest …
    dev_split_Depression_AVEC2017.csv    same columns
    test_split_Depression_AVEC2017.csv   participant_ID, Gender (labels from full_test_split.csv if present)
    300_P/300_TRANSCRIPT.csv             tab-separated: start_time, stop_time, speaker, value
                                         (Ellie → clinician, Participant → patient; read by
                                         ``mllmdr_core.transcripts``)
    300_P/300_AUDIO.wav                  16 kHz mono (interviewer and participant)
    300_P/300_CLNF_{pose,gaze,AUs}.txt   optional, comma-separated "frame, timestamp, confidence, success, …"
    300_P/300_VIDEO.mp4, synth_meta.json synthetic corpus only
"""

from __future__ import annotations

import json
from pathlib import Path

from mllmdr_core.errors import DatasetError
from mllmdr_core.phq8 import TOTAL_MAX
from mllmdr_core.transcripts import read_transcript
from training.data.records import AudioRef, PHQLabels, SessionRecord
from training.data.split_reader import SplitFileReader
from training.data.tables import (
    BINARY_KEYS,
    TOTAL_KEYS,
    Row,
    find_file,
    int_cell,
    item_cells,
    normalize_id,
    read_rows,
)
from training.data.visual_check import checked

SPLIT_FILES = {
    "train": "train_split_Depression_AVEC2017.csv",
    "dev": "dev_split_Depression_AVEC2017.csv",
    "test": "test_split_Depression_AVEC2017.csv",
}
FULL_TEST_FILE = "full_test_split.csv"


def labels_from_row(row: Row, path: Path) -> PHQLabels:
    """PHQ-8 labels from a split/label row (DAIC-WOZ or E-DAIC column names)."""
    return PHQLabels.build(
        total=int_cell(row, TOTAL_KEYS, path, lo=0, hi=TOTAL_MAX),
        binary=int_cell(row, BINARY_KEYS, path, lo=0, hi=1),
        items=item_cells(row, path),
    )


class DaicWozReader(SplitFileReader):
    """Iterate DAIC-WOZ (or synthetic-corpus) sessions of the chosen splits."""

    dataset = "daic-woz"
    title = "DAIC-WOZ"
    split_files = SPLIT_FILES

    def split_ids(self) -> list[tuple[str, str, PHQLabels]]:
        """(split, session id, labels) for every listed participant, in file order."""
        full_test: dict[str, PHQLabels] = {}
        full_path = find_file(self.root, (FULL_TEST_FILE,))
        if full_path is not None:
            for row in read_rows(full_path, required=("participantid",)):
                full_test[normalize_id(row.cells["participantid"], f"{full_path}:{row.line}")] = (
                    labels_from_row(row, full_path)
                )
        out: list[tuple[str, str, PHQLabels]] = []
        for split, sid, row, path in self.split_rows():
            labels = labels_from_row(row, path)
            if labels.total is None and sid in full_test:
                labels = full_test[sid]
            out.append((split, sid, labels))
        return out

    def read_session(self, sid: str, split: str, labels: PHQLabels) -> SessionRecord:
        folder, audio = self.session_paths(sid, split)
        transcript = read_transcript(folder / f"{sid}_TRANSCRIPT.csv", "daic")
        clnf = tuple(folder / f"{sid}_CLNF_{kind}.txt" for kind in ("pose", "gaze", "AUs"))
        present = [p.is_file() for p in clnf]
        if any(present) and not all(present):
            lacking = [p.name for p, ok in zip(clnf, present, strict=True) if not ok]
            raise DatasetError(f"{folder}: incomplete CLNF features, missing {lacking}")
        meta: dict[str, object] = {}
        meta_path = folder / "synth_meta.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        video = folder / f"{sid}_VIDEO.mp4"
        speakers = str(meta.get("audio_speakers", "both"))
        rec = SessionRecord(
            session_id=sid,
            dataset="synthetic" if meta else self.dataset,
            split=split,
            transcript=transcript,
            labels=labels,
            audio=(AudioRef(audio, 0.0, speakers),),
            video_path=video if video.is_file() else None,
            visual_files=clnf if all(present) else (),
            visual_format="clnf" if all(present) else None,
            meta=meta,
        )
        # bad visual files found now, not at extraction; a real DAIC-WOZ session always has CLNF files
        return checked(rec, expected_file=None if meta else clnf[0])
