"""GPU check: the LLM stage of an 8-item assessment, embedded transformers vs vLLM with prompt embeddings.

An 8B-shaped Llama (LLaMA-3-8B config, random weights, bf16) gets, per assessment, 8 item prompts of
64 soft tokens + ~1,500 text tokens each, as prompt EMBEDDINGS (what the stream server sends), and
generates ``--new-tokens`` tokens per item (EOS ignored, so both engines do the same work).
Concurrency 1, 8 and 32 = that many assessments submitted at once:

- embedded: transformers ``generate(inputs_embeds=…)``, one assessment (8 items, one batch) at a time,
  as the server's embedded backend serialises generation; latency = queueing + own generation;
- vLLM (only if ``import vllm`` works here): ``AsyncLLM`` with ``enable_prompt_embeds=True``,
  ``load_format="dummy"``, prefix caching off, all 8·N item requests in flight (continuous batching).

Prints p50/p95 latency to the final item of each assessment and generated tokens/s, then one JSON line
(also written to ``$OUT/gpu_vllm.json`` when ``OUT`` is set; the current result is kept as
``bench/results/gpu_vllm.json``). Self-contained (torch + transformers
[+ vllm]); no project imports, so it runs in the vLLM venv too.

    python bench/gpu_vllm.py                 # on the GPU machine
    python bench/gpu_vllm.py --tiny          # same code, tiny config, CPU (a smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

LLAMA3_8B: dict[str, Any] = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
TINY: dict[str, Any] = {
    **LLAMA3_8B,
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,  # vLLM's CPU attention needs head_dim >= 32
    "max_position_embeddings": 1024,
}
ITEMS = 8
SOFT_TOKENS = 64


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float], tokens: int, wall: float) -> dict[str, float]:
    return {
        "p50_s": round(pct(latencies, 0.5), 3),
        "p95_s": round(pct(latencies, 0.95), 3),
        "mean_s": round(statistics.fmean(latencies), 3),
        "gen_tokens_per_s": round(tokens / wall, 1),
        "wall_s": round(wall, 2),
    }


def make_prompts(n: int, d: int, text_tokens: int, device: str, seed: int) -> list[list[torch.Tensor]]:
    """n assessments × 8 items of (64 + ~text_tokens, d) bf16 embeddings, lengths varied ±10 %."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for _ in range(n):
        items = []
        for _ in range(ITEMS):
            length = SOFT_TOKENS + int(
                text_tokens * (0.9 + 0.2 * torch.rand(1, generator=g, device=device).item())
            )
            embeds = torch.randn(length, d, generator=g, device=device) * 0.02
            items.append(embeds.to(torch.bfloat16))  # (L, d)
        out.append(items)
    return out


def payload_figures(prompts: list[list[torch.Tensor]]) -> dict[str, float]:
    """What the stream server would send over HTTP: base64(torch.save(bf16 (L, d))) per item."""
    item = prompts[0][0].cpu().contiguous().clone()
    buf = io.BytesIO()
    torch.save(item, buf)
    b64 = len(base64.b64encode(buf.getvalue()))
    return {
        "item_tokens": item.shape[0],
        "item_raw_bytes": len(buf.getvalue()),
        "item_base64_bytes": b64,
        "assessment_base64_mib": round(8 * b64 / 2**20, 2),
    }


# ---------------------------------------------------------------------------------------- embedded


def build_hf(cfg: dict[str, Any], device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly (an fp32 8B would need 32 GB first)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    finally:
        torch.set_default_dtype(default)
    return model


def run_embedded(
    model: Any, prompts: list[list[torch.Tensor]], new_tokens: int, device: str
) -> dict[str, float]:
    """Assessments served one at a time (8 items per generate), all submitted at t=0."""

    def one(items: list[torch.Tensor]) -> int:
        length = max(e.shape[0] for e in items)
        embeds = items[0].new_zeros(len(items), length, items[0].shape[-1])  # (8, L, d) left-padded
        mask = torch.zeros(len(items), length, dtype=torch.long, device=device)  # (8, L)
        for i, e in enumerate(items):
            embeds[i, length - e.shape[0] :] = e
            mask[i, length - e.shape[0] :] = 1
        with torch.inference_mode():
            out = model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )  # (8, new_tokens)
        return int(out.shape[0] * out.shape[1])

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    latencies, tokens = [], 0
    sync()
    t0 = time.perf_counter()
    for items in prompts:
        tokens += one(items)
        sync()
        latencies.append(time.perf_counter() - t0)
    return summary(latencies, tokens, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- vLLM


def write_model_dir(cfg: dict[str, Any]) -> Path:
    """config.json (+ a byte-level tokenizer for detokenisation) for ``load_format="dummy"``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    root = Path(tempfile.mkdtemp(prefix="gpu_vllm_model_"))
    LlamaConfig(**cfg).save_pretrained(root)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["Evaluation Result: 2. Evaluation Reason: sleep is poor."] * 10, trainer=trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    ).save_pretrained(root)
    return root


async def run_vllm_async(engine: Any, prompts: list[list[torch.Tensor]], new_tokens: int) -> dict[str, float]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)

    async def item(embeds: torch.Tensor) -> int:
        n = 0
        async for out in engine.generate({"prompt_embeds": embeds.cpu()}, params, uuid.uuid4().hex):
            n = len(out.outputs[0].token_ids)
        return n

    t0 = time.perf_counter()

    async def assessment(items: list[torch.Tensor]) -> tuple[float, int]:
        counts = await asyncio.gather(*(item(e) for e in items))
        return time.perf_counter() - t0, sum(counts)

    results = await asyncio.gather(*(assessment(items) for items in prompts))
    wall = time.perf_counter() - t0
    return summary([r[0] for r in results], sum(r[1] for r in results), wall)


def start_vllm(model_dir: Path, tiny: bool, max_len: int) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=str(model_dir),
        load_format="dummy",
        enable_prompt_embeds=True,
        enable_prefix_caching=False,
        dtype="float32" if tiny else "bfloat16",
        max_model_len=max_len,
        gpu_memory_utilization=0.85,
        enforce_eager=tiny,
        disable_log_stats=True,
    )
    return AsyncLLM.from_engine_args(args)


async def vllm_suite(
    model_dir: Path,
    tiny: bool,
    max_len: int,
    warm: list[list[torch.Tensor]],
    prompt_sets: list[list[list[torch.Tensor]]],
    new_tokens: int,
) -> dict[str, Any]:
    """One event loop for the engine's whole life (AsyncLLM binds its output handler to it)."""
    t0 = time.perf_counter()
    engine = start_vllm(model_dir, tiny, max_len)
    out: dict[str, Any] = {"start_s": round(time.perf_counter() - t0, 1)}
    print(f"[vllm] engine up in {out['start_s']} s", flush=True)
    try:
        await run_vllm_async(engine, warm, new_tokens)
        for prompts in prompt_sets:
            fig = await run_vllm_async(engine, prompts, new_tokens)
            out[str(len(prompts))] = fig
            print(f"[vllm] concurrency {len(prompts)}: {fig}", flush=True)
    finally:
        engine.shutdown()
    return out


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke test)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--text-tokens", type=int, default=None, help="text tokens per item (default 1500)")
    ap.add_argument("--new-tokens", type=int, default=None, help="generated tokens per item (default 96)")
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--skip-vllm", action="store_true")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    cfg = TINY if args.tiny else LLAMA3_8B
    text_tokens = args.text_tokens or (200 if args.tiny else 1500)
    new_tokens = args.new_tokens or (8 if args.tiny else 96)
    levels = [int(c) for c in args.concurrency.split(",")]
    result: dict[str, Any] = {
        "bench": "gpu_vllm",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": " ".join(["python", *sys.argv]),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "tiny" if args.tiny else "llama-3-8b-shaped (random, bf16)",
        "items": ITEMS,
        "soft_tokens": SOFT_TOKENS,
        "text_tokens": text_tokens,
        "new_tokens": new_tokens,
        "embedded": {},
        "vllm": {},
    }
    result["payload"] = payload_figures(make_prompts(1, cfg["hidden_size"], text_tokens, "cpu", 0))
    print(f"[gpu_vllm] device {result['device']}; payload per item {result['payload']}", flush=True)

    if not args.skip_embedded:
        t0 = time.perf_counter()
        model = build_hf(cfg, device)
        print(f"[embedded] model built in {time.perf_counter() - t0:.1f} s", flush=True)
        run_embedded(
            model, make_prompts(1, cfg["hidden_size"], text_tokens, device, 99), new_tokens, device
        )  # warm
        for n in levels:
            fig = run_embedded(
                model, make_prompts(n, cfg["hidden_size"], text_tokens, device, n), new_tokens, device
            )
            result["embedded"][str(n)] = fig
            print(f"[embedded] concurrency {n}: {fig}", flush=True)
        if device == "cuda":
            result["embedded"]["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    has_vllm = importlib.util.find_spec("vllm") is not None
    result["vllm_available"] = has_vllm
    if not has_vllm:
        print("[vllm] not installed on this machine: vLLM figures skipped", flush=True)
    elif not args.skip_vllm:
        max_len = SOFT_TOKENS + int(text_tokens * 1.1) + new_tokens + 16
        prompt_sets = [make_prompts(n, cfg["hidden_size"], text_tokens, "cpu", n) for n in levels]
        warm = make_prompts(1, cfg["hidden_size"], text_tokens, "cpu", 99)
        result["vllm"] = asyncio.run(
            vllm_suite(write_model_dir(cfg), args.tiny, max_len, warm, prompt_sets, new_tokens)
        )

    line = json.dumps(result)
    print(line)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_vllm.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
