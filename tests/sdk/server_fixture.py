"""Run the real ``stream_server`` app in-process on a free loopback port (uvicorn), for SDK tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from stream_server.app import create_app
from stream_server.settings import Settings

API_KEY = "sdk-test-api-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdk_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        api_key=API_KEY,
        jwt_secret="k" * 32,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/sdk.sqlite",
        var_dir=str(tmp_path / "var"),
        port=free_port(),
        indicator_interval_s=0.5,
        indicator_window_s=30.0,
        reconnect_grace_s=10.0,
        ice_host_addresses=["127.0.0.1"],
        workers=2,
        end_timeout_s=120.0,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def run_server(settings: Settings, engine: Any) -> AsyncIterator[str]:
    """Serve ``create_app(settings, engine)``; yields the base URL; stops it on exit."""
    app = create_app(settings, engine)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await task


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
