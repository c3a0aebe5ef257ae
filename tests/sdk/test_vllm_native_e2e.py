"""SDK → stream server → vLLM, end to end: the server runs with ``MLLMDR_LLM_BACKEND=vllm-native`` against
REAL vLLM CPU servers with the project's plugin (``.venv-vllm``; generation + MAA pooling), a tiny bundle
(Llama head_dim 32, which vLLM's CPU attention supports) exported with ``--plugin``. The Python SDK
publishes a short recording with captions; the final assessment's item answers and MAA scores come from
vLLM, and the stream server holds no LLM weights.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client_sdk.session import Session
from client_sdk.synth import SyntheticRecording
from mllmdr_core.assessment import Assessment
from mllmdr_core.backends.merge import export_bundle
from mllmdr_core.backends.vllm_native import VLLMNativeBackend
from mllmdr_core.backends.vllm_plugin.serve import LocalServer, ServeMode
from mllmdr_core.bundle import llm_params_loaded
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.testing import build_tiny_bundle, vllm_tiny_config
from stream_server.engine import CoreEngine
from stream_server.settings import Settings

from .server_fixture import API_KEY, run_server, sdk_settings

REPO = Path(__file__).resolve().parents[2]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def plugin_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = vllm_tiny_config()
    return build_tiny_bundle(tmp_path_factory.mktemp("e2e") / "bundle", config=cfg)


@pytest.fixture(scope="module")
def vllm_servers(
    plugin_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalServer, LocalServer]]:
    """Generation and MAA pooling servers on the bundle's plugin export, started side by side."""
    if not VLLM_PY.exists():
        raise RuntimeError(f"{VLLM_PY} missing: run scripts/setup_vllm.sh (make test does)")
    work = tmp_path_factory.mktemp("e2e-vllm")
    export = export_bundle(plugin_bundle, work / "export", plugin=True)
    started: dict[str, LocalServer] = {}
    errors: list[BaseException] = []

    def start(name: str, mode: ServeMode) -> None:
        try:
            started[name] = LocalServer(
                VLLM_PY, export, work / name, source_root=REPO, served_model_name=f"mllmdr-{name}", mode=mode
            )
        except BaseException as exc:  # re-raised below, after both threads end
            errors.append(exc)

    modes: dict[str, ServeMode] = {"gen": "plugin", "maa": "maa"}
    threads = [threading.Thread(target=start, args=item) for item in modes.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield started["gen"], started["maa"]
    finally:
        for srv in started.values():
            srv.stop()


def _prompt_tokens(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("vllm:prompt_tokens_total")
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sdk_publish_final_assessment_from_vllm(
    tmp_path: Path,
    plugin_bundle: Path,
    vllm_servers: tuple[LocalServer, LocalServer],
    recording: SyntheticRecording,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen, maa = vllm_servers
    for key, value in {
        "LLM_BACKEND": "vllm-native",
        "VLLM_URL": gen.url,
        "VLLM_MODEL": "mllmdr-gen",
        "VLLM_MAA_URL": maa.url,
        "VLLM_MAA_MODEL": "mllmdr-maa",
    }.items():
        monkeypatch.setenv(f"MLLMDR_{key}", value)
    backend_settings = Settings.from_env().vllm()  # the deployment's one settings object
    assert backend_settings is not None and backend_settings.native
    engine = CoreEngine(plugin_bundle, backend=backend_settings)
    try:
        backend = engine._assessor.backend
        assert isinstance(backend, VLLMNativeBackend) and backend.server_projection
        assert llm_params_loaded(engine._assessor.model) == 0  # the stream server holds no LLM weights
        before = _prompt_tokens(gen.url), _prompt_tokens(maa.url)
        assert recording.video is not None
        t0 = time.perf_counter()
        async with (
            run_server(sdk_settings(tmp_path), engine) as url,
            await Session.create(url, API_KEY, external_id="vllm-e2e") as session,
        ):
            await session.publish_file(recording.video)
            for line in recording.lines:
                await session.send_caption(
                    line.text, speaker=line.speaker, start_s=line.start_s, end_s=line.end_s
                )
            await session.wait_media_ended(timeout_s=60)
            await asyncio.sleep(0.5)
            final = await session.end()
        wall = time.perf_counter() - t0
        print(f"\n[vllm-e2e] publish → final in {wall:.1f} s (vLLM servers started before)")
    finally:
        engine.close()  # with the backend's HTTP clients to both servers
    assert isinstance(final, Assessment) and final.kind == "final"
    assert final.model.backend == "vllm-native" and [it.key for it in final.items] == list(ITEM_KEYS)
    # the answers and the MAA scores came from the two vLLM servers
    assert all(it.raw_text for it in final.items)
    assert all(it.maa_score is not None for it in final.items) and final.maa_total is not None
    after = _prompt_tokens(gen.url), _prompt_tokens(maa.url)
    assert after[0] > before[0] and after[1] > before[1]
    assert backend.stats.requests >= 1
    # the captions reached the prompts vLLM got
    assert any(recording.lines[-1].text.split()[0] in it.prompt for it in final.items)
