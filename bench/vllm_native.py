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

Without ``--tiny`` (a GPU with vLLM installed; one command)::

    python bench/vllm_native.py          # = --shape 8b --sessions 1,8,32 --device cuda

builds a random-init LLaMA-3-8B-shaped bundle (hidden 4096, 32 layers, 32/8 heads, FFN 14336, vocab
128,256, bf16; the paper's LQ-formers, HuBERT-base-sized encoder: ``bench/stream_rss.py``'s
``build_bundle``, cached under ``var/bench/``), exports it for the plugin (cached too), then measures on
``--device`` the embedded transformers backend (the stream server's in-process path: one assessment's 8
items per ``generate``, assessments one at a time) and, on the same GPU, the plugin (generation server
with prefix caching + MAA pooling server, started with the project's launcher
``mllmdr_core.backends.vllm_plugin.serve``; the "stream server" side loads no LLM weights and runs the
LQ-formers on the CPU). ``--sessions`` concurrent sessions submit one 8-item assessment each at once
(items ~1,070 prompt tokens, 650-1,536; ``--answer-words`` sets the transcript's length; up to 96 new
tokens): p50/p95 latency per assessment (and of the LLM stage alone, generation + MAA: the harness runs
every session's prompt building in one process), generated tokens/s, assessments/s; then the fields above
(payload, ``stream_llm_params``, MAA, text equality, prefill tokens per layout) and the targets (payload
≤ 1 MiB at d = 4096; p95 ≤ 1.5 s at 8 sessions; plugin tokens/s ≥ 5× embedded at the largest session
count), printed as met / missed on stderr and under ``targets`` in the JSON (the last line).
``--embedded-only``: a GPU without vLLM (the embedded figures and the payload only). ``--vllm-python``:
the interpreter that has vLLM (default ``.venv-vllm`` if present, else this one: vLLM installed beside
the project). Writes ``bench/results/vllm_native_gpu.json``. Needs ~35 GB of disk (bundle + export),
~50 GB of RAM while exporting, one 80 GB GPU (the generation server takes 0.55 of it, the MAA server
0.30, once the embedded model has left it). The same code path runs on a CPU with ``--shape tiny
--device cpu`` (``tests/benchmarks/test_vllm_native.py``, sessions 1 and 2).

    .venv/bin/python bench/vllm_native.py --tiny
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mllmdr_core.assess import Assessor  # noqa: E402
from mllmdr_core.assessment import Assessment  # noqa: E402
from mllmdr_core.backends.base import ItemOutput, ItemRequest, SoftPromptRequest, SoftTokens  # noqa: E402
from mllmdr_core.backends.merge import export_bundle, export_loaded, load_serving_manifest  # noqa: E402
from mllmdr_core.backends.transformers_backend import TransformersBackend  # noqa: E402
from mllmdr_core.backends.vllm_backend import encode_prompt_embeds  # noqa: E402
from mllmdr_core.backends.vllm_native import VLLMNativeBackend  # noqa: E402
from mllmdr_core.backends.vllm_plugin.serve import LocalServer  # noqa: E402
from mllmdr_core.bundle import LoadedBundle, llm_params_loaded, load_bundle  # noqa: E402
from mllmdr_core.frames import TranscriptLine  # noqa: E402
from mllmdr_core.phq8 import ITEM_KEYS  # noqa: E402
from mllmdr_core.snapshot import SessionSnapshot  # noqa: E402
from mllmdr_core.testing import build_tiny_bundle, vllm_tiny_config  # noqa: E402

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


def tiny_bundle(root: Path) -> Path:
    """The tiny random-init bundle (Llama head_dim 32: vLLM's CPU attention needs >= 32)."""
    cfg = vllm_tiny_config()
    return build_tiny_bundle(root / "bundle", config=cfg)


def long_transcript(answer_words: int) -> list[TranscriptLine]:
    """An interview of the default script's questions, each answered in ``answer_words`` words."""
    from mllmdr_core.features.interview import DEFAULT_INTERVIEW_SCRIPT

    words = " ".join(ln.text for ln in TRANSCRIPT if ln.speaker == "patient").split()
    lines, t = [], 0.0
    for i, question in enumerate(DEFAULT_INTERVIEW_SCRIPT):
        answer = " ".join(words[(i + k) % len(words)] for k in range(answer_words))
        lines += [
            TranscriptLine(t, t + 3.0, "clinician", question),
            TranscriptLine(t + 3.5, t + 3.5 + answer_words / 3, "patient", answer),
        ]
        t += 5.0 + answer_words / 3
    return lines


def snapshot_of(bundle: LoadedBundle, seed: int, transcript: list[TranscriptLine]) -> SessionSnapshot:
    """A 60-s window of random features; seed 0: ``transcript`` as is, else each line marked with the
    seed (a new session: nothing shared with another one's prefix)."""
    rng = np.random.default_rng(seed)
    end = max(60.0, transcript[-1].end_s + 1.0)
    return SessionSnapshot.of(
        audio=rng.standard_normal((300, bundle.model.audio_dim)).astype(np.float32),
        visual=rng.standard_normal((300, bundle.model.visual_dim)).astype(np.float32),
        transcript=[dataclasses.replace(ln, text=f"{ln.text} ({seed})") for ln in transcript]
        if seed
        else transcript,
        window=(0.0, end),
    )


def start_servers(
    export: Path, work: Path, python: Path, *, gpu: bool, max_model_len: int
) -> tuple[LocalServer, LocalServer]:
    """The generation server (prefix caching on) and the MAA pooling server. On a GPU one after the other
    (vLLM sizes its memory at start-up): bf16, compiled, 0.55 / 0.30 of its memory; on a CPU both at once."""
    specs = (("plugin", "mllmdr", "0.55"), ("maa", "mllmdr-maa", "0.30"))

    def start(mode: str, name: str, share: str) -> LocalServer:
        gpu_args: dict[str, Any] = dict(
            quick_start=False, dtype="bfloat16", extra=("--gpu-memory-utilization", share), ready_s=1800.0
        )
        return LocalServer(
            python, export, work / mode, source_root=REPO, served_model_name=name, mode=mode,  # type: ignore[arg-type]
            max_model_len=max_model_len, **(gpu_args if gpu else {}),
        )  # fmt: skip

    if gpu:
        gen = start(*specs[0])
        try:
            return gen, start(*specs[1])
        except BaseException:
            gen.stop()
            raise
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start, *spec) for spec in specs]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for f in futures:
            if f.exception() is None:
                f.result().stop()
        raise errors[0]  # type: ignore[misc]
    return futures[0].result(), futures[1].result()


def native_backend(url: str, maa_url: str, light: LoadedBundle, max_tokens: int) -> VLLMNativeBackend:
    return VLLMNativeBackend.from_bundle(
        url, light, "mllmdr", maa_url=maa_url, maa_model_name="mllmdr-maa", max_tokens=max_tokens
    )


def prompt_figures(
    assessor: Assessor, backend: VLLMNativeBackend, snapshot: SessionSnapshot
) -> tuple[list[str], list[int]]:
    """The 8 item prompts of ``snapshot`` and their token counts with the 32 + 32 soft tokens."""
    prompts = assessor.prompts(snapshot)
    texts = [prompts[k].text for k in ITEM_KEYS]
    slots = SoftTokens(torch.zeros(32, 1), torch.zeros(32, 1))
    return texts, [backend.prompt_length(t, slots) for t in texts]


def layout_figures(
    light: LoadedBundle,
    backend: VLLMNativeBackend,
    gen: LocalServer,
    maa: LocalServer,
    seed: int,
    transcript: list[TranscriptLine],
) -> tuple[dict[str, dict[str, int]], Assessment]:
    """Prefill tokens of one new session's assessment in both layouts, and the shared-prefix layout's
    assessment of snapshot 0 (compared with the embedded backend's)."""
    layouts = {}
    for name, shared_prefix in (("per_item", False), ("shared_prefix", True)):  # new soft tokens each
        layout = Assessor(with_layout(light, shared_prefix), backend)
        layouts[name] = prefill(
            layout, snapshot_of(light, seed + shared_prefix, transcript), gen.url, maa.url
        )
    shared = Assessor(with_layout(light, True), backend)
    return layouts, shared.assess(snapshot_of(light, 0, transcript), session_id="x", kind="final")


def comparison(
    remote: Assessment, local: Assessment, shared_remote: Assessment, shared_local: Assessment
) -> dict[str, Any]:
    """The plugin's text and MAA scores vs the embedded backend's, for the same snapshot."""
    maa_remote = [it.maa_score for it in remote.items]
    maa_local = [it.maa_score for it in local.items]
    diffs = [
        abs(a - b) for a, b in zip(maa_remote, maa_local, strict=True) if a is not None and b is not None
    ]
    return {
        "maa_from_server": all(v is not None for v in maa_remote),
        "maa_max_abs_diff": max(diffs) if len(diffs) == len(ITEM_KEYS) else None,
        "text_equal": [it.raw_text for it in remote.items] == [it.raw_text for it in local.items],
        "text_equal_shared_prefix": [it.raw_text for it in shared_remote.items]
        == [it.raw_text for it in shared_local.items],
    }


def prefill_field(layouts: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {
        "per_item": layouts["per_item"]["computed"],
        "shared_prefix": layouts["shared_prefix"]["computed"],
        "detail": layouts,
        "prefix_block_size": 32,
    }


def payload_fields(texts: list[str], prompt_tokens: list[int], wire: str) -> dict[str, Any]:
    sizes = payload_d4096(texts, prompt_tokens, wire)
    return {
        "payload_bytes_per_assessment_d4096": sizes["server_projection"],
        "payload_bytes_per_assessment_d4096_detail": sizes,
        "wire": f"LQ-former outputs (32, d_lq), d_lq {PAPER_INPUT_DIMS}, {wire}; the server projects",
    }


def run_tiny(runs: int) -> dict[str, object]:
    if not VLLM_PY.exists():
        raise SystemExit(f"{VLLM_PY} missing: run scripts/setup_vllm.sh")
    tmp = Path(tempfile.mkdtemp(prefix="vllm-native-"))
    path = tiny_bundle(tmp)
    full = load_bundle(path)
    export = export_bundle(path, tmp / "export", plugin=True)  # as `python -m ...merge B OUT --plugin`
    light = load_bundle(path, llm_weights=False)
    snapshot = snapshot_of(light, 0, TRANSCRIPT)
    t0 = time.perf_counter()
    gen, maa = start_servers(export, tmp, VLLM_PY, gpu=False, max_model_len=1024)
    start_s = time.perf_counter() - t0
    try:
        backend = native_backend(gen.url, maa.url, light, 16)
        assessor = Assessor(light, backend)
        assessor.assess(snapshot, session_id="warm", kind="checkpoint")
        latencies, result = [], None
        for i in range(runs):
            t1 = time.perf_counter()
            result = assessor.assess(snapshot, session_id=f"s{i}", kind="checkpoint")
            latencies.append((time.perf_counter() - t1) * 1000)
        assert result is not None
        texts, prompt_tokens = prompt_figures(assessor, backend, snapshot)
        layouts, shared_remote = layout_figures(light, backend, gen, maa, 1, TRANSCRIPT)
        wire = str(backend.wire_dtype).removeprefix("torch.")
        backend.close()
    finally:
        gen.stop()
        maa.stop()
    full.config.llm.max_new_tokens = 16
    local = Assessor(full).assess(snapshot, session_id="ref", kind="checkpoint")
    shared_local = Assessor(with_layout(full, True)).assess(snapshot, session_id="x", kind="final")
    return {
        "bench": "vllm_native",
        "mode": "tiny",
        **payload_fields(texts, prompt_tokens, wire),
        "stream_llm_params": llm_params_loaded(light.model),
        "embedded_llm_params": llm_params_loaded(full.model),
        **comparison(result, local, shared_remote, shared_local),
        "prefill_tokens_per_assessment": prefill_field(layouts),
        "latency_ms_per_assessment": {
            "p50": round(statistics.median(latencies), 1),
            "p95": round(float(np.percentile(latencies, 95)), 1),
            "runs": runs,
        },
        "server_start_s": round(start_s, 1),
        "device": "cpu (tiny random-init model, d_llm 64)",
    }


# ------------------------------------------------------------------ concurrent sessions (GPU mode)


class CountingBackend(TransformersBackend):
    """The embedded backend, counting the tokens it generates (thread-safe)."""

    def __init__(self, model: Any, max_new_tokens: int) -> None:
        super().__init__(model, max_new_tokens)
        self.generated = 0
        self._count_lock = threading.Lock()

    def count(self) -> float:
        return self.generated

    def generate(self, requests: list[ItemRequest]) -> list[ItemOutput]:
        outputs = super().generate(requests)
        with self._count_lock:
            self.generated += sum(o.generated_tokens for o in outputs)
        return outputs


def sessions_at_once(
    assessor: Assessor,
    snapshots: list[SessionSnapshot],
    generated: Callable[[], float],
    sync: Callable[[], None],
) -> dict[str, float]:
    """Every snapshot's assessment submitted at t0 from its own thread (a session each); latency = its
    end - t0 (the embedded backend serialises generation, as the stream server does: queueing counts).
    ``llm_stage_*``: the backend call alone (``timings_ms["generate_ms"]``: generation + MAA, queueing
    included); ``stream_side_ms_p50``: prompt building + LQ-formers per assessment, which this one
    process runs for every session under one GIL (a deployment spreads sessions over stream servers)."""
    ends: list[float] = []
    timings: list[dict[str, float]] = []
    before = generated()

    def one(i: int) -> None:
        done = assessor.assess(snapshots[i], session_id=f"c{len(snapshots)}-{i}", kind="checkpoint")
        sync()
        ends.append(time.perf_counter())
        timings.append(done.timings_ms)

    sync()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(snapshots)) as pool:
        list(pool.map(one, range(len(snapshots))))
    wall = time.perf_counter() - t0
    latencies = [e - t0 for e in ends]
    llm = [t["generate_ms"] / 1000 for t in timings]
    tokens = generated() - before
    return {
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "llm_stage_p50_s": round(statistics.median(llm), 3),
        "llm_stage_p95_s": round(float(np.percentile(llm, 95)), 3),
        "stream_side_ms_p50": round(statistics.median(t["prompts_ms"] + t["encode_ms"] for t in timings), 1),
        "gen_tokens_per_s": round(tokens / wall, 1),
        "assessments_per_s": round(len(snapshots) / wall, 3),
        "generated_tokens": int(tokens),
        "wall_s": round(wall, 3),
    }


@dataclasses.dataclass
class Shape:
    """A model shape for :func:`run`: its bundle, answer length (prompt tokens) and generation budget."""

    name: str
    answer_words: int
    new_tokens: int
    max_model_len: int


SHAPES_RUN = {
    "tiny": Shape("tiny", 0, 16, 1024),  # the --tiny bundle and transcript
    # items ~1,070 prompt tokens (650-1,536); 500 words: ~1,400 (as gpu_vllm.py's 1,562) but the prompt
    # builder then takes ~1 CPU-s per assessment (fitting long answers into the budget; this CPU)
    "8b": Shape("8b", 240, 96, 2048),
}


def bundle_and_export(shape: str, work: Path, *, export: bool) -> tuple[Path, LoadedBundle, Path | None]:
    """The bundle (tiny: under ``work``; 8b: ``stream_rss.build_bundle``, cached), loaded with its LLM,
    and its plugin export (8b: cached beside the bundle, reused while its bundle id matches)."""
    if shape == "tiny":
        path = tiny_bundle(work)
        out = work / "export"
    else:
        from stream_rss import build_bundle  # bench/ is on sys.path

        path = build_bundle(shape, llm_weights=True)
        out = path.with_name(f"{path.name}-plugin-export")
    full = load_bundle(path)
    if not export:
        return path, full, None
    if not (out / "mllmdr_serving.json").is_file() or load_serving_manifest(out).bundle_id != full.bundle_id:
        export_loaded(full, out, plugin=True)  # a copy: `full` stays the embedded reference
    return path, full, out


def run(
    shape: str = "8b",
    sessions: Sequence[int] = (1, 8, 32),
    device: str = "cuda",
    *,
    embedded_only: bool = False,
    vllm_python: Path = VLLM_PY,
    answer_words: int | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """Embedded transformers on ``device`` vs the plugin's two vLLM servers (on the same device: the
    vLLM build of ``vllm_python`` decides), ``sessions`` concurrent sessions × 8 items each."""
    spec = SHAPES_RUN[shape]
    words = spec.answer_words if answer_words is None else answer_words
    transcript = long_transcript(words) if words else TRANSCRIPT
    work = work or Path(tempfile.mkdtemp(prefix="vllm-native-"))
    t0 = time.perf_counter()
    path, full, export = bundle_and_export(shape, work, export=not embedded_only)
    light = load_bundle(path, llm_weights=False)
    setup_s = time.perf_counter() - t0
    gpu = device.startswith("cuda")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    full.config.llm.max_new_tokens = spec.new_tokens
    snapshot = snapshot_of(light, 0, transcript)
    result: dict[str, Any] = {
        "bench": "vllm_native",
        "mode": shape,
        "device": torch.cuda.get_device_name(device) if gpu else "cpu",
        "model": (
            f"{shape}-shaped random init, LLM {full.config.llm.dtype}; LQ-formers "
            f"{full.config.lqformer.num_layers} layers, proj {full.config.lqformer.proj_hidden}"
        ),
        "sessions": list(sessions),
        "items": len(ITEM_KEYS),
        "new_tokens": spec.new_tokens,
        "setup_s": round(setup_s, 1),
        "stream_llm_params": llm_params_loaded(light.model),
        "embedded_llm_params": llm_params_loaded(full.model),
    }

    offline = native_backend("http://127.0.0.1:9", "http://127.0.0.1:9", light, spec.new_tokens)  # no call
    try:
        texts, prompt_tokens = prompt_figures(Assessor(light, offline), offline, snapshot)
        result |= payload_fields(texts, prompt_tokens, str(offline.wire_dtype).removeprefix("torch."))
        result["prompt_tokens_per_item"] = round(statistics.fmean(prompt_tokens), 1)
    finally:
        offline.close()

    # embedded: the full model on `device`, then off it (the plugin's servers need the memory)
    full.model.to(device)
    embedded = CountingBackend(full.model, spec.new_tokens)
    local_assessor = Assessor(full, embedded)
    local_assessor.assess(snapshot_of(light, 99, transcript), session_id="warm", kind="checkpoint")
    local = local_assessor.assess(snapshot, session_id="ref", kind="checkpoint")
    shared_local = Assessor(with_layout(full, True), embedded).assess(snapshot, session_id="x", kind="final")
    result["embedded"] = {
        str(n): sessions_at_once(
            local_assessor, [snapshot_of(light, 1000 * n + i, transcript) for i in range(n)],
            embedded.count, sync,
        )
        for n in sessions
    }  # fmt: skip
    if gpu:
        result["embedded_peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    print(f"[embedded] {result['embedded']}", file=sys.stderr, flush=True)
    del local_assessor, embedded, full
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()

    if export is not None:
        t1 = time.perf_counter()
        gen, maa = start_servers(export, work, vllm_python, gpu=gpu, max_model_len=spec.max_model_len)
        result["server_start_s"] = round(time.perf_counter() - t1, 1)
        try:
            backend = native_backend(gen.url, maa.url, light, spec.new_tokens)
            assessor = Assessor(light, backend)
            assessor.assess(snapshot_of(light, 98, transcript), session_id="warm", kind="checkpoint")
            remote = assessor.assess(snapshot, session_id="ref", kind="checkpoint")
            layouts, shared_remote = layout_figures(light, backend, gen, maa, 1, transcript)
            result["plugin"] = {
                str(n): sessions_at_once(
                    assessor, [snapshot_of(light, 2000 * n + i, transcript) for i in range(n)],
                    lambda: counter(gen.url, "vllm:generation_tokens_total"), lambda: None,
                )
                for n in sessions
            }  # fmt: skip
            print(f"[plugin] {result['plugin']}", file=sys.stderr, flush=True)
            backend.close()
        finally:
            gen.stop()
            maa.stop()
        result |= comparison(remote, local, shared_remote, shared_local)
        result["prefill_tokens_per_assessment"] = prefill_field(layouts)
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with its value and met (None: not measured in this run)."""
    payload = result.get("payload_bytes_per_assessment_d4096")
    plugin, embedded = result.get("plugin", {}), result["embedded"]
    p95_8 = plugin.get("8", {}).get("p95_s")
    top = str(max(result["sessions"]))
    ratio = (
        plugin[top]["gen_tokens_per_s"] / embedded[top]["gen_tokens_per_s"]
        if top in plugin and embedded[top]["gen_tokens_per_s"]
        else None
    )
    return {
        "payload_le_1MiB_d4096": {"value": payload, "met": None if payload is None else payload <= 2**20},
        "p95_le_1.5s_at_8_sessions": {"value": p95_8, "met": None if p95_8 is None else p95_8 <= 1.5},
        f"throughput_ge_5x_embedded_at_{top}_sessions": {
            "value": None if ratio is None else round(ratio, 2),
            "met": None if ratio is None else ratio >= 5.0,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, vLLM CPU servers, sequential runs")
    parser.add_argument("--runs", type=int, default=5, help="--tiny: assessments timed one after another")
    parser.add_argument("--shape", choices=sorted(SHAPES_RUN), default="8b")
    parser.add_argument("--sessions", default="1,8,32", help="concurrent sessions, comma-separated")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--embedded-only", action="store_true", help="a GPU without vLLM")
    parser.add_argument(
        "--vllm-python", type=Path, default=VLLM_PY if VLLM_PY.exists() else Path(sys.executable)
    )
    parser.add_argument("--answer-words", type=int, help="words per patient answer (prompt length)")
    args = parser.parse_args()
    from common import write_result  # bench/ is sys.path[0]

    if args.tiny:
        result: dict[str, Any] = dict(run_tiny(args.runs))
        write_result("vllm_native_tiny", {k: v for k, v in result.items() if k != "bench"})
    else:
        result = run(
            args.shape, [int(n) for n in args.sessions.split(",")], args.device,
            embedded_only=args.embedded_only, vllm_python=args.vllm_python, answer_words=args.answer_words,
        )  # fmt: skip
        for name, target in result["targets"].items():
            met = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
            print(f"[target] {name}: {target['value']} → {met}", file=sys.stderr, flush=True)
        if args.shape != "tiny":  # the tiny shape here is a smoke run of this path: printed only
            write_result("vllm_native_gpu", {k: v for k, v in result.items() if k != "bench"})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
