"""EventBus: assigns per-session ``seq``, persists events, fans them out to subscribers.

``InProcessEventBus`` delivers to the subscribers of this process (the SQLite store); with Postgres,
``fanout.PostgresEventBus`` extends it with LISTEN/NOTIFY so several server instances see every
session's events (``fanout.make_event_bus`` picks one from the database URL). Subscribers get bounded
queues: a subscriber that stops reading overflows and is disconnected (it can rejoin and replay
history), so it never slows ingest.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from mllmdr_core.errors import StorageError
from stream_server.metrics import ServerMetrics
from stream_server.protocol import ServerEvent
from stream_server.store import Store


class Subscription:
    """One subscriber's bounded queue of live events."""

    def __init__(self, session_id: str, maxsize: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False

    def offer(self, event: ServerEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)  # wakes the reader, which sees ``overflowed``

    async def get(self) -> ServerEvent | None:
        """Next event; None after an overflow or ``close``."""
        return await self.queue.get()

    def close(self) -> None:
        if not self.queue.full():
            self.queue.put_nowait(None)


class EventBus(Protocol):
    async def publish(self, event: ServerEvent, *, persist: bool = True) -> ServerEvent: ...

    async def allocate_seq(self, session_id: str) -> int: ...

    def subscribe(self, session_id: str) -> Subscription: ...

    def unsubscribe(self, sub: Subscription) -> None: ...

    async def history(self, session_id: str, after_seq: int = 0) -> list[dict[str, Any]]: ...

    def close_session(self, session_id: str) -> None: ...


class InProcessEventBus:
    def __init__(self, store: Store, metrics: ServerMetrics, queue_size: int = 1000) -> None:
        self._store = store
        self._metrics = metrics
        self._queue_size = queue_size
        self._next: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._subs: dict[str, set[Subscription]] = {}

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    async def _take_seq(self, session_id: str) -> int:
        if session_id not in self._next:
            self._next[session_id] = await self._store.max_seq(session_id) + 1
        seq = self._next[session_id]
        self._next[session_id] = seq + 1
        return seq

    async def allocate_seq(self, session_id: str) -> int:
        async with self._lock(session_id):
            return await self._take_seq(session_id)

    async def publish(self, event: ServerEvent, *, persist: bool = True) -> ServerEvent:
        """Number, store (committed) and deliver one event; returns it with its ``seq``."""
        sid = event.session_id
        async with self._lock(sid):
            seq = await self._take_seq(sid)
            event = event.model_copy(update={"seq": seq})
            if persist:
                try:
                    await self._store.add_event(sid, seq, event.type, event.ts, event.model_dump_json())
                except StorageError:
                    # seq taken by another writer (another process on the same store): renumber once
                    self._next.pop(sid, None)
                    event = event.model_copy(update={"seq": await self._take_seq(sid)})
                    await self._store.add_event(sid, event.seq, event.type, event.ts, event.model_dump_json())
            for sub in list(self._subs.get(sid, ())):
                sub.offer(event)
        self._metrics.events.inc(1.0, event.type)
        return event

    def subscribe(self, session_id: str) -> Subscription:
        sub = Subscription(session_id, self._queue_size)
        self._subs.setdefault(session_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.get(sub.session_id, set()).discard(sub)

    async def history(self, session_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        return await self._store.events(session_id, after_seq)

    def close_session(self, session_id: str) -> None:
        for sub in self._subs.pop(session_id, set()):
            sub.close()
        self._locks.pop(session_id, None)
        self._next.pop(session_id, None)
