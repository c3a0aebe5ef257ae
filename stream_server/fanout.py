"""Cross-instance event fan-out over Postgres LISTEN/NOTIFY (several stream servers, one database).

Why Postgres and not another broker: the events table already is the ordered, durable log every
late joiner replays; LISTEN/NOTIFY only has to say "session S has a new event", so no second system
(Redis, NATS) has to be run, secured and kept consistent with the store.

``PostgresEventBus`` keeps ``InProcessEventBus``'s behaviour for the instance that owns a session
(numbering, commit-before-deliver, bounded subscriber queues) and, after each committed event, sends
``NOTIFY mllmdr_events '<instance>|<session_id>|<seq>'`` (the payload is the event's id, never its body).
Every other instance LISTENs; when it has subscribers for that session it reads the events table
from its per-session cursor in ``seq`` order and offers each event once, so a clinician socket on
instance B sees the events of a WebRTC session held by instance A, in order, without gaps: a missed or
reordered notification is repaired by the next one (the read is "everything after my cursor"), and a
reconnect of the LISTEN connection re-reads every watched session. ``session.closed`` from another
instance ends the local subscriptions as the owner's ``close_session`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from mllmdr_core.errors import StorageError
from stream_server.bus import InProcessEventBus, Subscription
from stream_server.metrics import ServerMetrics
from stream_server.protocol import ServerEvent, parse_server_event
from stream_server.settings import database_backend
from stream_server.store import Store

log = logging.getLogger("stream_server.fanout")
CHANNEL = "mllmdr_events"


def asyncpg_dsn(database_url: str) -> str:
    """``postgresql+asyncpg://u:p@h:port/db`` (SQLAlchemy URL) → ``postgresql://…`` for asyncpg."""
    url = make_url(database_url)
    if database_backend(database_url) != "postgresql":
        raise StorageError(f"LISTEN/NOTIFY fan-out needs a Postgres DATABASE_URL, got {url.drivername}")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresEventBus(InProcessEventBus):
    """``EventBus`` for several server instances sharing one Postgres database. Call ``start``/``stop``."""

    def __init__(
        self,
        store: Store,
        metrics: ServerMetrics,
        database_url: str,
        queue_size: int = 1000,
        *,
        reconnect_s: float = 1.0,
    ) -> None:
        super().__init__(store, metrics, queue_size)
        self._dsn = asyncpg_dsn(database_url)
        self.instance_id = uuid.uuid4().hex[:12]
        self._reconnect_s = reconnect_s
        self._listen: asyncpg.Connection | None = None
        self._notify: asyncpg.Connection | None = None
        self._notify_lock = asyncio.Lock()
        self._cursor: dict[str, int] = {}  # session → last seq offered to local subscribers (remote events)
        self._fetch_locks: dict[str, asyncio.Lock] = {}
        self._order_locks: dict[str, asyncio.Lock] = {}  # publish: commit + NOTIFY in seq order
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self.remote_delivered = 0  # events offered here that another instance published (tests, metrics)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the LISTEN and NOTIFY connections (raises ``StorageError`` when Postgres is down)."""
        self._stopping = False
        await self._connect()
        self._watchdog = asyncio.ensure_future(self._watch())

    async def _connect(self) -> None:
        try:
            self._notify = await asyncpg.connect(self._dsn)
            self._listen = await asyncpg.connect(self._dsn)
            await self._listen.add_listener(CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            await self._close_connections()
            raise StorageError(f"event fan-out cannot connect to Postgres: {exc}") from exc

    async def _watch(self) -> None:
        """Reconnect a lost LISTEN connection, then catch up every watched session from its cursor."""
        while not self._stopping:
            await asyncio.sleep(self._reconnect_s)
            if self._listen is not None and not self._listen.is_closed():
                continue
            log.warning("event fan-out: LISTEN connection lost; reconnecting")
            await self._close_connections()
            try:
                await self._connect()
            except StorageError as exc:
                log.warning("event fan-out: %s", exc)
                continue
            for sid in list(self._subs):
                self._spawn(self._catch_up(sid))

    async def stop(self) -> None:
        """Idempotent."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._listen, self._notify):
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)
        self._listen = self._notify = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- publishing (owner instance) -------------------------------------------------------------

    async def publish(self, event: ServerEvent, *, persist: bool = True) -> ServerEvent:
        """As ``InProcessEventBus.publish`` (commit, deliver locally), then NOTIFY the other instances.

        Commit and NOTIFY happen under one per-session lock, so a session's notifications leave in
        ``seq`` order (a reader anchors its cursor on the first one it sees after subscribing).
        """
        lock = self._order_locks.setdefault(event.session_id, asyncio.Lock())
        async with lock:
            event = await super().publish(event, persist=persist)
            if persist:
                await self._send_notify(event.session_id, event.seq)
        return event

    async def _send_notify(self, session_id: str, seq: int) -> None:
        payload = f"{self.instance_id}|{session_id}|{seq}"
        async with self._notify_lock:  # one asyncpg connection runs one query at a time
            conn = self._notify
            try:
                if conn is None or conn.is_closed():
                    conn = self._notify = await asyncpg.connect(self._dsn)
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The event is committed: remote readers still get it from their next notification or
                # their catch-up after reconnect. Losing a NOTIFY never loses an event.
                log.warning("event fan-out: NOTIFY failed for %s/%d: %s", session_id, seq, exc)

    # -- receiving (every instance) ----------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, session_id, seq_s = payload.split("|")
            seq = int(seq_s)
        except ValueError:
            log.warning("event fan-out: ignoring malformed notification %r", payload)
            return
        if origin == self.instance_id or not self._subs.get(session_id):
            return  # our own event (already delivered) or nobody here watches that session
        if seq <= self._cursor.get(session_id, seq - 1):
            return  # already offered by an earlier read
        self._spawn(self._catch_up(session_id, first_seq=seq))

    async def _catch_up(self, session_id: str, first_seq: int | None = None) -> None:
        """Offer the stored events after this session's cursor, in ``seq`` order, exactly once."""
        lock = self._fetch_locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            if not self._subs.get(session_id):
                self._cursor.pop(session_id, None)
                return
            if session_id not in self._cursor:
                # First remote event since someone subscribed here: the subscriber read the history
                # up to (at least) the events committed before it subscribed, so start at this one.
                if first_seq is None:
                    return
                self._cursor[session_id] = first_seq - 1
            try:
                rows = await self._store.events(session_id, self._cursor[session_id])
            except StorageError as exc:
                log.warning("event fan-out: cannot read events of %s: %s", session_id, exc)
                return
            closed = False
            for row in rows:
                event = parse_server_event(row)
                self._cursor[session_id] = max(self._cursor[session_id], event.seq)
                for sub in list(self._subs.get(session_id, ())):
                    sub.offer(event)
                self.remote_delivered += 1
                closed = closed or event.type == "session.closed"
            if closed:
                self.close_session(session_id)

    def unsubscribe(self, sub: Subscription) -> None:
        super().unsubscribe(sub)
        if not self._subs.get(sub.session_id):
            self._subs.pop(sub.session_id, None)
            self._cursor.pop(sub.session_id, None)  # re-anchored by the next subscriber's first event

    def close_session(self, session_id: str) -> None:
        super().close_session(session_id)
        self._cursor.pop(session_id, None)
        self._fetch_locks.pop(session_id, None)
        self._order_locks.pop(session_id, None)


def make_event_bus(
    database_url: str, store: Store, metrics: ServerMetrics, queue_size: int = 1000
) -> InProcessEventBus:
    """Postgres → ``PostgresEventBus`` (fan-out across instances); SQLite → ``InProcessEventBus``."""
    if database_backend(database_url) == "postgresql":
        return PostgresEventBus(store, metrics, database_url, queue_size)
    return InProcessEventBus(store, metrics, queue_size)


async def start_bus(bus: object) -> None:
    """Start a bus that needs it (the Postgres one); no-op for the in-process bus."""
    if isinstance(bus, PostgresEventBus):
        await bus.start()


async def stop_bus(bus: object) -> None:
    if isinstance(bus, PostgresEventBus):
        await bus.stop()
