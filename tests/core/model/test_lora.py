from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from mllmdr_core.config import LoRAConfig, MllmdrConfig
from mllmdr_core.model.lora import apply_lora, trainable_parameter_names
from mllmdr_core.model.mllm import MLlmDR, build_llm


def test_only_configured_modules_are_trainable(cfg: MllmdrConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(0)
    llm = apply_lora(build_llm(cfg.llm, tokenizer), LoRAConfig(r=4, alpha=8, dropout=0.0))
    names = trainable_parameter_names(llm)
    layers = cfg.llm.llama["num_hidden_layers"]
    assert len(names) == 2 * 2 * layers  # (q_proj, v_proj) × (lora_A, lora_B) × layers
    for name in names:
        assert ("q_proj" in name or "v_proj" in name) and ("lora_A" in name or "lora_B" in name), name


def test_target_modules_follow_the_config(cfg: MllmdrConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(0)
    llm = apply_lora(build_llm(cfg.llm, tokenizer), LoRAConfig(r=2, alpha=4, target_modules=("o_proj",)))
    names = trainable_parameter_names(llm)
    assert names and all("o_proj.lora_" in n for n in names)


def test_mllm_trains_lora_lqformers_and_maa_only(model: MLlmDR) -> None:
    names = trainable_parameter_names(model)
    llm_names = [n for n in names if n.startswith("llm.")]
    assert llm_names and all(("q_proj.lora_" in n or "v_proj.lora_" in n) for n in llm_names)
    assert any(n.startswith("audio_lqformer.") for n in names)
    assert any(n.startswith("visual_lqformer.") for n in names)
    assert any(n.startswith("maa.") for n in names)
    assert "llm.base_model.model.model.embed_tokens.weight" not in names
