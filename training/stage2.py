"""Stage 2: LoRA + MAA, joint loss a·LM + (1−a)·MSE with a = epoch / num_epochs (authors' schedule).

Trainable: the LLM's LoRA adapters (LLM lr), the LQ-former decoders (LQ-former lr), their projections
(projection lr) and the MAA head (MAA lr) — paper: 1e-5 / 1e-4 / 5e-4 / 1e-4. Unlike the authors' code,
both LQ-formers are in the optimizer. ``epoch`` counts from 0, so the first epoch is pure regression and
the weight of the LM loss grows to (E−1)/E in the last one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mllmdr_core.model.mllm import MLlmDR, MultimodalExample
from training.loop import StageResult, run_stage
from training.run_config import StageConfig

STAGE2_GROUPS = ("llm", "projection", "lqformer", "maa")


def alpha_schedule(epoch: int, num_epochs: int) -> float:
    """LM-loss weight a = epoch / num_epochs (epoch counted from 0)."""
    return epoch / max(1, num_epochs)


def train_stage2(
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
        "stage2",
        model,
        train,
        cfg,
        STAGE2_GROUPS,
        stage_dir,
        seed=seed,
        alpha_fn=lambda epoch: alpha_schedule(epoch, cfg.epochs),
        progress=progress,
        dev_dataset=dev,
    )
