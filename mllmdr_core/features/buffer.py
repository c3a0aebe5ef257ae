"""FeatureBuffer: pooled feature frames of one modality, memory-bounded, windowed by time.

Frames are stored in fixed-size chunks (about a minute each, never more than a quarter of the
budget). When the in-memory size (chunks + time index) would pass ``max_memory_mb``, the oldest sealed
chunks are written to ``.npy`` files in a private spill directory and read back through ``np.load(...,
mmap_mode="r")`` by :meth:`window`, so a 60-minute session stays within the bound and reads back
exactly. ``close()`` is idempotent and deletes the spill files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mllmdr_core.config import BufferConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.frames import FloatArray


class FeatureBuffer:
    """``append(t_s, vec)`` frames of width ``dim`` at about ``rate_hz``; ``window(start_s, end_s)``."""

    def __init__(self, dim: int, rate_hz: float, cfg: BufferConfig) -> None:
        if dim < 1 or rate_hz <= 0:
            raise ConfigError(f"FeatureBuffer needs dim >= 1 and rate_hz > 0, got {dim}, {rate_hz}")
        self.dim, self.rate_hz, self.cfg = dim, rate_hz, cfg
        self.max_bytes = int(cfg.max_memory_mb * 2**20)
        row_bytes = dim * 4
        self.chunk_rows = max(1, min(int(rate_hz * 60), self.max_bytes // 4 // row_bytes))
        if self.chunk_rows * row_bytes * 2 > self.max_bytes:
            raise ConfigError(f"buffer.max_memory_mb={cfg.max_memory_mb} is too small for {dim}-d frames")
        self._times = np.zeros(1024, dtype=np.float64)  # (capacity,) frame times, first _n valid
        self._n = 0
        self._chunks: list[FloatArray | Path] = []  # sealed (chunk_rows, D) chunks, in memory or spilled
        self._cur = np.zeros((self.chunk_rows, dim), dtype=np.float32)  # (chunk_rows, D) open chunk
        self._cur_n = 0
        self._dir: Path | None = None
        self._closed = False
        self.spilled_chunks = 0

    def __len__(self) -> int:
        return self._n

    @property
    def memory_bytes(self) -> int:
        """Bytes held in memory: frame chunks (the open one counts whole) and the time index."""
        chunks = sum(c.nbytes for c in self._chunks if not isinstance(c, Path))
        return chunks + self._cur.nbytes + self._times.nbytes

    @property
    def last_time_s(self) -> float | None:
        return float(self._times[self._n - 1]) if self._n else None

    def append(self, t_s: float | npt.ArrayLike, vec: npt.ArrayLike) -> None:
        """One frame ``(D,)`` at ``t_s``, or several ``(N, D)`` at times ``(N,)``; times never decrease."""
        if self._closed:
            raise MediaError("FeatureBuffer is closed")
        rows = np.asarray(vec, dtype=np.float32)
        rows = rows.reshape(1, -1) if rows.ndim == 1 else rows  # (N, D)
        times = np.atleast_1d(np.asarray(t_s, dtype=np.float64))  # (N,)
        if rows.ndim != 2 or rows.shape[1] != self.dim or len(times) != len(rows):
            raise MediaError(f"FeatureBuffer({self.dim}) got frames {rows.shape} at {len(times)} times")
        prev = self.last_time_s
        if len(times) and ((prev is not None and times[0] < prev) or np.any(np.diff(times) < 0)):
            raise MediaError(f"FeatureBuffer times must not decrease (last {prev}, got {times[0]})")
        if self._n + len(times) > len(self._times):
            grown = np.zeros(max(2 * len(self._times), self._n + len(times)), dtype=np.float64)
            grown[: self._n] = self._times[: self._n]
            self._times = grown
        self._times[self._n : self._n + len(times)] = times
        self._n += len(times)
        i = 0
        while i < len(rows):
            take = min(self.chunk_rows - self._cur_n, len(rows) - i)
            self._cur[self._cur_n : self._cur_n + take] = rows[i : i + take]
            self._cur_n += take
            i += take
            if self._cur_n == self.chunk_rows:
                self._chunks.append(self._cur)
                self._cur = np.zeros((self.chunk_rows, self.dim), dtype=np.float32)
                self._cur_n = 0
                self._spill()

    def _spill(self) -> None:
        """Write the oldest in-memory chunks to disk until the budget holds."""
        for k, chunk in enumerate(self._chunks):
            if self.memory_bytes <= self.max_bytes:
                return
            if isinstance(chunk, Path):
                continue
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="mllmdr-buffer-", dir=self.cfg.spill_dir))
            path = self._dir / f"chunk{k:06d}.npy"
            np.save(path, chunk)
            self._chunks[k] = path
            self.spilled_chunks += 1

    def window(self, start_s: float | None = None, end_s: float | None = None) -> tuple[
        npt.NDArray[np.float64], FloatArray
    ]:
        """Frames with ``start_s <= t < end_s`` (None: open end) → (times (T,), values (T, D))."""
        if self._closed:
            raise MediaError("FeatureBuffer is closed")
        times = self._times[: self._n]
        a = 0 if start_s is None else int(np.searchsorted(times, start_s, side="left"))
        b = self._n if end_s is None else int(np.searchsorted(times, end_s, side="left"))
        b = max(a, b)
        out = np.zeros((b - a, self.dim), dtype=np.float32)  # (T, D)
        r = self.chunk_rows
        for k in range(a // r, -(-b // r)):
            lo, hi = max(a, k * r), min(b, (k + 1) * r)
            src: npt.NDArray[np.float32]
            if k < len(self._chunks):
                c = self._chunks[k]
                src = np.load(c, mmap_mode="r") if isinstance(c, Path) else c
            else:
                src = self._cur
            out[lo - a : hi - a] = src[lo - k * r : hi - k * r]
        return times[a:b].copy(), out

    def close(self) -> None:
        """Idempotent: drops the frames and deletes the spill directory."""
        if self._closed:
            return
        self._closed = True
        self._chunks.clear()
        self._cur = np.zeros((0, self.dim), dtype=np.float32)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
