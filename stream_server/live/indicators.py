"""The indicator tick: values over the last window stored and published; silent media noticed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from mllmdr_core.frames import TranscriptLine
from mllmdr_core.snapshot import finite
from stream_server.live.connection import PublisherConnection
from stream_server.live.events import SessionEvents
from stream_server.live.media import MediaIngest
from stream_server.live.state import GuardedState
from stream_server.live.tasks import TaskSet
from stream_server.live.transcript import TranscriptLog
from stream_server.protocol import IndicatorsEvent
from stream_server.services import Services


class IndicatorFeed:
    """Every ``indicator_interval_s`` while a publisher is connected: new ASR lines, then indicators."""

    def __init__(
        self,
        session_id: str,
        services: Services,
        *,
        state: GuardedState,
        ingest: MediaIngest,
        transcript: TranscriptLog,
        connection: PublisherConnection,
        events: SessionEvents,
        on_silent: Callable[[str], Awaitable[None]],
    ) -> None:
        self.session_id = session_id
        self.svc = services
        self.state = state
        self.ingest = ingest
        self.transcript = transcript
        self.connection = connection
        self.events = events
        self._on_silent = on_silent
        self.tasks = TaskSet(f"{session_id}:indicators")

    def start(self) -> None:
        self.tasks.start("tick", self._loop())

    async def _loop(self) -> None:
        settings = self.svc.settings
        last_media = 0.0  # nothing before the first processed media
        while True:
            await asyncio.sleep(settings.indicator_interval_s)
            if not self.connection.connected:
                continue
            if self.connection.silent(settings.media_timeout_s) and self.events.state == "live":
                await self._on_silent(f"no media for {settings.media_timeout_s:.0f} s")
                continue
            if self.ingest.media_time_s <= last_media:
                if self.transcript.asr is not None:  # speech-to-text lags the media: lines come after it
                    await self.transcript.publish_new_asr()
                continue
            last_media = self.ingest.media_time_s
            try:
                await self.emit()
            except Exception as exc:
                await self.events.error(exc)

    async def emit(self) -> None:
        """One tick now: new ASR lines, then an ``indicators`` event (stored first)."""
        values, unavailable, asr_lines = await self.svc.run(self._read)
        await self.transcript.publish_asr(asr_lines)
        event = IndicatorsEvent(
            session_id=self.session_id,
            media_time_s=self.ingest.media_time_s,
            window_s=self.svc.settings.indicator_window_s,
            values=values,
            lag_s=self.ingest.last_lag_s,
            unavailable=unavailable,
        )
        await self.svc.store.add_indicators(self.session_id, event.media_time_s, event.ts, values)
        await self.events.publish(event)

    def _read(self) -> tuple[dict[str, float], dict[str, str], list[TranscriptLine]]:
        """Worker thread: indicator values (finite only), why the others are missing, and the ASR lines
        produced since the last read."""
        window_s = self.svc.settings.indicator_window_s
        with self.state.locked() as state:
            t0 = time.perf_counter()
            values = finite(state.indicators(window_s))
            missing = state.unavailable(window_s)
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - t0, "indicators")
        return values, missing, self.transcript.new_asr_lines()

    async def aclose(self) -> None:
        """Idempotent: the tick stops."""
        await self.tasks.aclose()
