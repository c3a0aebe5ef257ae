"""Store and PostgresEventBus on a real Postgres: same schema as SQLite, cross-instance fan-out in order."""

from __future__ import annotations

import asyncio

import asyncpg

from mllmdr_core.errors import StorageError
from stream_server.bus import InProcessEventBus, Subscription
from stream_server.fanout import CHANNEL, PostgresEventBus, asyncpg_dsn, make_event_bus
from stream_server.metrics import ServerMetrics
from stream_server.protocol import SessionClosedEvent, TranscriptLineModel, WarningEvent
from stream_server.store import Store

from .conftest import PgCluster


async def _drain(sub: Subscription, n: int, timeout: float = 20.0) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < n:
        event = await asyncio.wait_for(sub.get(), timeout)
        assert event is not None, f"subscription ended after {seqs}"
        seqs.append(event.seq)
    return seqs


async def test_store_schema_and_round_trip_on_postgres(pg: PgCluster) -> None:
    url = await pg.create_db("store_rt")
    store = Store(url)
    await store.init()
    await store.init()  # idempotent (create_all checks first)
    try:
        assert await store.ping()
        await store.create_session("s1", "bundle-x", {"k": "v"})
        assert await store.add_transcript("s1", TranscriptLineModel(start_s=0, end_s=1, text="hello")) == 0
        assert await store.add_transcript("s1", TranscriptLineModel(start_s=1, end_s=2, text="world")) == 1
        await store.add_event(
            "s1",
            1,
            "warning",
            1.0,
            WarningEvent(session_id="s1", seq=1, code="a", message="m").model_dump_json(),
        )
        try:
            await store.add_event("s1", 1, "warning", 1.0, "{}")
            raise AssertionError("duplicate (session, seq) must be refused")
        except StorageError:
            pass
        assert await store.max_seq("s1") == 1
        assert [line.text for line in await store.transcript("s1")] == ["hello", "world"]
        assert (await store.get_session("s1") or {})["meta"] == {"k": "v"}
        conn = await asyncpg.connect(asyncpg_dsn(url))
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        await conn.close()
        assert {"sessions", "transcript", "indicators", "assessments", "events"} <= tables
    finally:
        await store.close()


async def test_events_on_instance_a_reach_subscribers_on_b_in_order(pg: PgCluster) -> None:
    url = await pg.create_db("fanout")
    stores = [Store(url), Store(url)]
    for s in stores:
        await s.init()
    bus_a = make_event_bus(url, stores[0], ServerMetrics())
    bus_b = make_event_bus(url, stores[1], ServerMetrics())
    assert isinstance(bus_a, PostgresEventBus) and isinstance(bus_b, PostgresEventBus)
    assert isinstance(
        make_event_bus("sqlite+aiosqlite:///x.db", stores[0], ServerMetrics()), InProcessEventBus
    )
    await bus_a.start()
    await bus_b.start()
    try:
        await stores[0].create_session("s1", "b", {})
        await stores[0].create_session("s2", "b", {})
        local = bus_a.subscribe("s1")
        remote = bus_b.subscribe("s1")
        remote_s2_reads_before = bus_b.remote_delivered
        # 60 events published back to back on A (burst: notifications queue up on B)
        published = [
            (await bus_a.publish(WarningEvent(session_id="s1", code="c", message=str(i)))).seq
            for i in range(60)
        ]
        assert published == list(range(1, 61))
        assert await _drain(local, 60) == published
        assert await _drain(remote, 60) == published  # every event once, in seq order
        assert bus_b.remote_delivered == remote_s2_reads_before + 60
        # Events of a session nobody on B watches are not read on B.
        await bus_a.publish(WarningEvent(session_id="s2", code="c", message="x"))
        await asyncio.sleep(0.5)
        assert bus_b.remote_delivered == remote_s2_reads_before + 60

        # A NOTIFY that never came (simulated: sent while B was not listening) is repaired by the next.
        await bus_b._listen.remove_listener(CHANNEL, bus_b._on_notify)  # type: ignore[union-attr]
        await bus_a.publish(WarningEvent(session_id="s1", code="c", message="missed"))
        await bus_b._listen.add_listener(CHANNEL, bus_b._on_notify)  # type: ignore[union-attr]
        await bus_a.publish(WarningEvent(session_id="s1", code="c", message="next"))
        assert await _drain(remote, 2) == [61, 62]

        # A lost LISTEN connection is reconnected and the watched sessions caught up.
        await bus_b._listen.close()  # type: ignore[union-attr]
        await bus_a.publish(WarningEvent(session_id="s1", code="c", message="during outage"))
        assert await _drain(remote, 1, timeout=10) == [63]

        # session.closed from the owner ends remote subscriptions too.
        closed = await bus_a.publish(
            SessionClosedEvent(session_id="s1", reason="ended", final_assessment=False)
        )
        assert await _drain(remote, 1) == [closed.seq]
        assert await asyncio.wait_for(remote.get(), 5) is None and not remote.overflowed
    finally:
        await bus_a.stop()
        await bus_b.stop()
        await bus_b.stop()  # idempotent
        for s in stores:
            await s.close()


async def test_concurrent_publishes_arrive_in_seq_order_on_another_instance(pg: PgCluster) -> None:
    url = await pg.create_db("fanout_concurrent")
    store_a, store_b = Store(url), Store(url)
    await store_a.init()
    await store_b.init()
    bus_a = PostgresEventBus(store_a, ServerMetrics(), url)
    bus_b = PostgresEventBus(store_b, ServerMetrics(), url)
    await bus_a.start()
    await bus_b.start()
    try:
        await store_a.create_session("s", "b", {})
        remote = bus_b.subscribe("s")
        # Many writers at once (workers, captions, pings): seqs are unique and B sees them in order.
        events = await asyncio.gather(
            *(bus_a.publish(WarningEvent(session_id="s", code="c", message=str(i))) for i in range(40))
        )
        assert sorted(e.seq for e in events) == list(range(1, 41))
        assert await _drain(remote, 40) == list(range(1, 41))
    finally:
        await bus_a.stop()
        await bus_b.stop()
        await store_a.close()
        await store_b.close()
