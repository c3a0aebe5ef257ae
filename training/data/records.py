"""The common record every dataset reader yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mllmdr_core.errors import DatasetError
from mllmdr_core.features.visual_schema import V2_SPEC
from mllmdr_core.frames import FloatArray, TranscriptLine
from mllmdr_core.phq8 import BINARY_CUTOFF, ITEM_KEYS
from training.data.openface import read_clnf, read_openface_csv, stack_tables
from training.data.visual_table import VisualTable
from training.data.wav import read_wav_16k

VisualFormat = Literal["clnf", "openface", "openface-per-question"]


@dataclass(frozen=True)
class PHQLabels:
    """Questionnaire labels; any part may be unknown (``None``).

    ``scale`` is "PHQ-8" (DAIC-WOZ, E-DAIC, synthetic) or "PHQ-9" (CMDC: ``total`` is then the PHQ-9
    total, 0–27, and ``binary`` uses the same ≥ 10 cut-off).
    """

    total: int | None
    binary: int | None
    items: dict[str, int] | None = None  # keyed by mllmdr_core.phq8.ITEM_KEYS
    scale: str = "PHQ-8"

    @staticmethod
    def build(
        *, total: int | None, binary: int | None, items: dict[str, int] | None, scale: str = "PHQ-8"
    ) -> PHQLabels:
        """Fill what can be derived: total from complete items, binary from the total (≥ 10)."""
        if items is not None and set(items) != set(ITEM_KEYS):
            items = None  # incomplete item rows count as "no items"
        if total is None and items is not None:
            total = sum(items.values())
        if total is not None:
            binary = int(total >= BINARY_CUTOFF)
        return PHQLabels(total=total, binary=binary, items=items, scale=scale)


@dataclass(frozen=True)
class AudioRef:
    """One audio file placed at ``start_s`` on the session clock."""

    path: Path
    start_s: float = 0.0
    speakers: str = "both"  # "both" (interviewer audible too) | "patient"


@dataclass
class SessionRecord:
    """One interview session, whatever the dataset."""

    session_id: str
    dataset: str  # "daic-woz" | "e-daic" | "cmdc" | "synthetic"
    split: str  # "train" | "dev" | "test" | "all"
    transcript: list[TranscriptLine]
    labels: PHQLabels
    audio: tuple[AudioRef, ...] = ()
    video_path: Path | None = None
    visual_files: tuple[Path, ...] = ()
    visual_format: VisualFormat | None = None
    visual_offsets: tuple[float, ...] = ()  # per visual file, session-clock offset (CMDC)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def audio_path(self) -> Path | None:
        """The session's audio file when there is exactly one (DAIC-WOZ, E-DAIC, synthetic)."""
        return self.audio[0].path if len(self.audio) == 1 else None

    @property
    def visual_spec(self) -> str | None:
        """The schema the session's visual feature files map onto (``load_visual_v2``)."""
        return V2_SPEC if self.visual_format is not None else None

    def load_visual_v2(self) -> VisualTable | None:
        """The visual feature files mapped onto "visual-v2" (values ⊕ mask; ``None`` without files)."""
        from training.data.visual_v2 import openface_to_v2

        table = self.load_visual()
        return openface_to_v2(table) if table is not None else None

    def load_visual(self) -> VisualTable | None:
        """Read the raw OpenFace/CLNF columns (NaN where missing; ``None`` when the session has none)."""
        if self.visual_format is None:
            return None
        if self.visual_format == "clnf":
            return read_clnf(*self.visual_files)
        tables = [read_openface_csv(p) for p in self.visual_files]
        if self.visual_format == "openface":
            return tables[0]
        return stack_tables(tables, self.visual_offsets)

    def load_audio(self) -> FloatArray:
        """All audio of the session as 16 kHz mono float32 on the session clock, silence between files."""
        if not self.audio:
            raise DatasetError(f"session {self.session_id}: no audio file")
        parts = [(ref.start_s, read_wav_16k(ref.path)) for ref in self.audio]
        end = max(round(s * 16000) + len(x) for s, x in parts)
        out = np.zeros(end, dtype=np.float32)  # (N,)
        for start_s, x in parts:
            i = round(start_s * 16000)
            out[i : i + len(x)] = x
        return out
