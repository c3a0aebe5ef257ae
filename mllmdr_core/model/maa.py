"""MAA head: multi-head attention aggregation of the LLM's last hidden states → one item score.

``hidden (B, L, d)`` is split into ``num_heads`` chunks of ``d / num_heads``; per head a
Linear(d/H→1)+ReLU scores each position, a masked softmax over L weights them, the weighted sums are
concatenated back to (B, d) and an MLP Linear(d→hidden)→ReLU→Linear(hidden→1) gives the score (B,).
"""

from __future__ import annotations

import torch
from torch import nn

from mllmdr_core.config import MAAConfig
from mllmdr_core.errors import ConfigError


class MAAHead(nn.Module):
    """Per-head attention pooling over positions, then an MLP regressor."""

    def __init__(self, cfg: MAAConfig, d_llm: int) -> None:
        super().__init__()
        if d_llm % cfg.num_heads:
            raise ConfigError(f"MAA: d_llm={d_llm} is not divisible by num_heads={cfg.num_heads}")
        self.num_heads = cfg.num_heads
        self.head_dim = d_llm // cfg.num_heads
        # one Linear(head_dim→1) per head, stored as a (H, head_dim) weight
        self.score_weight = nn.Parameter(torch.randn(cfg.num_heads, self.head_dim) * self.head_dim**-0.5)
        self.score_bias = nn.Parameter(torch.zeros(cfg.num_heads))
        self.mlp = nn.Sequential(nn.Linear(d_llm, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` (B, L, d), ``mask`` (B, L) bool True = position to pool → score (B,)."""
        bsz, length, d = hidden.shape
        h = hidden.to(self.score_weight.dtype).view(
            bsz, length, self.num_heads, self.head_dim
        )  # (B, L, H, d/H)
        scores = torch.relu(torch.einsum("blhk,hk->blh", h, self.score_weight) + self.score_bias)  # (B, L, H)
        scores = scores.masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))  # (B, L, H)
        weights = torch.softmax(scores, dim=1)  # (B, L, H)
        pooled = torch.einsum("blh,blhk->bhk", weights, h).reshape(bsz, d)  # (B, d)
        out: torch.Tensor = self.mlp(pooled).squeeze(-1)  # (B,)
        return out
