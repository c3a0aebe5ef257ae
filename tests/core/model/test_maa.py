from __future__ import annotations

import pytest
import torch

from mllmdr_core.config import MAAConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.model.maa import MAAHead


def test_shape_and_masking() -> None:
    torch.manual_seed(0)
    head = MAAHead(MAAConfig(num_heads=8, hidden=32), 64)
    hidden = torch.randn(3, 11, 64)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[:, :4] = False  # left padding
    score = head(hidden, mask)
    assert score.shape == (3,)
    noisy = hidden.clone()
    noisy[:, :4] = 1e3
    assert torch.allclose(head(noisy, mask), score, atol=1e-5)
    assert torch.allclose(head(hidden[:, 4:], mask[:, 4:]), score, atol=1e-5)


def test_matches_the_per_head_definition() -> None:
    torch.manual_seed(1)
    head = MAAHead(MAAConfig(num_heads=2, hidden=8), 4)
    hidden = torch.randn(1, 5, 4)
    mask = torch.ones(1, 5, dtype=torch.bool)
    pooled = []
    for h in range(2):
        chunk = hidden[0, :, 2 * h : 2 * h + 2]  # (L, 2)
        s = torch.relu(chunk @ head.score_weight[h] + head.score_bias[h])  # (L,)
        pooled.append(torch.softmax(s, 0) @ chunk)
    expected = head.mlp(torch.cat(pooled)).squeeze(-1)
    assert torch.allclose(head(hidden, mask)[0], expected, atol=1e-6)


def test_rejects_indivisible_width() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        MAAHead(MAAConfig(num_heads=8), 60)
