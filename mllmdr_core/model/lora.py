"""LoRA on the LLM via peft; the adapted module names come from ``LoRAConfig.target_modules``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from mllmdr_core.config import LoRAConfig


def peft_config(cfg: LoRAConfig) -> LoraConfig:
    """The peft ``LoraConfig`` for our config (causal LM task)."""
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 reads transformers' deprecated ``is_gradient_checkpointing``; silence just that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def apply_lora(llm: PreTrainedModel, cfg: LoRAConfig) -> PeftModel:
    """Wrap ``llm`` with LoRA adapters; only the adapters are trainable afterwards."""
    with quiet_peft():
        return get_peft_model(llm, peft_config(cfg))


def trainable_parameter_names(module: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad`` (what an optimiser would update)."""
    return [name for name, p in module.named_parameters() if p.requires_grad]
