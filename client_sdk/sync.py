"""A small blocking wrapper around :class:`client_sdk.session.Session` for scripts and notebooks.

::

    with SyncSession.create("http://127.0.0.1:8765", api_key="...") as s:
        s.publish_file("call.mp4")
        s.wait_media_ended()
        print(s.end().total)

The asyncio session runs on a private event loop in a daemon thread; every method blocks until done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from client_sdk.session import Session
from mllmdr_core.assessment import Assessment
from stream_server.protocol import (
    CheckpointAccepted,
    ServerEvent,
    SessionExport,
    SessionInfo,
    TranscriptAckEvent,
)

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mllmdr-sdk", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class SyncSession:
    """Blocking twin of :class:`Session` (same methods, no ``await``)."""

    def __init__(self, runner: _LoopThread, session: Session) -> None:
        self._runner = runner
        self.session = session

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @classmethod
    def create(cls, server_url: str, api_key: str, **kwargs: Any) -> SyncSession:
        runner = _LoopThread()
        try:
            return cls(runner, runner.run(Session.create(server_url, api_key, **kwargs)))
        except BaseException:
            runner.stop()
            raise

    @classmethod
    def attach(cls, server_url: str, session_id: str, token: str, **kwargs: Any) -> SyncSession:
        runner = _LoopThread()

        async def make() -> Session:
            return await Session.attach(server_url, session_id, token, **kwargs)

        return cls(runner, runner.run(make()))

    def publish_file(self, path: str | Path, *, video: str | Path | None = None) -> None:
        self._runner.run(self.session.publish_file(path, video=video))

    def publish_camera(
        self, video_device: str | None = "default", audio_device: str | None = "default"
    ) -> None:
        self._runner.run(self.session.publish_camera(video_device, audio_device))

    def wait_media_ended(self, timeout_s: float | None = None) -> None:
        self._runner.run(self.session.wait_media_ended(timeout_s))

    def send_caption(
        self,
        text: str,
        *,
        speaker: Literal["patient", "clinician", "unknown"] = "unknown",
        start_s: float,
        end_s: float,
    ) -> TranscriptAckEvent:
        return self._runner.run(
            self.session.send_caption(text, speaker=speaker, start_s=start_s, end_s=end_s)
        )

    def checkpoint(self, *, wait: bool = False) -> CheckpointAccepted:
        return self._runner.run(self.session.checkpoint(wait=wait))

    def end(self, *, timeout_s: float = 180.0) -> Assessment | None:
        return self._runner.run(self.session.end(timeout_s=timeout_s))

    def info(self) -> SessionInfo:
        return self._runner.run(self.session.info())

    def export(self) -> SessionExport:
        return self._runner.run(self.session.export())

    def events(self, *, timeout_s: float | None = None) -> Iterator[ServerEvent]:
        """Blocking iterator over events until ``session.closed``."""
        agen = self.session.events()

        async def next_event() -> ServerEvent:
            return await agen.__anext__()

        while True:
            try:
                yield self._runner.run(next_event(), timeout_s)
            except StopAsyncIteration:
                return

    def close(self) -> None:
        try:
            self._runner.run(self.session.close(), timeout=30)
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
