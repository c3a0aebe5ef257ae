"""Tiny configs and a random-init bundle for tests, the server's tests and the fallback demo.

Nothing here downloads anything: the LLM, HuBERT and tokenizer are built from tiny configs.
"""

from __future__ import annotations

from mllmdr_core.config import (
    AudioEncoderConfig,
    LLMConfig,
    LoRAConfig,
    LQFormerConfig,
    MAAConfig,
    MllmdrConfig,
)

TINY_HUBERT: dict[str, object] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32, 32, 32, 32, 32, 32, 32],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}

TINY_LLAMA: dict[str, object] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "max_position_embeddings": 2048,
}


def tiny_config() -> MllmdrConfig:
    """A complete, small MllmdrConfig (32 queries per modality as in the paper; everything else tiny)."""
    return MllmdrConfig(
        audio=AudioEncoderConfig(hubert=dict(TINY_HUBERT)),
        lqformer=LQFormerConfig(
            num_queries=32,
            num_layers=2,
            num_heads=4,
            ffn_dim=128,
            dropout=0.0,
            proj_hidden=128,
            max_positions=512,
        ),
        maa=MAAConfig(num_heads=8, hidden=64),
        llm=LLMConfig(
            llama=dict(TINY_LLAMA),
            lora=LoRAConfig(r=4, alpha=8, dropout=0.0),
            max_new_tokens=24,
            max_prompt_tokens=1024,
        ),
    )
