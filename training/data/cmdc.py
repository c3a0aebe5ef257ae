"""CMDC (Chinese Multimodal Depression Corpus) reader.

CMDC is distributed on request and its exact release layout could not be checked here; this reader
takes the layout below (documented in ``docs/data.md``) and says clearly what it misses::

    root/labels.csv          one row per subject: an id column (subject/id/participant), a PHQ-9 column
                             (header containing "PHQ9"/"PHQ-9"), optional "split" (train/dev/test)
    root/questions.txt       optional: the 12 interview questions, one per line (else "Q1" … "Q12")
    root/[group/]<id>/Q{k}.wav   answer audio for question k (k = 1 … 12; missing questions are skipped)
    root/[group/]<id>/Q{k}.txt   the subject's answer text (UTF-8)
    root/[group/]<id>/Q{k}.csv   optional OpenFace 2 CSV for that answer → "openface-pose-gaze-au-v1"

Answers are placed one after another on a session clock (each question line starts its answer).
Labels are PHQ-9 (``PHQLabels.scale == "PHQ-9"``): total 0–27, binary = total ≥ 10, no item scores.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

from mllmdr_core.errors import DatasetError
from mllmdr_core.frames import TranscriptLine
from training.data.records import AudioRef, PHQLabels, SessionRecord
from training.data.tables import find_file, int_cell, read_rows

NUM_QUESTIONS = 12
LABEL_FILES = ("labels.csv", "subjects.csv", "PHQ9.csv")
_ID_KEYS = ("subject", "subjectid", "id", "participant", "participantid", "name")


def _wav_duration(path: Path) -> float:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable PCM WAV file ({exc})") from exc


class CmdcReader:
    """Iterate CMDC subjects as sessions of 12 question/answer pairs."""

    dataset = "cmdc"

    def __init__(self, root: Path | str, splits: tuple[str, ...] | None = None) -> None:
        self.root = Path(root)
        self.splits = splits  # None → every subject

    def questions(self) -> list[str]:
        """The 12 question texts from ``questions.txt``, else "Q1" … "Q12"."""
        path = self.root / "questions.txt"
        if not path.is_file():
            return [f"Q{k}" for k in range(1, NUM_QUESTIONS + 1)]
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(lines) != NUM_QUESTIONS:
            raise DatasetError(f"{path}: expected {NUM_QUESTIONS} questions, found {len(lines)}")
        return lines

    def subjects(self) -> list[tuple[str, str, PHQLabels]]:
        """(split, subject id, PHQ-9 labels) of the chosen splits, in table order."""
        path = find_file(self.root, LABEL_FILES)
        if path is None:
            raise DatasetError(f"{self.root}: no subject table (looked for {', '.join(LABEL_FILES)})")
        out: list[tuple[str, str, PHQLabels]] = []
        for row in read_rows(path):
            id_key = next((k for k in _ID_KEYS if k in row.cells), None)
            phq_key = next((k for k in row.cells if "phq9" in k), None)
            if id_key is None or phq_key is None:
                raise DatasetError(f"{path}:1: subject table needs an id column and a PHQ-9 column")
            sid = row.cells[id_key]
            if not sid:
                raise DatasetError(f"{path}:{row.line}: empty subject id")
            total = int_cell(row, (phq_key,), path, lo=0, hi=27)
            split = row.cells.get("split", "all").lower() or "all"
            if self.splits is None or split in self.splits:
                out.append((split, sid, PHQLabels.build(total=total, binary=None, items=None, scale="PHQ-9")))
        return out

    def _folder(self, sid: str) -> Path:
        for cand in (self.root / sid, *self.root.glob(f"*/{sid}")):
            if cand.is_dir():
                return cand
        raise DatasetError(f"{self.root}: no folder for subject {sid!r} (looked in root and root/*/)")

    def __iter__(self) -> Iterator[SessionRecord]:
        questions = self.questions()
        for split, sid, labels in self.subjects():
            yield self.read_subject(sid, split, labels, questions)

    def read_subject(self, sid: str, split: str, labels: PHQLabels, questions: list[str]) -> SessionRecord:
        """One subject's answers placed one after another on a session clock."""
        folder = self._folder(sid)
        lines: list[TranscriptLine] = []
        audio: list[AudioRef] = []
        visual: list[Path] = []
        offsets: list[float] = []
        t = 0.0
        for k in range(1, NUM_QUESTIONS + 1):
            wav, txt, csv = (folder / f"Q{k}{ext}" for ext in (".wav", ".txt", ".csv"))
            if not wav.is_file() and not txt.is_file():
                continue
            if not wav.is_file():
                raise DatasetError(f"{wav}: answer audio missing (its transcript {txt.name} exists)")
            if not txt.is_file():
                raise DatasetError(f"{txt}: answer transcript missing (its audio {wav.name} exists)")
            try:
                text = " ".join(txt.read_text(encoding="utf-8").split())
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{txt}: not UTF-8 text ({exc})") from exc
            dur = _wav_duration(wav)
            lines.append(TranscriptLine(t, t, "clinician", questions[k - 1], source="dataset"))
            if text:
                lines.append(TranscriptLine(t, t + dur, "patient", text, source="dataset"))
            audio.append(AudioRef(wav, t, "patient"))
            if csv.is_file():
                visual.append(csv)
                offsets.append(t)
            t += dur
        if not audio:
            raise DatasetError(f"{folder}: no Q{{k}}.wav / Q{{k}}.txt answers found")
        if visual and len(visual) != len(audio):
            raise DatasetError(f"{folder}: OpenFace CSVs for {len(visual)} of {len(audio)} answers")
        return SessionRecord(
            session_id=sid,
            dataset=self.dataset,
            split=split,
            transcript=lines,
            labels=labels,
            audio=tuple(audio),
            visual_files=tuple(visual),
            visual_format="openface-per-question" if visual else None,
            visual_offsets=tuple(offsets),
        )
