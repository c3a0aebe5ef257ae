from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.config import BufferConfig
from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.features.buffer import FeatureBuffer


def _minute(m: int, rows: int, dim: int) -> np.ndarray:
    return np.random.default_rng(m).standard_normal((rows, dim)).astype(np.float32)


def test_sixty_minute_session_memory_bound_and_exact_readback(tmp_path: Path) -> None:
    dim, rate, minutes, budget_mb = 800, 5.0, 60, 8.0
    buf = FeatureBuffer(dim, rate, BufferConfig(max_memory_mb=budget_mb, spill_dir=str(tmp_path)))
    peak = 0
    for m in range(minutes):
        block = _minute(m, 300, dim)
        for i in range(300):  # frame by frame, as the live path appends
            buf.append((m * 300 + i) / rate, block[i])
        peak = max(peak, buf.memory_bytes)
    total = minutes * 300 * dim * 4
    assert len(buf) == 18000 and total > 6 * budget_mb * 2**20
    assert peak <= budget_mb * 2**20
    assert buf.spilled_chunks > 0 and any(tmp_path.iterdir())
    t, v = buf.window()
    assert t.shape == (18000,) and v.shape == (18000, dim)
    assert np.array_equal(v[300 * 17 : 300 * 18], _minute(17, 300, dim))
    assert np.array_equal(v[-300:], _minute(59, 300, dim))
    t, v = buf.window(30 * 60.0 + 12.2, 30 * 60.0 + 75.0)  # across a chunk boundary
    assert t[0] == pytest.approx(1812.2) and t[-1] == pytest.approx(1874.8) and len(t) == 314
    expected = np.concatenate([_minute(30, 300, dim)[61:], _minute(31, 300, dim)[:75]])
    assert np.array_equal(v, expected)
    buf.close()
    buf.close()
    assert not any(tmp_path.iterdir())
    with pytest.raises(MediaError):
        buf.window()


def test_batch_append_windows_and_validation() -> None:
    buf = FeatureBuffer(3, 5.0, BufferConfig())
    buf.append(np.arange(10) / 5.0, np.arange(30, dtype=np.float32).reshape(10, 3))
    buf.append(2.0, [1.0, 2.0, 3.0])
    t, v = buf.window(0.4, 1.0)
    assert np.allclose(t, [0.4, 0.6, 0.8]) and np.array_equal(v[:, 0], [6.0, 9.0, 12.0])
    t, v = buf.window(5.0, 9.0)
    assert t.shape == (0,) and v.shape == (0, 3)
    assert buf.window(1.7)[1].tolist() == [[27.0, 28.0, 29.0], [1.0, 2.0, 3.0]]
    assert buf.spilled_chunks == 0 and buf.memory_bytes < 2**20
    with pytest.raises(MediaError):
        buf.append(1.0, [0.0, 0.0, 0.0])  # time goes back
    with pytest.raises(MediaError):
        buf.append(3.0, [0.0, 0.0])  # wrong width
    with pytest.raises(ConfigError):
        FeatureBuffer(800, 5.0, BufferConfig(max_memory_mb=0.001))
    buf.close()
