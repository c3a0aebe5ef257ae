"""The project's vLLM plugin on a REAL vLLM CPU server (``.venv-vllm``), one server for this module.

A tiny bundle (Llama with head_dim 32, which vLLM's CPU attention supports) is exported for the plugin;
vLLM loads the plugin through the ``vllm.general_plugins`` entry point (written as a bare dist-info on
``PYTHONPATH``: the shared ``.venv-vllm`` does not have this package installed). The stream-server side
loads the bundle WITHOUT LLM weights and sends prompt texts + 32 + 32 soft tokens per item.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mllmdr_core.assess import Assessor
from mllmdr_core.backends.base import SoftPromptRequest, SoftTokens
from mllmdr_core.backends.merge import export_merged_llm, load_serving_manifest
from mllmdr_core.backends.vllm_native import VLLMNativeBackend
from mllmdr_core.backends.vllm_plugin import (
    ARCHITECTURE,
    AUDIO_INPUT_DIM_KEY,
    AUDIO_TOKEN_KEY,
    NUM_QUERIES_KEY,
    PROJECTION_WEIGHTS_NAME,
    VIDEO_INPUT_DIM_KEY,
    VIDEO_TOKEN_KEY,
)
from mllmdr_core.backends.vllm_plugin.serve import LocalServer
from mllmdr_core.bundle import LoadedBundle, llm_params_loaded, load_bundle
from mllmdr_core.errors import BackendError, UnsupportedDecodingError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.snapshot import SessionSnapshot
from mllmdr_core.testing import build_tiny_bundle, randomise_lora_b, vllm_tiny_config

REPO = Path(__file__).resolve().parents[3]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
MODEL_NAME = "mllmdr-tiny-plugin"
TRANSCRIPT = [
    TranscriptLine(1.0, 3.0, "clinician", "How easy is it for you to get a good night's sleep?"),
    TranscriptLine(3.5, 5.5, "patient", "Not easy, I wake up at three every night."),
    TranscriptLine(8.0, 10.0, "clinician", "Have you noticed any changes in your appetite?"),
    TranscriptLine(10.5, 12.5, "patient", "I barely eat anything these days."),
]


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = vllm_tiny_config()
    return build_tiny_bundle(tmp_path_factory.mktemp("native") / "bundle", config=cfg)


@pytest.fixture(scope="module")
def full(bundle_path: Path) -> LoadedBundle:
    bundle = load_bundle(bundle_path)
    randomise_lora_b(bundle.model.llm)
    return bundle


@pytest.fixture(scope="module")
def light(bundle_path: Path) -> LoadedBundle:
    return load_bundle(bundle_path, llm_weights=False)


@pytest.fixture(scope="module")
def export_dir(full: LoadedBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("native-export") / "merged"
    q = full.config.lqformer.num_queries
    projections = {"audio": full.model.audio_lqformer.proj, "video": full.model.visual_lqformer.proj}
    return export_merged_llm(
        full.model.llm,
        full.tokenizer,
        out,
        plugin_soft_tokens=q,
        maa_head=full.model.maa,
        soft_token_projections=projections,
    )


def _snapshot(bundle: LoadedBundle) -> SessionSnapshot:
    rng = np.random.default_rng(0)
    return SessionSnapshot.of(
        audio=rng.standard_normal((300, bundle.model.audio_dim)).astype(np.float32),
        visual=rng.standard_normal((300, bundle.model.visual_dim)).astype(np.float32),
        transcript=TRANSCRIPT,
        window=(0.0, 60.0),
    )


def test_export_names_the_plugin_and_light_bundle_holds_no_llm(
    full: LoadedBundle, light: LoadedBundle, export_dir: Path
) -> None:
    config = json.loads((export_dir / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURE]
    assert (config[AUDIO_TOKEN_KEY], config[VIDEO_TOKEN_KEY]) == (
        full.model.audio_token_id,
        full.model.video_token_id,
    )
    assert config[NUM_QUERIES_KEY] == 32
    # the LQ-formers' projections travel with the export: clients send (Q, d_lq), not (Q, d_llm)
    assert (
        (config[AUDIO_INPUT_DIM_KEY], config[VIDEO_INPUT_DIM_KEY])
        == (
            full.model.audio_lqformer.d_model,
            full.model.visual_lqformer.d_model,
        )
        == (36, 20)
    )
    assert (export_dir / PROJECTION_WEIGHTS_NAME).is_file()
    assert load_serving_manifest(export_dir, verify=True).lora_merged
    assert llm_params_loaded(full.model) > 100_000
    assert llm_params_loaded(light.model) == 0 and light.model.d_llm == full.model.d_llm
    # the LQ-formers are the bundle's: same soft tokens with and without the LLM weights
    feats = torch.randn(1, 20, full.model.audio_dim)
    with torch.no_grad():
        a_full, _ = full.model.encode_modalities(feats, None, None, None)
        a_light, _ = light.model.encode_modalities(feats, None, None, None)
    assert a_full is not None and a_light is not None and torch.equal(a_full, a_light)
    with torch.no_grad():  # as encode_modalities above (the decoder's no-grad fast path)
        latent, _ = light.model.encode_latents(feats, None)
        assert latent is not None and latent.shape == (1, 32, 36)
        assert torch.equal(light.model.audio_lqformer.proj(latent), a_light)


def test_payload_per_assessment_at_d4096() -> None:
    soft = SoftTokens(torch.randn(32, 4096), torch.randn(32, 4096))
    items = [SoftPromptRequest(k, "x" * 2000 + " <AudioHere> <VideoHere>") for k in ITEM_KEYS]  # long prompts
    sizes = {}
    for shared in (True, False):
        backend = VLLMNativeBackend("http://127.0.0.1:9", "m", hidden_size=4096, share_soft_tokens=shared)
        try:
            convs = backend.conversations(items, soft)
        finally:
            backend.close()
        sizes[shared] = len(json.dumps(convs))
        assert sum(json.dumps(c).count("mllmdr-audio-") for c in convs) == 8  # every item names them
    soft_b64 = 2 * 4 * -(-(32 * 4096 * 2 + 1500) // 3)  # base64 of two bf16 (32, 4096) torch.save files
    assert soft_b64 < sizes[True] < soft_b64 + 8 * 2600 < 2**20  # sent once: ≤ 1 MiB per request
    assert 8 * soft_b64 < sizes[False] < 8 * (soft_b64 + 2600)  # per item: ≈ 5.4 MiB
    # the paper's shapes with the projection in the server: (32, 768) audio + (32, 32) visual-v2 LQ-former
    # outputs; generation + MAA request (two copies) stay under 1 MiB even in fp32
    latents = SoftTokens(torch.randn(32, 768), torch.randn(32, 32))
    backend = VLLMNativeBackend(
        "http://127.0.0.1:9",
        "m",
        hidden_size=4096,
        input_dims={"audio": 768, "video": 32},
        wire_dtype="float32",
    )
    try:
        convs = backend.conversations(items, latents)
        with pytest.raises(BackendError, match=r"audio soft tokens must be \(Q, 768\), got \(32, 4096\)"):
            backend.conversations(items, soft)
    finally:
        backend.close()
    latent_b64 = 4 * -(-(32 * (768 + 32) * 4 + 3000) // 3)  # base64 of the two fp32 torch.save files
    assert latent_b64 < len(json.dumps(convs)) < latent_b64 + 8 * 2600
    assert 2 * len(json.dumps(convs)) < 2**20 / 2


@pytest.fixture(scope="module")
def server(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if not VLLM_PY.exists():
        raise RuntimeError(f"{VLLM_PY} missing: run scripts/setup_vllm.sh (make test does)")
    srv = LocalServer(
        VLLM_PY,
        export_dir,
        tmp_path_factory.mktemp("native-run"),
        source_root=REPO,
        served_model_name=MODEL_NAME,
    )
    print(f"\n[vllm-native] plugin server ready in {srv.start_s:.1f} s")
    yield srv
    srv.stop()


@pytest.mark.slow
def test_plugin_assessment_equals_embedded(
    full: LoadedBundle, light: LoadedBundle, server: LocalServer, request: pytest.FixtureRequest
) -> None:
    assert f"Resolved architecture: {ARCHITECTURE}" in server.log.read_text()  # the plugin's class
    backend = VLLMNativeBackend.from_bundle(server.url, light, MODEL_NAME, max_tokens=16)
    request.addfinalizer(backend.close)
    assert backend.check().max_model_len == 1024
    snapshot = _snapshot(full)
    light_assessor = Assessor(light, backend)
    light_assessor.assess(snapshot, session_id="warm", kind="checkpoint")
    t0 = time.perf_counter()
    remote = light_assessor.assess(snapshot, session_id="s", kind="checkpoint")
    latency = time.perf_counter() - t0
    full.config.llm.max_new_tokens = 16
    local = Assessor(full).assess(snapshot, session_id="s", kind="checkpoint")
    assert [it.raw_text for it in remote.items] == [it.raw_text for it in local.items]
    assert [it.key for it in remote.items] == list(ITEM_KEYS) and remote.model.backend == "vllm-native"
    assert all(it.raw_text for it in remote.items)
    assert llm_params_loaded(light.model) == 0

    # same prompt length as the in-process splice (placeholders → 32 positions each)
    prompts = light_assessor.prompts(snapshot)
    with torch.no_grad():
        feats = [torch.from_numpy(x).unsqueeze(0) for x in (snapshot.audio, snapshot.visual)]
        embeds = full.model.prompt_embeds(
            [prompts[k].text for k in ITEM_KEYS], feats[0], None, feats[1], None
        )
        soft = SoftTokens.of(*light.model.encode_latents(feats[0], feats[1]))  # the server projects
    assert backend.server_projection and soft.audio is not None and soft.audio.shape == (32, 36)
    outs = backend.generate_soft([SoftPromptRequest(k, prompts[k].text) for k in ITEM_KEYS], soft)
    assert [o.prompt_tokens for o in outs] == [int(e.shape[0]) for e in embeds]
    # the soft tokens matter: other soft tokens, other answers
    zeros = SoftTokens(torch.zeros_like(soft.audio), torch.zeros_like(soft.video))  # type: ignore[arg-type]
    other = backend.generate_soft([SoftPromptRequest(k, prompts[k].text) for k in ITEM_KEYS], zeros)
    assert [o.text for o in other] != [o.text for o in outs]
    per_item = backend.last_assessment_bytes / 8
    print(f"[vllm-native] assessment {latency * 1000:.0f} ms; {per_item / 1024:.1f} KiB per item at d=64")

    # a wrong hidden size or a slot without soft tokens fails locally with a clear message
    with pytest.raises(BackendError, match=r"\(Q, 36\)"):
        backend.generate_soft(
            [SoftPromptRequest("sleep", "x <AudioHere>")], SoftTokens(torch.zeros(32, 64), None)
        )
    with pytest.raises(BackendError, match=r"0 <AudioHere> slot\(s\) for one set of soft tokens"):
        backend.generate_soft(
            [SoftPromptRequest("sleep", "no slot here")], SoftTokens(torch.zeros(32, 36), None)
        )
    # a client that projects itself against this export: vLLM rejects the width, typed error
    unprojected = VLLMNativeBackend.from_bundle(
        server.url, light, MODEL_NAME, server_projection=False, retries=0, max_tokens=4
    )
    request.addfinalizer(unprojected.close)
    with torch.no_grad():
        full_soft = SoftTokens.of(*light.model.encode_modalities(feats[0], None, feats[1], None))
    with pytest.raises(BackendError, match=r"\(32, 36\), got \(32, 64\)"):
        unprojected.generate_soft([SoftPromptRequest(k, prompts[k].text) for k in ITEM_KEYS], full_soft)

    # a bundle with grounded decoding: this server runs without the processor, so the client's probe
    # refuses to decode freely in its place (typed error)
    grounded_light = dataclasses.replace(light, config=copy.deepcopy(light.config))
    grounded_light.config.assess.grounded_decoding = True
    grounded = VLLMNativeBackend.from_bundle(server.url, grounded_light, MODEL_NAME, max_tokens=4)
    request.addfinalizer(grounded.close)
    with pytest.raises(UnsupportedDecodingError, match="--grounded-decoding"):
        grounded.generate_soft([SoftPromptRequest(k, prompts[k].text) for k in ITEM_KEYS], soft)

    # server gone → BackendError after the retries, not a hang (the last test using this server)
    server.stop()
    gone = VLLMNativeBackend.from_bundle(server.url, light, MODEL_NAME, retries=1, backoff_s=0.05)
    request.addfinalizer(gone.close)
    with pytest.raises(BackendError, match="unreachable"):
        gone.generate_soft([SoftPromptRequest(k, prompts[k].text) for k in ITEM_KEYS], soft)


@pytest.fixture(scope="module")
def maa_server(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The plugin's pooling variant (MAA head as pooler) on the same export."""
    srv = LocalServer(
        VLLM_PY,
        export_dir,
        tmp_path_factory.mktemp("native-maa"),
        source_root=REPO,
        served_model_name=MODEL_NAME,
        mode="maa",
    )
    print(f"\n[vllm-native] MAA pooling server ready in {srv.start_s:.1f} s")
    yield srv
    srv.stop()


@pytest.mark.slow
def test_maa_score_from_the_pooling_server(
    full: LoadedBundle, light: LoadedBundle, maa_server: LocalServer, request: pytest.FixtureRequest
) -> None:
    from mllmdr_core.backends.vllm_plugin import MAA_ARCHITECTURE

    assert f"Resolved architecture: {MAA_ARCHITECTURE}" in maa_server.log.read_text()
    snapshot = _snapshot(full)
    prompts = Assessor(light).prompts(snapshot)
    texts = [prompts[k].text for k in ITEM_KEYS]
    with torch.no_grad():
        feats = [torch.from_numpy(x).unsqueeze(0) for x in (snapshot.audio, snapshot.visual)]
        soft = SoftTokens.of(*light.model.encode_latents(feats[0], feats[1]))  # the server projects
        embeds = full.model.prompt_embeds(texts, feats[0], None, feats[1], None)
    from mllmdr_core.backends.base import ItemRequest
    from mllmdr_core.backends.transformers_backend import TransformersBackend

    want = [o.maa_score for o in TransformersBackend(full.model, 1).generate(
        [ItemRequest(k, e) for k, e in zip(ITEM_KEYS, embeds, strict=True)]
    )]  # fmt: skip
    items = [SoftPromptRequest(k, t) for k, t in zip(ITEM_KEYS, texts, strict=True)]
    dims = {"audio": light.model.audio_lqformer.d_model, "video": light.model.visual_lqformer.d_model}
    for wire, tol in (("float32", 1e-4), ("bfloat16", 1e-4)):  # bf16 rounds the LQ-former outputs: 1.8e-5
        backend = VLLMNativeBackend(
            maa_server.url,
            MODEL_NAME,
            hidden_size=light.model.d_llm,
            maa_url=maa_server.url,
            wire_dtype=wire,
            input_dims=dims,
        )
        request.addfinalizer(backend.close)
        got = backend.maa_scores(items, soft)
        diff = max(abs(g - w) for g, w in zip(got, want, strict=True) if g is not None and w is not None)
        print(f"[vllm-native] MAA from vLLM, {wire} wire: max |diff| {diff:.2e}")
        assert all(g is not None for g in got) and diff < tol
    assert len({round(g or 0.0, 6) for g in got}) > 1  # the items differ, so the pooling is per item


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_vllm_restart_mid_assessment_is_retried_and_nothing_is_lost(
    full: LoadedBundle, light: LoadedBundle, export_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The generation server is killed (SIGKILL) while a final assessment's request is in flight: the
    assessment fails with a typed ``BackendError``, the kept snapshot survives a round trip to disk (as a
    pending final), and ``assess_with_retry`` succeeds once the server is back on the same port, with
    the same answers as the embedded backend. Bounded: the retry loop is stopped after 300 s."""
    import threading

    from mllmdr_core.retry import RetryPolicy, assess_with_retry
    from stream_server.pending import load_snapshot, save_snapshot

    srv = LocalServer(VLLM_PY, export_dir, tmp_path / "first", source_root=REPO, served_model_name=MODEL_NAME)
    servers = [srv]
    request.addfinalizer(lambda: [s.stop() for s in servers])
    backend = VLLMNativeBackend.from_bundle(
        srv.url, light, MODEL_NAME, max_tokens=16, retries=1, backoff_s=0.2, timeout_s=60.0
    )
    request.addfinalizer(backend.close)
    assessor = Assessor(light, backend)
    snapshot = _snapshot(full)
    kept = tmp_path / "pending" / "s.npz"
    killed_at: list[float] = []
    failures: list[BackendError] = []
    restarted = threading.Event()

    def kill_once(req: object) -> None:  # httpx request hook, as the batch request leaves
        if not killed_at and str(getattr(req, "url", "")).endswith("/v1/chat/completions/batch"):
            # frozen first (the kernel still takes the request into the server's socket), killed 0.5 s
            # later: the request is in flight at the server and never answered, however fast it would be
            os.killpg(srv.proc.pid, signal.SIGSTOP)
            killed_at.append(time.perf_counter())
            threading.Timer(0.5, srv.kill).start()

    backend._http().event_hooks = {"request": [kill_once], "response": []}

    def restart() -> None:
        servers.append(
            LocalServer(
                VLLM_PY, export_dir, tmp_path / "again", source_root=REPO, served_model_name=MODEL_NAME,
                port=srv.port,
            )
        )  # fmt: skip
        restarted.set()

    def on_retry(n: int, exc: BackendError) -> None:
        failures.append(exc)
        if n == 1:  # the first failure: the final is kept (as the server parks it) and vLLM restarted
            save_snapshot(kept, snapshot)
            threading.Thread(target=restart, daemon=True).start()

    stop = threading.Event()
    timer = threading.Timer(300.0, stop.set)
    timer.start()
    request.addfinalizer(timer.cancel)
    t0 = time.perf_counter()
    result = assess_with_retry(
        assessor,
        snapshot,
        session_id="s",
        kind="final",
        policy=RetryPolicy(attempts=None, base_s=1.0, max_s=4.0),
        on_retry=on_retry,
        stop=stop,
    )
    wall = time.perf_counter() - t0
    print(f"\n[vllm-native] killed mid-assessment, {len(failures)} failed tries, done after {wall:.1f} s")
    # the retry can reach the new server before its LocalServer's readiness poll returns: wait for it (so
    # the finalizer stops it too)
    assert killed_at and restarted.wait(120) and srv.proc.returncode == -9  # it was a crash
    assert failures and all(isinstance(e, BackendError) for e in failures)
    assert "vLLM at " in str(failures[0])  # typed and says which server
    # nothing lost: the kept snapshot is the one assessed, and the answers are the embedded backend's
    again = load_snapshot(kept)
    assert again.audio is not None and snapshot.audio is not None
    assert np.array_equal(again.audio, snapshot.audio) and again.transcript == snapshot.transcript
    full.config.llm.max_new_tokens = 16
    local = Assessor(full).assess(again, session_id="s", kind="final")
    assert result.kind == "final" and [it.key for it in result.items] == list(ITEM_KEYS)
    assert [it.raw_text for it in result.items] == [it.raw_text for it in local.items]
