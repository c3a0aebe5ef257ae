"""Settings from the environment and secrets (bundle resolution: ``test_main.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mllmdr_core.backends.vllm_backend import VLLMBackend, VLLMSettings
from mllmdr_core.errors import ConfigError
from stream_server.bus import InProcessEventBus
from stream_server.engine import CoreEngine
from stream_server.fanout import make_event_bus
from stream_server.metrics import ServerMetrics
from stream_server.settings import Settings, database_backend
from stream_server.store import Store, sqlite_path


def test_env_overrides_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLMDR_PORT", "9001")
    monkeypatch.setenv("MLLMDR_DEMO", "yes")
    monkeypatch.setenv("MLLMDR_ICE_HOST_ADDRESSES", "127.0.0.1, 10.0.0.2")
    monkeypatch.setenv("MLLMDR_CHECKPOINT_INTERVAL_S", "90")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db/x")
    s = Settings.from_env(host="0.0.0.0")
    assert (s.port, s.demo, s.host, s.checkpoint_interval_s) == (9001, True, "0.0.0.0", 90.0)
    assert s.ice_host_addresses == ["127.0.0.1", "10.0.0.2"]
    assert s.database_url == "postgresql+asyncpg://u@db/x"
    assert s.base_url == "http://0.0.0.0:9001"
    monkeypatch.setenv("MLLMDR_INDICATOR_INTERVAL_S", "-1")
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_secrets() -> None:
    with pytest.raises(ConfigError, match="MLLMDR_API_KEY"):
        Settings().ensure_secrets()
    demo = Settings(demo=True).ensure_secrets()
    assert (
        demo.api_key and demo.api_key.startswith("demo-") and demo.jwt_secret and len(demo.jwt_secret) >= 32
    )
    fixed = Settings(api_key="k", jwt_secret="j" * 20).ensure_secrets()
    assert (fixed.api_key, fixed.jwt_secret) == ("k", "j" * 20)



def test_vllm_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().vllm() is None  # default: the embedded transformers backend
    for alias in ("transformers", "embedded", " ", "Transformers"):
        monkeypatch.setenv("MLLMDR_LLM_BACKEND", alias)
        assert Settings.from_env().llm_backend == "transformers" and Settings.from_env().vllm() is None
    monkeypatch.setenv("MLLMDR_LLM_BACKEND", "tgi")
    with pytest.raises(ConfigError, match="llm_backend"):
        Settings.from_env()
    monkeypatch.setenv("MLLMDR_LLM_BACKEND", "vllm")
    with pytest.raises(ConfigError, match="needs MLLMDR_VLLM_URL and MLLMDR_VLLM_MODEL"):
        Settings.from_env()
    env = {
        "URL": "http://vllm:8000/", "MODEL": "mllmdr", "EXPORT": "/srv/export", "API_KEY": "k",
        "MAX_TOKENS": "64", "SUPPRESS_PLACEHOLDERS": "false", "TIMEOUT_S": "30", "CONNECT_TIMEOUT_S": "2",
        "RETRIES": "4", "BACKOFF_S": "0.25", "WIRE_DTYPE": "float16",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"MLLMDR_VLLM_{key}", value)
    assert Settings.from_env().vllm() == VLLMSettings(
        url="http://vllm:8000/", model="mllmdr", export="/srv/export", api_key="k", max_tokens=64,
        suppress_placeholders=False, timeout_s=30.0, connect_timeout_s=2.0, retries=4, backoff_s=0.25,
        wire_dtype="float16",
    )
    monkeypatch.setenv("MLLMDR_VLLM_RETRIES", "-1")
    with pytest.raises(ConfigError, match="vllm_retries"):
        Settings.from_env()


def test_vllm_env_reaches_the_engines_backend(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    """Env → Settings → VLLMSettings → the engine's backend, built for the bundle (its max_new_tokens and
    placeholder ids unless the env overrides them)."""
    monkeypatch.setenv("MLLMDR_LLM_BACKEND", "vllm")
    monkeypatch.setenv("MLLMDR_VLLM_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("MLLMDR_VLLM_MODEL", "mllmdr")
    monkeypatch.setenv("MLLMDR_VLLM_RETRIES", "5")
    engine = CoreEngine(tiny_bundle, backend=Settings.from_env().vllm())
    try:
        backend, model = engine._assessor.backend, engine._assessor.model
        assert isinstance(backend, VLLMBackend) and backend.retries == 5
        assert backend.max_tokens == engine.config.llm.max_new_tokens == 24
        assert backend.suppress_token_ids == (model.audio_token_id, model.video_token_id)
        assert len(set(backend.suppress_token_ids)) == 2
    finally:
        engine.close()


def test_one_function_decides_the_database() -> None:
    assert database_backend("sqlite+aiosqlite:///var/mllmdr.db") == "sqlite"
    assert database_backend("sqlite+aiosqlite://") == "sqlite"
    assert database_backend("postgresql+asyncpg://u:p@db:5432/x") == "postgresql"
    assert database_backend("postgres://u@db/x") == "postgresql"
    for bad in ("mysql+aiomysql://u@db/x", "var/mllmdr.db", ""):
        with pytest.raises(ConfigError, match="database URL must be"):
            database_backend(bad)
    assert Settings().database_backend == "sqlite"
    assert Settings(database_url="postgresql+asyncpg://u@db/x").database_backend == "postgresql"
    with pytest.raises(ValueError, match="database URL must be"):
        Settings(database_url="mysql://u@db/x")
    assert Store("sqlite+aiosqlite://").backend == "sqlite"
    assert sqlite_path("sqlite+aiosqlite:///var/x.db") == Path("var/x.db")
    assert sqlite_path("postgresql+asyncpg://u@db/x") is None
    bus = make_event_bus("sqlite+aiosqlite://", Store("sqlite+aiosqlite://"), ServerMetrics())
    assert type(bus) is InProcessEventBus


def test_vllm_native_env_builds_the_plugin_client_without_llm_weights(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path
) -> None:
    """MLLMDR_LLM_BACKEND=vllm-native: the engine loads the bundle without LLM weights and talks to the
    plugin (text + soft tokens), with the MAA pooling server from the env."""
    from mllmdr_core.backends.vllm_native import VLLMNativeBackend
    from mllmdr_core.bundle import llm_params_loaded

    monkeypatch.setenv("MLLMDR_LLM_BACKEND", "vllm-native")
    with pytest.raises(ConfigError, match="vllm-native needs MLLMDR_VLLM_URL"):
        Settings.from_env()
    monkeypatch.setenv("MLLMDR_VLLM_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("MLLMDR_VLLM_MODEL", "mllmdr")
    monkeypatch.setenv("MLLMDR_VLLM_MAA_URL", "http://127.0.0.1:10/")
    settings = Settings.from_env().vllm()
    assert settings is not None and settings.native and not settings.llm_weights
    engine = CoreEngine(tiny_bundle, backend=settings)
    try:
        backend, model = engine._assessor.backend, engine._assessor.model
        assert isinstance(backend, VLLMNativeBackend) and backend.maa is not None
        assert llm_params_loaded(model) == 0  # the stream server holds no LLM weights
        assert backend.max_tokens == engine.config.llm.max_new_tokens
        assert backend.suppress_token_ids == (model.audio_token_id, model.video_token_id)
        # the plugin projects: the LQ-formers' (32, d_lq) outputs go exactly (fp32) unless set
        assert backend.server_projection and str(backend.wire_dtype) == "torch.float32"
        assert backend.input_dims == {
            "audio": model.audio_lqformer.d_model,
            "video": model.visual_lqformer.d_model,
        }
        clients = [backend._client, backend.maa._client]  # the HTTP clients to both vLLM servers
        assert all(c is not None and not c.is_closed for c in clients)
    finally:
        engine.close()
    assert all(c is not None and c.is_closed for c in clients)  # closed with the engine
    assert backend._client is None and backend.maa._client is None
    engine.close()  # a second close is a no-op
    assert backend._client is None and all(c is not None and c.is_closed for c in clients)
    monkeypatch.setenv("MLLMDR_VLLM_WIRE_DTYPE", "bfloat16")
    engine = CoreEngine(tiny_bundle, backend=Settings.from_env().vllm())
    try:
        assert str(engine._assessor.backend.wire_dtype) == "torch.bfloat16"  # type: ignore[attr-defined]
    finally:
        engine.close()
