"""What every live session of a process shares: settings, engine, store, bus, metrics, the analysis pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from stream_server.bus import EventBus
from stream_server.engine import Engine
from stream_server.metrics import ServerMetrics
from stream_server.settings import Settings
from stream_server.store import Store

T = TypeVar("T")


class Services:
    """Shared by every session; ``run`` moves CPU work off the event loop into the analysis pool."""

    def __init__(
        self, settings: Settings, engine: Engine, store: Store, bus: EventBus, metrics: ServerMetrics
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mllmdr-analysis")
        self.assess_slots = asyncio.Semaphore(1)  # assessments are CPU-heavy: one at a time per process

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
