"""LQ-former: 32 learnable queries read a feature sequence and become soft tokens for the LLM.

Per modality (audio, visual) one instance::

    feats (B, T, D) --[in_proj if D is not a multiple of the heads]--> (B, T, d)
      + learned positions over the frames (T > max_positions: positions are binned)
      ⊕ one learned "null" key (always valid, so a row with no valid frame never gives NaN)
    queries (Q, d) --DETR-style decoder × num_layers: self-attn(queries), cross-attn(queries → frames,
      real boolean key-padding mask), FFN--> (B, Q, d)
      --Linear(d→proj_hidden)→ReLU→Linear(proj_hidden→d_llm)--> (B, Q, d_llm)

Unlike the authors' code, padded frames are masked (a boolean ``key_padding_mask``), so changing padded
features cannot change the output.
"""

from __future__ import annotations

import torch
from torch import nn

from mllmdr_core.config import LQFormerConfig
from mllmdr_core.errors import ConfigError


def model_width(feature_dim: int, num_heads: int) -> int:
    """Decoder width: the feature width (as the authors), rounded up to a multiple of the heads."""
    return -(-feature_dim // num_heads) * num_heads


def position_index(length: int, max_positions: int, device: torch.device) -> torch.Tensor:
    """Indices into the positional table for ``length`` frames; longer sequences are binned. # (T,)"""
    idx = torch.arange(length, device=device)
    if length > max_positions:
        idx = idx * max_positions // length
    return idx


class LQFormer(nn.Module):
    """Learnable-query transformer decoder over one modality's feature sequence."""

    def __init__(self, cfg: LQFormerConfig, feature_dim: int, d_llm: int) -> None:
        super().__init__()
        if feature_dim <= 0 or d_llm <= 0:
            raise ConfigError(f"LQFormer needs positive dims, got feature_dim={feature_dim}, d_llm={d_llm}")
        self.cfg = cfg
        self.feature_dim = feature_dim
        d = model_width(feature_dim, cfg.num_heads)
        self.d_model = d
        self.in_proj: nn.Module = nn.Identity() if d == feature_dim else nn.Linear(feature_dim, d)
        self.positions = nn.Embedding(cfg.max_positions, d)
        self.null_key = nn.Parameter(torch.zeros(1, 1, d))
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, d) * 0.02)
        layer = nn.TransformerDecoderLayer(
            d_model=d,
            nhead=cfg.num_heads,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            batch_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.num_layers, norm=nn.LayerNorm(d))
        self.proj = nn.Sequential(nn.Linear(d, cfg.proj_hidden), nn.ReLU(), nn.Linear(cfg.proj_hidden, d_llm))
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``feats`` (B, T, D), ``mask`` (B, T) bool True = valid frame → (B, Q, d_llm)."""
        tokens: torch.Tensor = self.proj(self.latent(feats, mask))  # (B, Q, d_llm)
        return tokens

    def latent(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's output before ``proj``, (B, Q, d): what a vLLM server that holds ``proj``
        (:mod:`mllmdr_core.backends.vllm_plugin`) takes instead of the (B, Q, d_llm) soft tokens."""
        if feats.dim() != 3 or feats.shape[-1] != self.feature_dim:
            raise ConfigError(
                f"LQFormer expects (B, T, {self.feature_dim}) features, got {tuple(feats.shape)}"
            )
        if mask.shape != feats.shape[:2]:
            raise ConfigError(
                f"mask shape {tuple(mask.shape)} does not match features {tuple(feats.shape[:2])}"
            )
        bsz, length, _ = feats.shape
        # 1. project and add positions
        x = self.in_proj(feats.to(self.queries.dtype))  # (B, T, d)
        x = x + self.positions(position_index(length, self.cfg.max_positions, feats.device))  # (B, T, d)
        # 2. prepend the always-valid null key
        memory = torch.cat([self.null_key.expand(bsz, 1, -1), x], dim=1)  # (B, 1+T, d)
        valid = torch.cat([mask.new_ones(bsz, 1), mask.bool()], dim=1)  # (B, 1+T)
        # 3. queries attend to themselves and (masked) into the frames
        tgt = self.queries.unsqueeze(0).expand(bsz, -1, -1)  # (B, Q, d)
        out: torch.Tensor = self.decoder(tgt, memory, memory_key_padding_mask=~valid)  # (B, Q, d)
        return out  # 4. ``proj`` takes it into the LLM's embedding space (forward)
