"""Fixtures for the reliability/security suite: the server tests' helpers over the REAL core engine.

Reuses ``tests/server`` (``run_server``, ``test_settings``, ``Events``, ``RunningServer``, ``publish``) and
the SDK tests' tiny random-init bundle recipe; only what they lack is defined here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from server.conftest import RunningServer, run_server

try:  # tests/server renamed its settings helper (pytest collected ``test_settings`` as a test)
    from server.conftest import make_settings
except ImportError:  # pragma: no cover - older checkout
    from server.conftest import test_settings as make_settings


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny model bundle (HuBERT + Llama + tokenizer), as the server's demo fallback."""
    from mllmdr_core.testing import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def engine(tiny_bundle: Path) -> Any:
    """The server's real core engine over the tiny bundle."""
    from stream_server.engine import CoreEngine

    return CoreEngine(tiny_bundle)


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s synthetic interview (espeak-ng speech + a moving face), h264/aac mp4."""
    from client_sdk.synth import make_recording

    rec = make_recording(tmp_path_factory.mktemp("rec"), duration_s=6.0, fps=15, size=(320, 240))
    assert rec.video is not None
    return rec.video


@pytest.fixture
async def server(tmp_path: Path, engine: Any) -> AsyncIterator[RunningServer]:
    async with run_server(make_settings(tmp_path), engine) as srv:
        yield srv


async def healthy(srv: RunningServer) -> None:
    """The server answers /healthz and /readyz."""
    assert (await srv.http.get("/healthz")).json() == {"status": "ok"}
    ready = await srv.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
