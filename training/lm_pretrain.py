"""Demo only: train a small Llama-architecture LM from scratch on the corpus text.

No pretrained LM weights can be fetched here, so the demo bundle's backbone is a tiny
``LlamaForCausalLM`` trained by the project itself, with a byte-level BPE tokenizer trained on the
same text by :func:`mllmdr_core.model.tokenizer.train_tokenizer`. Text is packed into fixed-length
blocks (EOS between documents). Checkpoints after every epoch; a rerun resumes from the last one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mllmdr_core.model.tokenizer import train_tokenizer
from training.run_config import LMPretrainConfig
from training.trainlog import CurveLog, load_checkpoint, save_checkpoint, seed_everything


def build_llama(
    llama_kwargs: dict[str, Any], tokenizer: PreTrainedTokenizerFast, seed: int
) -> LlamaForCausalLM:
    """Random-init Llama whose vocabulary and special ids match ``tokenizer``."""
    torch.manual_seed(seed)
    kwargs = dict(llama_kwargs)
    kwargs.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(LlamaConfig(**kwargs))


def pack_blocks(texts: Sequence[str], tokenizer: PreTrainedTokenizerFast, block: int) -> torch.Tensor:
    """Tokenise, join with EOS and cut into (N, block) rows (the tail is dropped). # (N, block)"""
    eos = int(tokenizer.eos_token_id)
    ids: list[int] = []
    for enc in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    n = len(ids) // block
    if n == 0:
        ids = ids + [eos] * (block - len(ids))
        n = 1
    return torch.tensor(ids[: n * block], dtype=torch.long).view(n, block)


def pretrain_lm(
    texts: Sequence[str],
    llama_kwargs: dict[str, Any],
    cfg: LMPretrainConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    progress: bool = True,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Train tokenizer + LM; writes ``out_dir/{tokenizer,model}`` and ``out_dir/curve.jsonl``.

    When ``out_dir/model`` exists the finished LM is loaded instead of retrained.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir, model_dir = out_dir / "tokenizer", out_dir / "model"
    if (model_dir / "config.json").exists() and tok_dir.exists():
        tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
        return LlamaForCausalLM.from_pretrained(model_dir), tok
    seed_everything(seed)
    if tok_dir.exists():
        tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    else:
        tok = train_tokenizer(texts, vocab_size=cfg.vocab_size)
        tok.save_pretrained(tok_dir)
    model = build_llama(llama_kwargs, tok, seed)
    blocks = pack_blocks(texts, tok, cfg.max_len)  # (N, max_len)
    steps_per_epoch = math.ceil(len(blocks) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ckpt_path = out_dir / "checkpoint.pt"
    log = CurveLog(out_dir / "curve.jsonl")
    start_epoch, step = 0, 0
    state = load_checkpoint(ckpt_path)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["rng"])
    model.train()
    t0 = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(blocks), generator=gen)
        bar = tqdm(
            range(steps_per_epoch), desc=f"lm-pretrain e{epoch + 1}/{cfg.epochs}", disable=not progress
        )
        for i in bar:
            batch = blocks[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]  # (b, max_len)
            out = model(input_ids=batch, labels=batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            loss = float(out.loss.detach())
            bar.set_postfix(loss=f"{loss:.3f}")
            log.write(
                stage="lm_pretrain",
                epoch=epoch,
                step=step,
                loss=loss,
                lr=sched.get_last_lr()[0],
                elapsed_s=round(time.monotonic() - t0, 2),
            )
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "rng": torch.get_rng_state(),
            },
        )
    model.eval()
    model.save_pretrained(model_dir)
    return model, tok
