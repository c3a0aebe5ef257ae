"""TEMPORARY plumbing engine used until mllmdr_core's SessionState/Assessor land (then removed).

Computes real but trivial values (audio RMS, frame brightness) so the server's plumbing can be tested.
"""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np

from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment, Evidence, ItemAssessment, ModelInfo
from mllmdr_core.frames import FloatArray, TranscriptLine
from mllmdr_core.phq8 import ITEM_KEYS
from stream_server.engine import BundleInfo, Snapshot


class StandInState:
    def __init__(self) -> None:
        self._lines: list[TranscriptLine] = []
        self._audio_s = 0.0
        self._video_t = 0.0
        self.rms: list[float] = []
        self.bright: list[float] = []
        self.thread_ids: set[int] = set()

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, channels: int = 1, t_s: float | None = None
    ) -> None:
        self.thread_ids.add(threading.get_ident())
        x = samples.astype(np.float32) / 32768.0
        self._audio_s += len(x) / channels / sample_rate
        self.rms.append(float(np.sqrt(np.mean(x**2))) if len(x) else 0.0)

    def push_video(self, rgb: np.ndarray, t_s: float) -> None:
        self._video_t = max(self._video_t, t_s)
        self.bright.append(float(rgb.mean()))

    def add_transcript(self, line: TranscriptLine) -> None:
        self._lines.append(line)

    @property
    def transcript(self) -> list[TranscriptLine]:
        return list(self._lines)

    def indicators(self, window_s: float = 30.0) -> dict[str, float]:
        return {
            "energy": float(np.mean(self.rms[-50:])) if self.rms else float("nan"),
            "brightness": float(np.mean(self.bright[-10:])) if self.bright else float("nan"),
        }

    def features(
        self, start_s: float | None = None, end_s: float | None = None
    ) -> tuple[FloatArray, FloatArray]:
        return np.zeros((len(self.rms), 4), np.float32), np.zeros((len(self.bright), 4), np.float32)

    @property
    def media_time_s(self) -> float:
        return max(self._audio_s, self._video_t)

    def close(self) -> None:
        pass


class StandInEngine:
    info = BundleInfo(
        bundle_id="standin-plumbing", training_data="synthetic", non_clinical=True, labels=[SYNTHETIC_LABEL]
    )
    transcript_source = "captions"

    def new_state(self, session_id: str) -> StandInState:
        return StandInState()

    def assess(self, snap: Snapshot, *, session_id: str, kind: Literal["checkpoint", "final"]) -> Assessment:
        items = [
            ItemAssessment(
                key=k,
                score=0,
                rationale=f"plumbing only ({len(snap.transcript)} lines)",
                evidence=[Evidence(kind="transcript", text=snap.transcript[0].text)]
                if snap.transcript
                else [],
            )
            for k in ITEM_KEYS
        ]
        return Assessment(
            session_id=session_id,
            kind=kind,
            window_start_s=snap.window[0],
            window_end_s=snap.window[1],
            items=items,
            total=0,
            binary=False,
            model=ModelInfo(
                bundle_id=self.info.bundle_id, training_data="synthetic", non_clinical=True, backend="none"
            ),
            labels=[SYNTHETIC_LABEL],
        )
