"""Stage 1: align the LQ-formers (query decoder + projection) with the frozen LLM.

Only ``audio_lqformer.*`` / ``visual_lqformer.*`` train (LQ-former lr, projection lr); the LLM, its
LoRA adapters and the MAA head are frozen. The loss is the LM loss on the target text (``alpha`` = 1
by default in the configs), so the soft tokens learn to say what the item answer needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mllmdr_core.model.mllm import MLlmDR, MultimodalExample
from training.loop import StageResult, run_stage
from training.run_config import StageConfig

STAGE1_GROUPS = ("lqformer", "projection")


def train_stage1(
    model: MLlmDR,
    train: torch.utils.data.Dataset[MultimodalExample],
    cfg: StageConfig,
    stage_dir: Path,
    *,
    seed: int = 0,
    progress: bool = True,
    dev: torch.utils.data.Dataset[MultimodalExample] | None = None,
) -> StageResult:
    return run_stage(
        "stage1",
        model,
        train,
        cfg,
        STAGE1_GROUPS,
        stage_dir,
        seed=seed,
        alpha_fn=lambda epoch: 1.0,
        progress=progress,
        dev_dataset=dev,
    )
