"""Optional recording of a session's received audio (``record_audio`` setting) as 16-bit WAV files.

Written from the analysis worker thread (never on the event loop). A change of sample rate or channel
count mid-stream starts a new part: ``<session>.wav``, ``<session>.part2.wav``, …
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


class AudioRecorder:
    def __init__(self, directory: Path, session_id: str) -> None:
        self.directory = directory
        self.session_id = session_id
        self.paths: list[Path] = []
        self._wav: wave.Wave_write | None = None
        self._format: tuple[int, int] | None = None

    def write(self, samples: np.ndarray, sample_rate: int, channels: int) -> None:
        """Append interleaved samples (int16, or float in [-1, 1])."""
        if self._format != (sample_rate, channels):
            self.close()
            self.directory.mkdir(parents=True, exist_ok=True)
            part = len(self.paths) + 1
            while (path := self._path(part)).exists():  # a resumed session never overwrites a part
                part += 1
            wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
            wav.setnchannels(channels)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            self._wav, self._format = wav, (sample_rate, channels)
            self.paths.append(path)
        if samples.dtype != np.int16:
            samples = (np.clip(samples.astype(np.float32), -1.0, 1.0) * 32767).astype(np.int16)
        assert self._wav is not None
        self._wav.writeframes(samples.tobytes())

    def _path(self, part: int) -> Path:
        name = f"{self.session_id}.wav" if part == 1 else f"{self.session_id}.part{part}.wav"
        return self.directory / name

    def close(self) -> None:
        """Idempotent."""
        if self._wav is not None:
            self._wav.close()
            self._wav = None
            self._format = None
