"""The real ``stream_server`` app for SDK tests, in-process on a free loopback port.

The uvicorn start-up helper is the server tests' (``tests/server/conftest.py``: one copy); here it yields
the base URL, with the SDK tests' settings, plus a threaded variant for blocking clients (sync SDK, CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from server.conftest import free_port, make_settings
from server.conftest import run_server as run_running_server

from stream_server.settings import Settings

API_KEY = "sdk-test-api-key-0123456789"
__all__ = ["API_KEY", "free_port", "run_server", "sdk_settings", "threaded_server"]


def sdk_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The server tests' settings with the SDK tests' key, database, windows and time-outs."""
    values: dict[str, Any] = dict(
        api_key=API_KEY,
        jwt_secret="k" * 32,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/sdk.sqlite",
        indicator_window_s=30.0,
        reconnect_grace_s=10.0,
        end_timeout_s=120.0,
        media_timeout_s=Settings.model_fields["media_timeout_s"].default,
        record_audio=False,
    )
    values.update(overrides)
    return make_settings(tmp_path, **values)


@contextlib.asynccontextmanager
async def run_server(settings: Settings, engine: Any) -> AsyncIterator[str]:
    """Serve ``create_app(settings, engine)``; yields the base URL; stops it on exit."""
    async with run_running_server(settings, engine) as server:
        yield server.base


@contextlib.contextmanager
def threaded_server(settings: Settings, engine: Any) -> Iterator[str]:
    """The same server on its own event loop in a thread, for blocking clients (sync SDK, CLI)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: asyncio.Future[str] = loop.create_future()

    async def serve() -> None:
        async with run_server(settings, engine) as url:
            ready.set_result(url)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(ready), 60), loop).result(60)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()
