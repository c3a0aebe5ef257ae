"""GPU check on an 8B-shaped Llama (random init from the LLaMA-3-8B config, bf16): one prepared script.

Measures, with the project's own classes (MLlmDR: LQ-formers + LoRA r=16 on q_proj/v_proj + MAA):
1. the embedded transformers backend: 8-item assessments, each item 64 soft tokens + ~1,500 text tokens,
   at concurrency 1, 8 and 32 (sessions submitted at once; one worker serves one session's 8 items per
   ``generate`` — the server's embedded path — and, separately, up to 8 sessions per call), printing
   p50/p95 latency to the final assessment and generated tokens/s;
2. a stage-2 training step (joint loss a·LM + (1−a)·MSE, LoRA + MAA + LQ-formers trainable) on one
   session's 8 items, printing step time and peak memory;
3. whether vLLM is importable on this machine (its figures need ``bench/gpu_vllm.py``).

Usage: ``python bench/gpu_check.py [--tiny]`` (``--tiny`` runs the same code on a tiny config on CPU).
Prints a JSON summary on the last line and writes it to ``$OUT/gpu_check.json`` when ``OUT`` is set
(the current result is kept as ``bench/results/gpu_check.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from mllmdr_core.backends.base import ItemRequest
from mllmdr_core.backends.transformers_backend import TransformersBackend
from mllmdr_core.config import LLMConfig, LoRAConfig, LQFormerConfig, MAAConfig, MllmdrConfig
from mllmdr_core.model.mllm import MLlmDR, MultimodalBatch
from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN, train_tokenizer

LLAMA3_8B: dict[str, Any] = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY_LLAMA: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
AUDIO_DIM, VISUAL_DIM = 768, 40  # HuBERT-base hidden size; a mediapipe-face-sized visual vector
ITEMS = 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def build(tiny: bool, device: torch.device) -> MLlmDR:
    tokenizer = train_tokenizer(["how are you feeling today", "i sleep badly and feel tired"], vocab_size=300)
    llama = dict(TINY_LLAMA if tiny else LLAMA3_8B)
    cfg = MllmdrConfig(
        lqformer=LQFormerConfig(dropout=0.0),
        maa=MAAConfig(),
        llm=LLMConfig(llama=llama, lora=LoRAConfig(), dtype="bfloat16", max_new_tokens=64),
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with device:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            from transformers import LlamaConfig, LlamaForCausalLM

            base = LlamaForCausalLM(
                LlamaConfig(
                    pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **llama,
                )
            )
            model = MLlmDR(cfg, AUDIO_DIM, VISUAL_DIM, tokenizer, llm=base)
        finally:
            torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype)


def session_requests(model: MLlmDR, text_tokens: int, device: torch.device) -> list[ItemRequest]:
    """8 item prompts: ~``text_tokens`` text tokens + 32 audio + 32 visual soft tokens each."""
    vocab = int(model.llm.get_input_embeddings().weight.shape[0])
    tok = model.tokenizer
    slots = tok.convert_tokens_to_ids([AUDIO_TOKEN, VIDEO_TOKEN])
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(10, min(vocab, len(tok)) - 2, (ITEMS, text_tokens), generator=gen)  # (8, L)
    ids[:, text_tokens // 2] = slots[0]
    ids[:, text_tokens // 2 + 1] = slots[1]
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    dtype = next(model.parameters()).dtype
    audio = torch.randn(1, 300, AUDIO_DIM, device=device, dtype=dtype)  # (1, Ta, Da): 60 s at 5 Hz
    visual = torch.randn(1, 300, VISUAL_DIM, device=device, dtype=dtype)  # (1, Tv, Dv)
    with torch.inference_mode():
        a_tok, v_tok = model.encode_modalities(audio, None, visual, None)  # (1, 32, d) each
        embeds, emask, _ = model.splice(ids, mask, a_tok, v_tok)  # (8, L+62, d)
    return [ItemRequest(item_key=f"item{i}", embeds=embeds[i, emask[i].bool()]) for i in range(ITEMS)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_embedded(
    backend: TransformersBackend, reqs: list[ItemRequest], concurrency: int, sessions_per_call: int,
    device: torch.device,
) -> dict[str, float]:
    """All ``concurrency`` sessions arrive at t0; one worker serves ``sessions_per_call`` per generate."""
    latencies: list[float] = []
    generated = 0
    sync(device)
    t0 = time.perf_counter()
    remaining = concurrency
    while remaining:
        n = min(sessions_per_call, remaining)
        outs = backend.generate(reqs * n)
        sync(device)
        done = time.perf_counter() - t0
        latencies += [done] * n
        generated += sum(o.generated_tokens for o in outs)
        remaining -= n
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "sessions_per_call": sessions_per_call,
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "generated_tokens_per_s": round(generated / wall, 1),
        "wall_s": round(wall, 2),
    }


def train_step(model: MLlmDR, text_tokens: int, device: torch.device, steps: int) -> dict[str, float]:
    model.train()
    # renamed activation_checkpointing_enable in transformers 5.x; the GPU image may have either
    enable = getattr(model.llm, "activation_checkpointing_enable", None)
    (enable or model.llm.gradient_checkpointing_enable)()
    model.llm.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    reqs_ids = torch.randint(10, 250, (ITEMS, text_tokens), device=device)
    slots = model.tokenizer.convert_tokens_to_ids([AUDIO_TOKEN, VIDEO_TOKEN])
    reqs_ids[:, 10], reqs_ids[:, 11] = slots[0], slots[1]
    labels = reqs_ids.clone()
    labels[:, : text_tokens - 64] = -100  # the last 64 tokens are the rationale target
    dtype = next(model.llm.parameters()).dtype
    batch = MultimodalBatch(
        input_ids=reqs_ids,
        attention_mask=torch.ones_like(reqs_ids),
        labels=labels,
        audio=torch.randn(ITEMS, 300, AUDIO_DIM, device=device, dtype=dtype),
        audio_mask=torch.ones(ITEMS, 300, dtype=torch.bool, device=device),
        visual=torch.randn(ITEMS, 300, VISUAL_DIM, device=device, dtype=dtype),
        visual_mask=torch.ones(ITEMS, 300, dtype=torch.bool, device=device),
        target_score=torch.rand(ITEMS, device=device) * 3,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        out = model(batch, alpha=0.5)
        assert out.loss is not None
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    trainable = sum(p.numel() for p in params)
    return {
        "batch_items": ITEMS,
        "tokens_per_item": text_tokens + 62,
        "step_s_first": round(times[0], 3),
        "step_s_median_rest": round(statistics.median(times[1:]) if len(times) > 1 else times[0], 3),
        "peak_mem_gib": round(peak, 2),
        "trainable_params_m": round(trainable / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (a smoke run)")
    parser.add_argument("--text-tokens", type=int, default=1500)
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    text_tokens = 64 if args.tiny else args.text_tokens
    summary: dict[str, Any] = {
        "bench": "gpu_check",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": " ".join(["python", *sys.argv]),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "tiny" if args.tiny else "LLaMA-3-8B config, random init, bf16, LoRA r=16 q_proj/v_proj",
        "vllm_importable": importlib.util.find_spec("vllm") is not None,
    }
    t = time.perf_counter()
    model = build(args.tiny, device)
    summary["build_s"] = round(time.perf_counter() - t, 1)
    backend = TransformersBackend(model, max_new_tokens=8 if args.tiny else 64)
    reqs = session_requests(model, text_tokens, device)
    backend.generate(reqs)  # warm-up
    runs = []
    for concurrency in (1, 8, 32):
        runs.append(run_embedded(backend, reqs, concurrency, 1, device))
        print(json.dumps(runs[-1]), flush=True)
    for concurrency in (8, 32):
        runs.append(run_embedded(backend, reqs, concurrency, 8, device))
        print(json.dumps(runs[-1]), flush=True)
    summary["embedded"] = runs
    summary["train_step"] = train_step(model, text_tokens, device, args.train_steps)
    print(json.dumps(summary["train_step"]), flush=True)
    line = json.dumps(summary)
    print(line)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
