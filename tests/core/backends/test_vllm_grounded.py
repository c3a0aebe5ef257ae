"""Grounded decoding (issue 18) on a REAL vLLM server (CPU build, ``.venv-vllm``): the plugin server of
the trained demo bundle's export, launched with the grounded-decoding logits processor
(``LocalServer(grounded=True)``), gives the same greedy text as the embedded backend with the option on,
and every rationale is grounded; the embeds-mode backend refuses such a bundle (typed error)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.grounded_decoding import snapshot
from mllmdr_core.assess import Assessor
from mllmdr_core.backends.merge import export_merged_llm
from mllmdr_core.backends.vllm_backend import VLLMSettings
from mllmdr_core.backends.vllm_native import VLLMNativeBackend
from mllmdr_core.backends.vllm_plugin.serve import LocalServer
from mllmdr_core.bundle import LoadedBundle, load_bundle
from mllmdr_core.errors import UnsupportedDecodingError

REPO = Path(__file__).resolve().parents[3]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
DEMO = REPO / "bundles" / "demo"
MODEL_NAME = "mllmdr-demo-grounded"


def _grounded(bundle: LoadedBundle) -> LoadedBundle:
    config = copy.deepcopy(bundle.config)
    config.assess.grounded_decoding = True
    return dataclasses.replace(bundle, config=config)


@pytest.fixture(scope="module")
def full() -> LoadedBundle:
    return _grounded(load_bundle(DEMO))


@pytest.fixture(scope="module")
def server(full: LoadedBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if not VLLM_PY.exists():
        raise RuntimeError(f"{VLLM_PY} missing: run scripts/setup_vllm.sh (make test does)")
    model = full.model
    export = export_merged_llm(
        model.llm,
        full.tokenizer,
        tmp_path_factory.mktemp("grounded-export") / "merged",
        plugin_soft_tokens=full.config.lqformer.num_queries,
        maa_head=model.maa,
        soft_token_projections={"audio": model.audio_lqformer.proj, "video": model.visual_lqformer.proj},
    )
    srv = LocalServer(
        VLLM_PY, export, tmp_path_factory.mktemp("grounded-run"), source_root=REPO,
        served_model_name=MODEL_NAME, grounded=True,
    )  # fmt: skip
    print(f"\n[vllm-grounded] plugin server ready in {srv.start_s:.1f} s")
    yield srv
    srv.stop()


@pytest.mark.slow
def test_grounded_plugin_equals_embedded_and_grounds_every_item(
    full: LoadedBundle, server: LocalServer, request: pytest.FixtureRequest
) -> None:
    assert "--logits-processors" in server.proc.args  # type: ignore[operator]
    light = _grounded(load_bundle(DEMO, llm_weights=False))
    backend = VLLMNativeBackend.from_bundle(server.url, light, MODEL_NAME)
    request.addfinalizer(backend.close)
    assert backend.grounded
    snap = snapshot(full)
    remote = Assessor(light, backend).assess(snap, session_id="g", kind="checkpoint")
    local = Assessor(full).assess(snap, session_id="g", kind="checkpoint")
    assert [it.raw_text for it in remote.items] == [it.raw_text for it in local.items]
    assert [it.grounding.score for it in remote.items if it.grounding] == [1.0] * 8
    # the same server, asked for free decoding, answers as the embedded backend without the option
    free = dataclasses.replace(light, config=copy.deepcopy(light.config))
    free.config.assess.grounded_decoding = False
    plain = VLLMNativeBackend.from_bundle(server.url, free, MODEL_NAME)
    request.addfinalizer(plain.close)
    free_full = dataclasses.replace(full, config=free.config)
    remote_free = Assessor(free, plain).assess(snap, session_id="f", kind="checkpoint")
    local_free = Assessor(free_full).assess(snap, session_id="f", kind="checkpoint")
    assert [it.raw_text for it in remote_free.items] == [it.raw_text for it in local_free.items]
    assert [it.raw_text for it in remote_free.items] != [it.raw_text for it in remote.items]


def test_embeds_mode_refuses_a_grounded_bundle(full: LoadedBundle) -> None:
    with pytest.raises(UnsupportedDecodingError, match="grounded_decoding"):
        VLLMSettings(url="http://127.0.0.1:9", model="m").for_bundle(full)
