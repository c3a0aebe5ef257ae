"""Fixtures: a real uvicorn server on a free loopback port, HTTP/WS clients, synthetic recordings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from stream_server.app import create_app
from stream_server.bus import InProcessEventBus
from stream_server.engine import CoreEngine, Engine
from stream_server.metrics import ServerMetrics
from stream_server.services import Services
from stream_server.settings import Settings
from stream_server.store import Store

API_KEY = "test-api-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The core's tiny random-init bundle (real HuBERT/Llama classes, tiny configs), built once."""
    from mllmdr_core.testing import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def engine(tiny_bundle: Path) -> Engine:
    return CoreEngine(tiny_bundle)


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s synthetic interview (espeak-ng speech + a real face photo), h264/aac mp4."""
    from client_sdk.synth import make_recording

    rec = make_recording(tmp_path_factory.mktemp("rec"), duration_s=6.0, fps=15, size=(320, 240))
    assert rec.video is not None
    return rec.video


@dataclass
class Events:
    """Collects a WebSocket's events in the background."""

    ws: Any
    items: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                self.items.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""
            self.closed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["type"] == kind]

    async def wait(
        self,
        kind: str,
        count: int = 1,
        timeout: float = 60.0,
        pred: Callable[[dict[str, Any]], bool] = lambda e: True,
    ) -> list[dict[str, Any]]:
        async def poll() -> list[dict[str, Any]]:
            while True:
                found = [e for e in self.of(kind) if pred(e)]
                if len(found) >= count:
                    return found
                if self.closed.is_set():
                    raise AssertionError(
                        f"socket closed before {count} {kind}: {[e['type'] for e in self.items]}"
                    )
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(poll(), timeout)

    async def send(self, payload: str | bytes | dict[str, Any]) -> None:
        await self.ws.send(json.dumps(payload) if isinstance(payload, dict) else payload)

    async def close(self) -> None:
        await self.ws.close()
        if self.task:
            await self.task


@dataclass
class RunningServer:
    base: str
    settings: Settings
    http: httpx.AsyncClient
    app: Any

    def api(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def create_session(self, **body: Any) -> dict[str, Any]:
        r = await self.http.post("/v1/sessions", headers=self.api(), json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def events(self, session_id: str, token: str, after_seq: int = 0) -> Events:
        url = (
            self.base.replace("http", "ws")
            + f"/v1/sessions/{session_id}/events?token={token}&after_seq={after_seq}"
        )
        ws = await websockets.connect(url, max_size=None)
        ev = Events(ws)
        ev.task = asyncio.ensure_future(ev._run())
        return ev


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        api_key=API_KEY,
        jwt_secret="s" * 32,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        port=free_port(),
        indicator_interval_s=0.5,
        indicator_window_s=5.0,
        reconnect_grace_s=2.0,
        ice_host_addresses=["127.0.0.1"],
        workers=2,
        end_timeout_s=60.0,
        media_timeout_s=30.0,  # the 6 s test recordings end; sessions outlive them
        var_dir=str(tmp_path / "var"),
        record_audio=True,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def run_server(settings: Settings, engine: Engine) -> AsyncIterator[RunningServer]:
    app = create_app(settings, engine)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.port, log_level="warning", ws_max_size=1 << 20, lifespan="on"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{settings.port}"
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as http:
        try:
            yield RunningServer(base, settings, http, app)
        finally:
            server.should_exit = True
            await task


@pytest.fixture
async def server(tmp_path: Path, engine: Engine) -> AsyncIterator[RunningServer]:
    async with run_server(make_settings(tmp_path), engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def auto_engine(tiny_bundle: Path) -> Iterator[CoreEngine]:
    """An engine whose transcript comes from speech-to-text when no captions arrive (two-party tests)."""
    engine = CoreEngine(tiny_bundle, transcript_source="auto")
    yield engine
    engine.close()


@pytest.fixture
async def asr_server(tmp_path: Path, auto_engine: CoreEngine) -> AsyncIterator[RunningServer]:
    async with run_server(make_settings(tmp_path), auto_engine) as srv:
        yield srv


@pytest.fixture(scope="session")
def bundle_arg(tiny_bundle: Path) -> str:
    """Bundle path for subprocess servers."""
    return str(tiny_bundle)


@pytest.fixture
async def services(tmp_path: Path, engine: Engine) -> AsyncIterator[Services]:
    """Real shared services for one session's parts (SQLite store, in-process bus), session s_test."""
    settings = make_settings(tmp_path, record_audio=False).ensure_secrets()
    store = Store(settings.database_url)
    await store.init()
    metrics = ServerMetrics()
    svc = Services(settings, engine, store, InProcessEventBus(store, metrics), metrics)
    await store.create_session("s_test", engine.info.bundle_id, {})
    try:
        yield svc
    finally:
        svc.close()
        await store.close()
