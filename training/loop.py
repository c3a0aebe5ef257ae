"""The shared training loop of both stages: param groups, deterministic batches, checkpoints, resume.

A stage trains the parameters its ``groups`` name with one learning rate per group. Batches come in a
seeded order per epoch, so after an interruption the loop reloads ``<stage_dir>/checkpoint.pt``
(trainable weights, optimizer, position) and skips the batches already done. Every step is logged to
``<stage_dir>/curve.jsonl``; a finished stage writes ``<stage_dir>/final.pt`` and is skipped on rerun.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mllmdr_core.model.mllm import MLlmDR, MultimodalBatch, MultimodalExample, collate
from training.run_config import StageConfig
from training.trainlog import CurveLog, load_checkpoint, save_checkpoint


def param_group(name: str) -> str:
    """Which learning-rate group a parameter of ``MLlmDR`` belongs to."""
    if name.startswith(("audio_lqformer.proj.", "visual_lqformer.proj.")):
        return "projection"
    if name.startswith(("audio_lqformer.", "visual_lqformer.")):
        return "lqformer"
    if name.startswith("maa."):
        return "maa"
    return "llm"


def set_trainable(
    model: MLlmDR, groups: Sequence[str], *, llm_lora_only: bool = True
) -> dict[str, list[str]]:
    """Freeze everything, then unfreeze the named groups (the LLM group: LoRA adapters only)."""
    chosen: dict[str, list[str]] = {g: [] for g in groups}
    for name, p in model.named_parameters():
        group = param_group(name)
        on = group in groups and (group != "llm" or not llm_lora_only or "lora_" in name)
        p.requires_grad_(on)
        if on:
            chosen[group].append(name)
    return chosen


def group_lrs(cfg: StageConfig) -> dict[str, float]:
    return {
        "llm": cfg.lr_llm,
        "projection": cfg.lr_projection,
        "lqformer": cfg.lr_lqformer,
        "maa": cfg.lr_maa,
    }


@dataclass
class StageResult:
    steps: int
    epochs: int
    first_loss: float
    last_loss: float
    seconds: float
    resumed: bool
    cpu_s: float = 0.0  # CPU seconds of the training thread (0 in summaries written before it existed)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed * 10007 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def run_stage(
    name: str,
    model: MLlmDR,
    dataset: torch.utils.data.Dataset[MultimodalExample],
    cfg: StageConfig,
    groups: Sequence[str],
    stage_dir: Path,
    *,
    seed: int,
    alpha_fn: Callable[[int], float],
    progress: bool = True,
    dev_dataset: torch.utils.data.Dataset[MultimodalExample] | None = None,
) -> StageResult:
    """Train ``groups`` of ``model`` on ``dataset`` for ``cfg.epochs``; resumable; returns a summary."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    final_path = stage_dir / "final.pt"
    chosen = set_trainable(model, groups)
    if final_path.exists():
        final = load_checkpoint(final_path)
        assert final is not None
        model.load_state_dict(final["weights"], strict=False)
        summary: dict[str, Any] = final["summary"]
        return StageResult(**{**summary, "resumed": True})
    lrs = group_lrs(cfg)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [params[n] for n in names], "lr": lrs[g], "name": g}
            for g, names in chosen.items()
            if names
        ],
        weight_decay=cfg.weight_decay,
    )
    n = len(dataset)  # type: ignore[arg-type]
    per_epoch = math.ceil(n / cfg.batch_size)
    if cfg.max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, cfg.max_steps_per_epoch)
    ckpt_path = stage_dir / "checkpoint.pt"
    log = CurveLog(stage_dir / "curve.jsonl")
    epoch0, done_in_epoch, step, first_loss = 0, 0, 0, float("nan")
    state = load_checkpoint(ckpt_path)
    resumed = state is not None
    if state is not None:
        model.load_state_dict(state["weights"], strict=False)
        opt.load_state_dict(state["optimizer"])
        epoch0, done_in_epoch, step = int(state["epoch"]), int(state["done_in_epoch"]), int(state["step"])
        first_loss = float(state["first_loss"])
        torch.set_rng_state(state["rng"])

    def checkpoint(epoch: int, done: int) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "weights": trainable_state(model),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "done_in_epoch": done,
                "step": step,
                "first_loss": first_loss,
                "rng": torch.get_rng_state(),
            },
        )

    tokenizer = model.tokenizer
    t0, cpu0 = time.monotonic(), time.thread_time()
    last_loss = float("nan")
    for epoch in range(epoch0, cfg.epochs):
        alpha = cfg.alpha if cfg.alpha is not None else alpha_fn(epoch)
        batches = _batches(n, cfg.batch_size, seed, epoch)[:per_epoch]
        model.train()
        bar = tqdm(
            total=len(batches),
            initial=done_in_epoch,
            disable=not progress,
            desc=f"{name} e{epoch + 1}/{cfg.epochs} a={alpha:.2f}",
        )
        for i in range(done_in_epoch, len(batches)):
            batch: MultimodalBatch = collate(
                [dataset[j] for j in batches[i]], tokenizer, score_token_weight=cfg.score_token_weight
            )
            out = model(batch, alpha=alpha)
            assert out.loss is not None
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            step += 1
            last_loss = float(out.loss.detach())
            if math.isnan(first_loss):
                first_loss = last_loss
            log.write(
                stage=name,
                epoch=epoch,
                step=step,
                alpha=alpha,
                loss=last_loss,
                lm_loss=None if out.lm_loss is None else float(out.lm_loss.detach()),
                mse_loss=None if out.mse_loss is None else float(out.mse_loss.detach()),
                elapsed_s=round(time.monotonic() - t0, 2),
            )
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(epoch, i + 1)
        bar.close()
        done_in_epoch = 0
        if dev_dataset is not None:
            dev = evaluate_loss(
                model, dev_dataset, alpha, cfg.batch_size, score_token_weight=cfg.score_token_weight
            )
            log.write(
                stage=name, epoch=epoch, step=step, alpha=alpha, **{f"dev_{k}": v for k, v in dev.items()}
            )
        checkpoint(epoch + 1, 0)
    model.eval()
    summary = {
        "steps": step,
        "epochs": cfg.epochs,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "seconds": round(time.monotonic() - t0, 1),
        "cpu_s": round(time.thread_time() - cpu0, 1),
    }
    save_checkpoint(final_path, {"weights": trainable_state(model), "summary": summary})
    return StageResult(**summary, resumed=resumed)


@torch.no_grad()
def evaluate_loss(
    model: MLlmDR,
    dataset: torch.utils.data.Dataset[MultimodalExample],
    alpha: float,
    batch_size: int,
    *,
    score_token_weight: float = 1.0,
) -> dict[str, float]:
    """Mean loss / LM loss / MSE over a dataset (no gradient)."""
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "lm_loss": 0.0, "mse_loss": 0.0}
    n = len(dataset)  # type: ignore[arg-type]
    count = 0
    for i in range(0, n, batch_size):
        idx = list(range(i, min(n, i + batch_size)))
        batch = collate([dataset[j] for j in idx], model.tokenizer, score_token_weight=score_token_weight)
        out = model(batch, alpha=alpha)
        for key in sums:
            val = getattr(out, key)
            if val is not None:
                sums[key] += float(val) * len(idx)
        count += len(idx)
    model.train(was_training)
    return {k: v / max(1, count) for k, v in sums.items()}
