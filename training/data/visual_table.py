"""Per-frame visual features of a dataset session, mapped to a declared spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mllmdr_core.errors import DatasetError
from mllmdr_core.frames import FloatArray


@dataclass(frozen=True)
class VisualTable:
    """Per-frame visual features mapped to a declared spec (see ``training/data/openface.py``)."""

    spec: str
    names: tuple[str, ...]
    times: FloatArray  # (T,) seconds
    values: FloatArray  # (T, D) with D == len(names)
    missing: tuple[str, ...]  # spec columns the source lacks (filled with 0.0)
    sources: tuple[Path, ...]

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.times), len(self.names)):
            raise DatasetError(
                f"{', '.join(map(str, self.sources)) or 'visual table'}: values {self.values.shape} "
                f"!= ({len(self.times)} times, {len(self.names)} names)"
            )
