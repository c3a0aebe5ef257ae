"""Tiny configs and a random-init bundle for tests, the server's tests and the fallback demo.

Nothing here downloads anything: the LLM, HuBERT and tokenizer are built from tiny configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mllmdr_core.config import (
    AudioEncoderConfig,
    LLMConfig,
    LoRAConfig,
    LQFormerConfig,
    MAAConfig,
    MllmdrConfig,
)

if TYPE_CHECKING:
    import torch

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



def vllm_tiny_config() -> MllmdrConfig:
    """:func:`tiny_config` with a Llama vLLM's CPU attention supports (head_dim 32; it needs ≥ 32)."""
    cfg = tiny_config()
    cfg.llm.llama.update(num_attention_heads=2, num_key_value_heads=2, head_dim=32)
    return cfg


def randomise_lora_b(llm: torch.nn.Module, seed: int = 1, scale: float = 0.3) -> None:
    """Give the LoRA B matrices (zero at init) random values, so the adapter changes the model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)

def tiny_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: item wording, the default script, prompt and target lines."""
    from mllmdr_core.features.interview import DEFAULT_INTERVIEW_SCRIPT
    from mllmdr_core.phq8 import PHQ8_ITEMS
    from mllmdr_core.prompt import REPLY_LINE, SCALE_LINE, format_target

    texts = [f'Rate PHQ-8 item "{item.title}": {item.question}.' for item in PHQ8_ITEMS]
    texts += list(DEFAULT_INTERVIEW_SCRIPT)
    texts += [SCALE_LINE, REPLY_LINE, "Audio: <AudioHere>", "Video: <VideoHere>"]
    texts += [
        format_target(s, r)
        for s, r in [
            (0, "The participant reports no difficulty with this."),
            (1, "Some days the participant feels this way."),
            (2, "More than half the days, with slow speech and long pauses."),
            (3, "Nearly every day; the answers and low expressivity agree."),
        ]
    ]
    return texts * 3


def build_tiny_bundle(
    path: str | Path,
    *,
    non_clinical: bool = True,
    seed: int = 0,
    config: MllmdrConfig | None = None,
    training_data: str = "none (random init, untrained)",
) -> Path:
    """A random-init bundle (HuBERT + Llama + tokenizer + heads): untrained, for tests, benches and demos.

    ``config`` defaults to :func:`tiny_config`; benches pass a variant (e.g. ``audio.hubert = {}`` for a
    HuBERT-base-sized encoder) and say so in ``training_data``.
    """
    import torch

    from mllmdr_core.bundle import save_bundle
    from mllmdr_core.features.encoder import build_hubert
    from mllmdr_core.features.spec import extractor_spec
    from mllmdr_core.model.mllm import MLlmDR
    from mllmdr_core.model.tokenizer import train_tokenizer

    cfg = tiny_config() if config is None else config
    tokenizer = train_tokenizer(tiny_corpus(), vocab_size=1000)
    spec = extractor_spec(cfg)
    hubert = build_hubert(cfg.audio, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLlmDR(cfg, spec.audio_dim, spec.visual_dim, tokenizer)
    return save_bundle(
        path,
        model=model.eval(),
        tokenizer=tokenizer,
        config=cfg,
        audio_encoder=hubert,
        feature_spec=spec,
        training_data=training_data,
        non_clinical=non_clinical,
        overwrite=True,
    )


def build_hubert_base_bundle(path: str | Path, *, seed: int = 0, int8: bool = False) -> Path:
    """``build_tiny_bundle`` with a HuBERT-base-sized random-init audio encoder (transformers'
    ``HubertConfig`` defaults: 12 layers, hidden 768, FFN 3072): benchmark compute, meaningless scores.
    ``int8``: the encoder's Linear layers run dynamically quantised (``AudioEncoderConfig.int8``)."""
    cfg = tiny_config()
    cfg.audio.hubert = {}
    cfg.audio.int8 = int8
    return build_tiny_bundle(
        path, seed=seed, config=cfg, training_data="none (random init, untrained; benchmark only)"
    )
