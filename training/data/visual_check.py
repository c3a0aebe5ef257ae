"""Read-time checks of a session's OpenFace/CLNF files: each problem named with its file.

The readers (``daic.py``, ``edaic.py``) call :func:`checked` on every record they build, so a bad visual
file is found when the corpus is read, not during feature extraction. Outcomes:

- a malformed table (header not ``frame, timestamp, …``, a row with the wrong field count or a
  non-numeric cell): ``DatasetError`` naming the file and line — the reader's ``read_all`` skips the
  session with that reason in the run's summary (``sessions_dropped.json``; ``--strict`` stops);
- no visual-feature file (E-DAIC), no ``success`` column, ``success`` = 0 or ``confidence`` = 0 in every
  frame, or no usable value at all: the session is kept with the video modality masked (its visual
  files dropped from the record: the model gets no visual frames, as for an audio-only session);
- expected columns missing (a close match in the header is named as a likely rename), some
  ``success`` = 0 / ``confidence`` = 0 frames, NaN cells: kept, those values masked (``visual_v2``).

Every note is kept in ``record.meta["visual_issues"]`` and printed once to stderr.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path

import numpy as np

from training.data.records import SessionRecord

# columns a format never has (not a problem): DAIC-WOZ's CLNF lacks these AU intensities
EXPECTED_MISSING = {"clnf": {"AU07_r", "AU23_r", "AU45_r"}}
MASKED = "video modality masked"


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as fh:
        return [c.strip() for c in fh.readline().strip().split(",")]


def _renamed(name: str, headers: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), [h.lower() for h in headers], n=1, cutoff=0.75)
    if not close:
        return name
    found = next(h for h in headers if h.lower() == close[0])
    return f"{name} (found {found!r}: renamed?)"


def problems(rec: SessionRecord) -> tuple[list[str], bool]:
    """(notes, usable): the record's visual problems, and whether any tracked frame has a value.
    Raises ``DatasetError`` (naming file and line) for a malformed table."""
    table = rec.load_visual()
    if table is None:
        return [], False
    where = ", ".join(p.name for p in table.sources)
    notes: list[str] = []
    expected_missing = EXPECTED_MISSING.get(rec.visual_format or "", set())
    lacking = [n for n in table.missing if n not in expected_missing]
    if lacking:
        headers = [h for p in table.sources for h in _header(p)]
        names = ", ".join(_renamed(n, headers) for n in lacking)
        notes.append(f"{where}: columns missing: {names} (masked)")
    col = {n: table.values[:, i] for i, n in enumerate(table.names)}
    n = len(table.times)
    tracked = np.ones(n, dtype=bool)
    if "success" in table.missing:
        notes.append(f"{where}: no 'success' column: no frame counts as a tracked face, {MASKED}")
        tracked[:] = False
    else:
        success = col["success"]
        lost = ~(np.isfinite(success) & (success > 0.5))
        tracked &= ~lost
        if lost.all():
            notes.append(f"{where}: success = 0 in every frame ({n}): {MASKED}")
        elif lost.any():
            notes.append(f"{where}: {int(lost.sum())} of {n} frames with success = 0 (masked)")
    if "confidence" not in table.missing:
        conf = col["confidence"]
        zero = np.isfinite(conf) & (conf <= 0.0)
        if n and zero.all():
            notes.append(f"{where}: confidence = 0 in every frame: {MASKED}")
        elif zero.any():
            notes.append(f"{where}: {int(zero.sum())} of {n} frames with confidence = 0 (masked)")
        tracked &= ~zero
    present = [i for i, name in enumerate(table.names) if name not in table.missing]
    nan = ~np.isfinite(table.values[:, present])
    if nan.any():
        cols = [table.names[present[j]] for j in np.flatnonzero(nan.any(axis=0))]
        notes.append(f"{where}: {int(nan.sum())} NaN cells in {', '.join(cols[:6])}"
                     f"{' …' if len(cols) > 6 else ''} (masked)")
    features = np.array([n not in ("success", "confidence") for n in table.names])
    usable = bool(np.isfinite(table.values[tracked][:, features]).any())
    if n == 0:
        notes.append(f"{where}: no frames: {MASKED}")
    elif not usable and not any(MASKED in note for note in notes):
        notes.append(f"{where}: no usable value in any tracked frame: {MASKED}")
    return notes, usable


def checked(rec: SessionRecord, expected_file: Path | None = None) -> SessionRecord:
    """``rec`` after the read-time checks: notes in ``meta["visual_issues"]`` (printed), the visual files
    dropped when nothing in them is usable. ``expected_file``: the visual-feature file the dataset
    should have — its absence is a note and the modality is masked."""
    if rec.video_path is not None:  # a real video: the live face tracker makes the features
        return rec
    notes: list[str] = []
    if rec.visual_format is None:
        if expected_file is None:
            return rec
        notes.append(f"{expected_file}: visual-feature file missing: {MASKED}")
        usable = False
    else:
        found, usable = problems(rec)
        notes += found
    if not notes:
        return rec
    for note in notes:
        print(f"session {rec.session_id} ({rec.split}): {note}", file=sys.stderr)
    meta = {**rec.meta, "visual_issues": notes}
    if usable:
        return dataclasses.replace(rec, meta=meta)
    return dataclasses.replace(rec, meta=meta, visual_files=(), visual_format=None, visual_offsets=())
