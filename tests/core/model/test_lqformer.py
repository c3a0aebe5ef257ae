from __future__ import annotations

import pytest
import torch

from mllmdr_core.config import LQFormerConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.model.lqformer import LQFormer, position_index

CFG = LQFormerConfig(
    num_queries=32, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0, proj_hidden=64, max_positions=16
)


def _former(dim: int = 10) -> LQFormer:
    torch.manual_seed(0)
    return LQFormer(CFG, dim, 48).eval()


def test_output_shape_and_input_projection() -> None:
    former = _former(10)  # 10 is not a multiple of 4 heads → projected to width 12
    assert former.d_model == 12 and isinstance(former.in_proj, torch.nn.Linear)
    out = former(torch.randn(3, 7, 10), torch.ones(3, 7, dtype=torch.bool))
    assert out.shape == (3, 32, 48)
    assert isinstance(_former(8).in_proj, torch.nn.Identity)


def test_padded_frames_change_nothing() -> None:
    former = _former()
    feats = torch.randn(2, 9, 10)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 2:] = False
    base = former(feats, mask)
    noisy = feats.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 10) * 100.0
    assert torch.allclose(former(noisy, mask), base, atol=1e-5)
    # and the valid frames do matter
    changed = feats.clone()
    changed[0, 0] += 5.0
    assert not torch.allclose(former(changed, mask)[0], base[0], atol=1e-3)
    # the same row without the padding gives the same answer
    alone = former(feats[1:, :2], mask[1:, :2])
    assert torch.allclose(alone, base[1:], atol=1e-5)


def test_row_without_valid_frames_is_finite() -> None:
    former = _former()
    out = former(torch.randn(2, 4, 10), torch.tensor([[True] * 4, [False] * 4]))
    assert torch.isfinite(out).all()


def test_long_sequences_are_binned_into_the_position_table() -> None:
    idx = position_index(40, 16, torch.device("cpu"))
    assert int(idx.max()) == 15 and int(idx.min()) == 0 and bool((idx[1:] >= idx[:-1]).all())
    out = _former()(torch.randn(1, 40, 10), torch.ones(1, 40, dtype=torch.bool))
    assert out.shape == (1, 32, 48)


def test_rejects_wrong_feature_width() -> None:
    with pytest.raises(ConfigError, match="expects"):
        _former()(torch.randn(1, 4, 11), torch.ones(1, 4, dtype=torch.bool))
