"""vLLM-native serving: the project's vLLM plugin (soft tokens as multimodal embeddings, MAA as pooler).

``--tiny`` (CPU, needs ``.venv-vllm`` from ``scripts/setup_vllm.sh``; run with the project's ``.venv``):
builds a tiny random-init bundle (Llama head_dim 32), exports it for the plugin, starts two vLLM CPU
servers from this source tree (generation, and the pooling variant serving the MAA head), loads the
bundle WITHOUT LLM weights on the "stream server" side and runs assessments through the ``Assessor``
with ``VLLMNativeBackend``; the embedded transformers backend on the full bundle is the reference.
Last line: one JSON object with

- ``payload_bytes_per_assessment_d4096``: JSON bodies of one assessment (the batched generation request
  + the MAA request, each carrying the tensors once) built by the backend for this snapshot's prompts at
  d_llm = 4096: the default wire, the LQ-formers' (32, d_lq) outputs at the paper's widths (768 audio,
  32 visual), which the plugin projects; ``..._detail``: also (32, 4096) bf16 soft tokens sent once or
  with every item, generation alone, and the same prompts as whole prompt embeddings (``VLLMBackend``);
- ``stream_llm_params``: LLM parameters in this (stream-server) process: 0;
- ``maa_from_server`` and ``maa_max_abs_diff`` vs the embedded backend; ``text_equal`` (both layouts);
- ``prefill_tokens_per_assessment``: tokens the generation server computed (prompt tokens minus its
  prefix-cache hits, from its ``/metrics``) for one assessment of a new session on a warm server, with
  the paper's layout (``per_item``) and with ``assess.shared_prefix_prompts`` (``shared_prefix``);
  ``detail`` also gives the prompt tokens and the MAA pooling server's (no prefix cache there);
- ``latency_ms_per_assessment`` p50/p95 over ``--runs`` (tiny model, this CPU: a smoke figure).

Without ``--tiny`` there is no GPU path yet: use ``bench/gpu_vllm.py`` for the 8B-shaped embedded figures.

    .venv/bin/python bench/vllm_native.py --tiny
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mllmdr_core.assess import Assessor  # noqa: E402
from mllmdr_core.backends.base import SoftPromptRequest, SoftTokens  # noqa: E402
from mllmdr_core.backends.merge import export_bundle  # noqa: E402
from mllmdr_core.backends.vllm_backend import encode_prompt_embeds  # noqa: E402
from mllmdr_core.backends.vllm_native import VLLMNativeBackend  # noqa: E402
from mllmdr_core.backends.vllm_plugin.serve import LocalServer  # noqa: E402
from mllmdr_core.bundle import LoadedBundle, llm_params_loaded, load_bundle  # noqa: E402
from mllmdr_core.frames import TranscriptLine  # noqa: E402
from mllmdr_core.phq8 import ITEM_KEYS  # noqa: E402
from mllmdr_core.snapshot import SessionSnapshot  # noqa: E402
from mllmdr_core.testing import build_tiny_bundle, tiny_config  # noqa: E402

VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
D_BIG = 4096
TRANSCRIPT = [
    TranscriptLine(1.0, 3.0, "clinician", "How easy is it for you to get a good night's sleep?"),
    TranscriptLine(3.5, 5.5, "patient", "Not easy, I wake up at three every night."),
    TranscriptLine(8.0, 10.0, "clinician", "Have you noticed any changes in your appetite?"),
    TranscriptLine(10.5, 12.5, "patient", "I barely eat anything these days."),
]


PAPER_INPUT_DIMS = {"audio": 768, "video": 32}  # LQ-former widths: HuBERT-base, visual-v2 (paper.yaml)


def payload_d4096(prompts: list[str], prompt_tokens: list[int], wire_dtype: str) -> dict[str, int]:
    """Bytes per assessment at d_llm = 4096 for these prompts, generation + MAA request: the default
    (the server projects: the LQ-formers' (32, d_lq) outputs at the paper's widths, sent once per
    request), (32, 4096) soft tokens sent once or with every item, and the prompt embeddings of every
    item (``VLLMBackend``)."""
    items = [SoftPromptRequest(k, p) for k, p in zip(ITEM_KEYS, prompts, strict=True)]
    big = SoftTokens(torch.randn(32, D_BIG), torch.randn(32, D_BIG))
    latents = SoftTokens(*(torch.randn(32, PAPER_INPUT_DIMS[m]) for m in ("audio", "video")))
    cases = {
        "server_projection": (latents, True, PAPER_INPUT_DIMS),
        "soft_tokens_shared": (big, True, None),
        "soft_tokens_per_item": (big, False, None),
    }
    out = {}
    for name, (soft, shared, dims) in cases.items():
        backend = VLLMNativeBackend(
            "http://127.0.0.1:9",
            "m",
            hidden_size=D_BIG,
            share_soft_tokens=shared,
            input_dims=dims,
            wire_dtype=wire_dtype if dims else "bfloat16",
        )
        try:
            convs = backend.conversations(items, soft)
            gen = [{**backend.payload(items[0], []), "messages": convs}] if shared else [
                {**backend.payload(r, []), "messages": c} for r, c in zip(items, convs, strict=True)
            ]  # fmt: skip
            maa = {"model": "m", "messages": convs, "add_special_tokens": True}
            gen_bytes = sum(len(json.dumps(b)) for b in gen)
            out[name] = gen_bytes + len(json.dumps(maa))
            out[f"{name}_generation_only"] = gen_bytes
        finally:
            backend.close()
    out["prompt_embeds"] = sum(len(encode_prompt_embeds(torch.zeros(n, D_BIG))) for n in prompt_tokens)
    return out


def counter(url: str, name: str) -> float:
    """The sum of a Prometheus counter over its labels on a vLLM server's ``/metrics``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def prefill(assessor: Assessor, snapshot: SessionSnapshot, gen_url: str, maa_url: str) -> dict[str, int]:
    """Prompt tokens and tokens actually computed (prompt - prefix-cache hits) by the generation server,
    and the MAA server's prompt tokens, for one assessment of a new session (soft tokens and transcript
    not seen before) on a warm server: what a prefix cache saves in steady state, in both layouts."""
    names = ("vllm:prompt_tokens_total", "vllm:prompt_tokens_cached_total")
    before = [counter(gen_url, n) for n in names] + [counter(maa_url, names[0])]
    assessor.assess(snapshot, session_id="prefill", kind="checkpoint")
    after = [counter(gen_url, n) for n in names] + [counter(maa_url, names[0])]
    prompt, cached, maa = (int(a - b) for a, b in zip(after, before, strict=True))
    return {"prompt": prompt, "computed": prompt - cached, "maa_server": maa}


def with_layout(bundle: LoadedBundle, shared_prefix: bool) -> LoadedBundle:
    config = copy.deepcopy(bundle.config)
    config.assess.shared_prefix_prompts = shared_prefix
    return dataclasses.replace(bundle, config=config)


def run_tiny(runs: int) -> dict[str, object]:
    if not VLLM_PY.exists():
        raise SystemExit(f"{VLLM_PY} missing: run scripts/setup_vllm.sh")
    tmp = Path(tempfile.mkdtemp(prefix="vllm-native-"))
    cfg = tiny_config()
    cfg.llm.llama.update(num_attention_heads=2, num_key_value_heads=2, head_dim=32)
    path = build_tiny_bundle(tmp / "bundle", config=cfg)
    full = load_bundle(path)
    export = export_bundle(path, tmp / "export", plugin=True)  # as `python -m ...merge B OUT --plugin`
    light = load_bundle(path, llm_weights=False)

    def snapshot_of(seed: int) -> SessionSnapshot:
        rng = np.random.default_rng(seed)
        return SessionSnapshot.of(
            audio=rng.standard_normal((300, light.model.audio_dim)).astype(np.float32),
            visual=rng.standard_normal((300, light.model.visual_dim)).astype(np.float32),
            transcript=[dataclasses.replace(ln, text=f"{ln.text} ({seed})") for ln in TRANSCRIPT]
            if seed
            else TRANSCRIPT,
            window=(0.0, 60.0),
        )

    snapshot = snapshot_of(0)
    t0 = time.perf_counter()
    gen = LocalServer(VLLM_PY, export, tmp / "gen", source_root=REPO, served_model_name="mllmdr")
    maa = LocalServer(
        VLLM_PY, export, tmp / "maa", source_root=REPO, served_model_name="mllmdr-maa", mode="maa"
    )
    start_s = time.perf_counter() - t0
    layouts: dict[str, dict[str, int]] = {}
    try:
        backend = VLLMNativeBackend.from_bundle(
            gen.url, light, "mllmdr", maa_url=maa.url, maa_model_name="mllmdr-maa", max_tokens=16
        )
        assessor = Assessor(light, backend)
        assessor.assess(snapshot, session_id="warm", kind="checkpoint")
        latencies, result = [], None
        for i in range(runs):
            t1 = time.perf_counter()
            result = assessor.assess(snapshot, session_id=f"s{i}", kind="checkpoint")
            latencies.append((time.perf_counter() - t1) * 1000)
        assert result is not None
        prompts = assessor.prompts(snapshot)
        texts = [prompts[k].text for k in ITEM_KEYS]
        slots = SoftTokens(torch.zeros(32, 1), torch.zeros(32, 1))
        prompt_tokens = [backend.prompt_length(t, slots) for t in texts]
        for name, shared_prefix in (("per_item", False), ("shared_prefix", True)):  # new soft tokens each
            layout = Assessor(with_layout(light, shared_prefix), backend)
            layouts[name] = prefill(layout, snapshot_of(1 + shared_prefix), gen.url, maa.url)
        shared = Assessor(with_layout(light, True), backend)
        shared_remote = shared.assess(snapshot, session_id="x", kind="final")
        wire = str(backend.wire_dtype).removeprefix("torch.")
        backend.close()
    finally:
        gen.stop()
        maa.stop()
    full.config.llm.max_new_tokens = 16
    local = Assessor(full).assess(snapshot, session_id="ref", kind="checkpoint")
    shared_local = Assessor(with_layout(full, True)).assess(snapshot, session_id="x", kind="final")
    shared_text_equal = [it.raw_text for it in shared_remote.items] == [
        it.raw_text for it in shared_local.items
    ]
    maa_remote = [it.maa_score for it in result.items]
    maa_local = [it.maa_score for it in local.items]
    diffs = [
        abs(a - b) for a, b in zip(maa_remote, maa_local, strict=True) if a is not None and b is not None
    ]
    sizes = payload_d4096(texts, prompt_tokens, wire)
    return {
        "bench": "vllm_native",
        "mode": "tiny",
        "payload_bytes_per_assessment_d4096": sizes["server_projection"],
        "payload_bytes_per_assessment_d4096_detail": sizes,
        "wire": f"LQ-former outputs (32, d_lq), d_lq {PAPER_INPUT_DIMS}, {wire}; the server projects",
        "stream_llm_params": llm_params_loaded(light.model),
        "embedded_llm_params": llm_params_loaded(full.model),
        "maa_from_server": all(v is not None for v in maa_remote),
        "maa_max_abs_diff": max(diffs) if len(diffs) == len(ITEM_KEYS) else None,
        "text_equal": [it.raw_text for it in result.items] == [it.raw_text for it in local.items],
        "text_equal_shared_prefix": shared_text_equal,
        "prefill_tokens_per_assessment": {
            "per_item": layouts["per_item"]["computed"],
            "shared_prefix": layouts["shared_prefix"]["computed"],
            "detail": layouts,
            "prefix_block_size": 32,
        },
        "latency_ms_per_assessment": {
            "p50": round(statistics.median(latencies), 1),
            "p95": round(float(np.percentile(latencies, 95)), 1),
            "runs": runs,
        },
        "server_start_s": round(start_s, 1),
        "device": "cpu (tiny random-init model, d_llm 64)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, vLLM CPU servers")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not args.tiny:
        print("only --tiny is implemented; the GPU comparison is bench/gpu_vllm.py", file=sys.stderr)
        return 2
    from common import write_result  # bench/ is sys.path[0]

    result = run_tiny(args.runs)
    write_result("vllm_native_tiny", {k: v for k, v in result.items() if k != "bench"})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
