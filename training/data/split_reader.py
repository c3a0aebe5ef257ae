"""The part DAIC-WOZ and E-DAIC readers share: split files listing participants, one folder per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from mllmdr_core.errors import DatasetError
from training.data.records import PHQLabels, SessionRecord
from training.data.tables import Row, find_file, normalize_id, read_rows


class SplitFileReader:
    """Base of the readers whose sessions are listed in per-split CSVs and stored in ``root/<id>_P/``.

    Subclasses set ``dataset``, ``title`` (used in messages) and ``split_files`` and implement
    :meth:`split_ids` and :meth:`read_session`.
    """

    dataset: ClassVar[str]
    title: ClassVar[str]
    split_files: ClassVar[dict[str, str]]

    def __init__(self, root: Path | str, splits: tuple[str, ...] = ("train", "dev", "test")) -> None:
        self.root = Path(root)
        unknown = set(splits) - set(self.split_files)
        if unknown:
            raise DatasetError(
                f"unknown {self.title} split(s) {sorted(unknown)}; known: {sorted(self.split_files)}"
            )
        self.splits = splits

    def split_ids(self) -> list[tuple[str, str, PHQLabels]]:
        """(split, session id, labels) for every listed participant, in file order."""
        raise NotImplementedError

    def read_session(self, sid: str, split: str, labels: PHQLabels) -> SessionRecord:
        raise NotImplementedError

    def __iter__(self) -> Iterator[SessionRecord]:
        for split, sid, labels in self.split_ids():
            yield self.read_session(sid, split, labels)

    def read_all(self, *, strict: bool = False) -> tuple[list[SessionRecord], list[dict[str, str]]]:
        """Every readable session, and ``{"session_id", "split", "reason"}`` for each one skipped because
        its files are malformed (``strict``: raise the first ``DatasetError`` instead)."""
        records: list[SessionRecord] = []
        skipped: list[dict[str, str]] = []
        for split, sid, labels in self.split_ids():
            try:
                records.append(self.read_session(sid, split, labels))
            except DatasetError as exc:
                if strict:
                    raise
                skipped.append({"session_id": sid, "split": split, "reason": str(exc)})
        return records, skipped

    def split_rows(self) -> Iterator[tuple[str, str, Row, Path]]:
        """(split, session id, row, split file) for every participant row of the chosen split files."""
        for split in self.splits:
            path = find_file(self.root, (self.split_files[split],))
            if path is None:
                raise DatasetError(f"{self.root / self.split_files[split]}: split file missing")
            for row in read_rows(path, required=("participantid",)):
                yield split, normalize_id(row.cells["participantid"], f"{path}:{row.line}"), row, path

    def session_paths(self, sid: str, split: str) -> tuple[Path, Path]:
        """The session's folder and its ``<id>_AUDIO.wav``, both checked to exist."""
        folder = self.root / f"{sid}_P"
        if not folder.is_dir():
            raise DatasetError(f"{folder}: session folder missing (listed in the {split} split)")
        audio = folder / f"{sid}_AUDIO.wav"
        if not audio.is_file():
            raise DatasetError(f"{audio}: audio file missing")
        return folder, audio
