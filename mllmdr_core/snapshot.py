"""SessionSnapshot: what one assessment reads, copied out of a session's state at one moment.

The single input type of :meth:`mllmdr_core.assess.Assessor.assess`. Live checkpoints and finals, pending
retries (kept on disk as ``.npz`` bytes, no pickles), replay and training evaluation all build one and
hand it over whole; nothing outside the core passes a model the session's parts one by one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mllmdr_core.errors import StorageError
from mllmdr_core.frames import FloatArray, TranscriptLine


def finite(values: Mapping[str, object]) -> dict[str, float]:
    """Drop NaN/inf and non-numbers (JSON has no such numbers; the panel shows a gap)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _empty(dim: int = 0) -> FloatArray:
    return np.zeros((0, dim), dtype=np.float32)


@dataclass(frozen=True)
class SessionSnapshot:
    """A session's feature windows, transcript, indicators and the time window they cover."""

    audio: FloatArray = field(default_factory=_empty)  # (Ta, D_audio)
    visual: FloatArray = field(default_factory=_empty)  # (Tv, D_visual)
    transcript: tuple[TranscriptLine, ...] = ()
    indicators: dict[str, float] = field(default_factory=dict)  # finite values only
    window: tuple[float, float] = (0.0, 0.0)  # session seconds [start, end]

    @classmethod
    def of(
        cls,
        *,
        audio: FloatArray | None = None,
        visual: FloatArray | None = None,
        transcript: Sequence[TranscriptLine] = (),
        indicators: Mapping[str, object] | None = None,
        window: tuple[float, float] | None = None,
    ) -> SessionSnapshot:
        """A snapshot from loose parts (copies the arrays; ``window`` defaults to [0, last line end])."""
        lines = tuple(transcript)
        end = max((ln.end_s for ln in lines), default=0.0)
        return cls(
            audio=np.array(audio, dtype=np.float32, copy=True) if audio is not None else _empty(),
            visual=np.array(visual, dtype=np.float32, copy=True) if visual is not None else _empty(),
            transcript=lines,
            indicators=finite(indicators or {}),
            window=(float(window[0]), float(window[1])) if window is not None else (0.0, float(end)),
        )

    def without_sources(self, prefix: str) -> SessionSnapshot:
        """The same snapshot minus transcript lines whose ``source`` starts with ``prefix``."""
        kept = tuple(ln for ln in self.transcript if not ln.source.startswith(prefix))
        return dataclasses.replace(self, transcript=kept)

    def to_bytes(self) -> bytes:
        """``.npz`` bytes (no pickles), read back by :meth:`from_bytes`."""
        buf = io.BytesIO()
        np.savez(
            buf,
            audio=self.audio,  # (Ta, D_audio)
            visual=self.visual,  # (Tv, D_visual)
            window=np.asarray(self.window, dtype=np.float64),  # (2,)
            transcript=np.asarray(json.dumps([asdict(line) for line in self.transcript])),
            indicators=np.asarray(json.dumps(self.indicators)),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "snapshot bytes") -> SessionSnapshot:
        """Inverse of :meth:`to_bytes`; a damaged or foreign file raises ``StorageError`` naming ``where``."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                window = npz["window"]
                return cls(
                    audio=np.array(npz["audio"], dtype=np.float32),
                    visual=np.array(npz["visual"], dtype=np.float32),
                    transcript=tuple(TranscriptLine(**d) for d in json.loads(str(npz["transcript"]))),
                    indicators={str(k): float(v) for k, v in json.loads(str(npz["indicators"])).items()},
                    window=(float(window[0]), float(window[1])),
                )
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise StorageError(f"session snapshot ({where}) unreadable: {exc}") from exc
