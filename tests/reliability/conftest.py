"""Fixtures for the reliability/security suite: the server tests' helpers over the REAL core engine.

Reuses ``tests/server`` (``run_server``, ``make_settings``, ``RunningServer`` and its ``tiny_bundle``,
``engine`` and ``recording`` fixtures); only what they lack is defined here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from server.conftest import (  # noqa: F401  (fixtures are registered by name)
    RunningServer,
    engine,
    make_settings,
    recording,
    run_server,
    tiny_bundle,
)


@pytest.fixture
async def server(tmp_path: Path, engine: Any) -> AsyncIterator[RunningServer]:  # noqa: F811
    async with run_server(make_settings(tmp_path), engine) as srv:
        yield srv


async def healthy(srv: RunningServer) -> None:
    """The server answers /healthz and /readyz."""
    assert (await srv.http.get("/healthz")).json() == {"status": "ok"}
    ready = await srv.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
