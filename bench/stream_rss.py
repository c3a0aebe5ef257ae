"""Stream-server process memory with an LLaMA-3-8B-shaped bundle: LLM in the process vs served by vLLM.

"after": ``MLLMDR_LLM_BACKEND=vllm-native`` — the real ``python -m stream_server`` process loads an
8B-shaped bundle with ``load_bundle(path, llm_weights=False)``: the LLM is a shell on the meta device
(0 parameters), the tokenizer, HuBERT-base-sized encoder, paper-sized LQ-formers (d→2048→4096) and MAA
head are real. No vLLM runs: the server starts without contacting it.

"before": the embedded backend loads the LLM into the process. An 8B model in bf16 (~16 GB) does not fit
this shared machine, so it is measured on a proportionally scaled LLaMA-3.2-1B-shaped bundle (random
bf16 weights in the bundle), which is also measured "after" (same bundle, ``vllm-native``); the 8B
"before" is then *estimated* as the 8B "after" RSS + the 8B shell's parameter count × 2 bytes, and the
1B pair shows how well "after + params × 2 bytes" predicts a measured "before".

Run: ``.venv/bin/python bench/stream_rss.py`` (``--skip-before``: the 8B "after" only). Bundles are cached
under var/bench/. Prints one JSON object as its last line; ``bench/results/stream_rss.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from common import CACHE, server_process, write_result

# LlamaConfig kwargs: LLaMA-3-8B and LLaMA-3.2-1B shapes (vocab 128,256 as the Llama-3 tokenizer's).
SHAPES: dict[str, dict[str, Any]] = {
    "8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
        tie_word_embeddings=False,
    ),
    "1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=8192,
        rope_theta=500000.0, tie_word_embeddings=True,
    ),
}  # fmt: skip
NO_VLLM = "http://127.0.0.1:9"  # never contacted: the server does not call vLLM before an assessment
MB = 1e6


def _config(shape: str, llm_dir: Path | None) -> Any:
    """The paper's sizes (HuBERT-base-sized encoder, LQ-former 4 layers, MAA 1024) with ``shape``'s LLM:
    ``llm_dir`` (config only) as a reference LLM, else random bf16 weights in the bundle; no LoRA."""
    from mllmdr_core.config import LLMConfig, LoRAConfig, MllmdrConfig

    llm = LLMConfig(
        model=str(llm_dir) if llm_dir else None,
        llama={} if llm_dir else dict(SHAPES[shape]),
        lora=LoRAConfig(r=0),
        dtype="bfloat16",
    )
    return MllmdrConfig(llm=llm)


def _llm_dir(shape: str) -> Path:
    """A Hugging Face model dir with ``shape``'s config.json and no weights (what the shell is built from)."""
    from transformers import LlamaConfig

    out = CACHE / f"llm-config-{shape}"
    if not (out / "config.json").is_file():
        LlamaConfig(**SHAPES[shape], torch_dtype="bfloat16").save_pretrained(out)
    return out


def _shell_llm(shape: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**SHAPES[shape])).to(torch.bfloat16)


def llm_params(shape: str) -> int:
    """Parameters of ``shape``'s LLM (counted on the meta device: nothing allocated)."""
    return sum(p.numel() for p in _shell_llm(shape).parameters())


def build_bundle(shape: str, *, llm_weights: bool) -> Path:
    """The cached bundle: ``llm_weights`` random bf16 LLM weights in it ("1b" here; "8b", ~16 GB, for
    ``bench/vllm_native.py`` on a GPU machine), else the LLM is a reference to a config-only dir
    (loadable only with ``llm_weights=False``)."""
    import torch

    from mllmdr_core.bundle import is_bundle, save_bundle
    from mllmdr_core.features.encoder import build_hubert
    from mllmdr_core.features.spec import extractor_spec
    from mllmdr_core.model.mllm import MLlmDR
    from mllmdr_core.model.tokenizer import train_tokenizer
    from mllmdr_core.testing import tiny_corpus

    path = CACHE / f"bundle-llm{shape}-{'weights' if llm_weights else 'shell'}"
    if is_bundle(path):
        return path
    cfg = _config(shape, None if llm_weights else _llm_dir(shape))
    tokenizer = train_tokenizer(tiny_corpus(), vocab_size=1000)
    spec = extractor_spec(cfg)
    llm = _shell_llm(shape)
    if llm_weights:  # allocate bf16 directly (an fp32 init would need twice the memory), small random values
        llm = llm.to_empty(device="cpu")
        llm.tie_weights()  # to_empty gives the tied lm_head its own storage
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in llm.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.02).to(p.dtype))
    torch.manual_seed(0)
    model = MLlmDR(cfg, spec.audio_dim, spec.visual_dim, tokenizer, llm=llm).eval()
    return save_bundle(
        path,
        model=model,
        tokenizer=tokenizer,
        config=cfg,
        audio_encoder=build_hubert(cfg.audio, seed=0),
        feature_spec=spec,
        training_data=f"none (random init, LLaMA-{shape.upper()}-shaped LLM; benchmark only)",
        non_clinical=True,
    )


def _hwm_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


async def measure(bundle: Path, backend: str, work: Path, settle_s: float = 5.0) -> dict[str, Any]:
    """Start the real stream server on ``bundle``, wait for /readyz and ``settle_s``; its memory."""
    import psutil  # local: build_bundle (bench/vllm_native.py) runs where psutil may be missing
    env = {"llm_backend": backend}
    if backend == "vllm-native":
        env |= {"vllm_url": NO_VLLM, "vllm_model": "mllmdr", "vllm_maa_url": NO_VLLM, "vllm_maa_model": "m"}
    t0 = time.perf_counter()
    async with server_process(bundle, work, ready_s=900.0, **env) as server:
        ready_s = time.perf_counter() - t0
        await asyncio.sleep(settle_s)
        proc = psutil.Process(server.proc.pid)
        rss = proc.memory_info().rss / MB
        children = 0.0
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                children += child.memory_info().rss / MB
        hwm = _hwm_mb(server.proc.pid)
    return {
        "backend": backend,
        "bundle": bundle.name,
        "rss_mb": round(rss),
        "peak_rss_mb": round(hwm),
        "children_rss_mb": round(children),  # the speech-to-text process
        "ready_s": round(ready_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-before", action="store_true", help="only the 8B-shaped 'after'")
    args = parser.parse_args()
    work = CACHE / "stream-rss"
    params = {shape: llm_params(shape) for shape in SHAPES}
    runs: dict[str, dict[str, Any]] = {}
    runs["after_8b"] = asyncio.run(measure(build_bundle("8b", llm_weights=False), "vllm-native", work / "a8"))
    print(json.dumps(runs["after_8b"]), flush=True)
    if not args.skip_before:
        scaled = build_bundle("1b", llm_weights=True)
        runs["before_1b"] = asyncio.run(measure(scaled, "transformers", work / "b1"))
        print(json.dumps(runs["before_1b"]), flush=True)
        runs["after_1b"] = asyncio.run(measure(scaled, "vllm-native", work / "a1"))
        print(json.dumps(runs["after_1b"]), flush=True)
    after = runs["after_8b"]
    result: dict[str, Any] = {
        "llm_params": params,
        "stream_llm_params_after": 0,  # load_bundle(llm_weights=False): every LLM parameter on meta
        "runs": runs,
        "after_8b_rss_mb": after["rss_mb"],
        # estimated, not measured: the 8B "after" process + the LLM's bf16 weights; the peak + 4 bytes per
        # parameter, because the embedded load builds the LLM in fp32 before casting it (bundle._load_llm)
        "before_8b_rss_mb_estimated": round(after["rss_mb"] + params["8b"] * 2 / MB),
        "before_8b_peak_rss_mb_estimated": round(after["peak_rss_mb"] + params["8b"] * 4 / MB),
    }
    if "before_1b" in runs:  # how well those two rules predict the measured 1B-shaped pair
        before, after_1b = runs["before_1b"], runs["after_1b"]
        result["check_1b"] = {
            "rss_diff_mb": before["rss_mb"] - after_1b["rss_mb"],
            "params_x2_mb": round(params["1b"] * 2 / MB),
            "peak_diff_mb": before["peak_rss_mb"] - after_1b["peak_rss_mb"],
            "params_x4_mb": round(params["1b"] * 4 / MB),
        }
    write_result("stream_rss", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
