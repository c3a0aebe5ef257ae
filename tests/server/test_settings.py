"""Settings from the environment and secrets (bundle resolution: ``test_main.py``)."""

from __future__ import annotations

import pytest

from mllmdr_core.errors import ConfigError
from stream_server.settings import Settings


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

