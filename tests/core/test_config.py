"""Config round-trip through dicts, and paper defaults."""

from __future__ import annotations

import json

import pytest

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import ConfigError


def test_paper_defaults() -> None:
    cfg = MllmdrConfig()
    assert (cfg.lqformer.num_queries, cfg.lqformer.num_layers, cfg.lqformer.ffn_dim) == (32, 4, 1024)
    assert (cfg.llm.lora.r, cfg.llm.lora.alpha, cfg.llm.lora.dropout) == (16, 32, 0.1)
    assert cfg.llm.lora.target_modules == ("q_proj", "v_proj")
    assert cfg.maa.num_heads == 8


def test_round_trip_through_json() -> None:
    cfg = MllmdrConfig()
    cfg.lqformer.num_layers = 2
    cfg.llm.llama = {"hidden_size": 64}
    again = MllmdrConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"LQFormerConfig\.nope"):
        MllmdrConfig.from_dict({"lqformer": {"nope": 1}})
