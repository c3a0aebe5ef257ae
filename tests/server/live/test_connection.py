"""``PublisherConnection``: reconnect grace reports the publisher gone once; ``aclose`` is idempotent."""

from __future__ import annotations

import asyncio

from stream_server.live.connection import PublisherConnection
from stream_server.live.events import SessionEvents
from stream_server.live.media import MediaIngest
from stream_server.live.state import GuardedState
from stream_server.services import Services


def _connection(services: Services, gone: list[str]) -> PublisherConnection:
    events = SessionEvents("s_test", services, link=lambda: (False, frozenset()))
    ingest = MediaIngest("s_test", services, GuardedState(services.engine.new_state("s_test")), events)

    async def nothing(*_: object) -> None:
        return None

    return PublisherConnection(
        "s_test",
        services,
        ingest,
        events,
        on_connected=nothing,
        on_lost=nothing,
        on_gone=lambda: gone.append("gone"),
    )


async def test_grace_without_a_reoffer_reports_gone_once(services: Services) -> None:
    gone: list[str] = []
    conn = _connection(services, gone)
    conn.start_grace(0.05)
    assert conn.in_grace and not conn.connected and conn.kinds == frozenset()
    await asyncio.sleep(0.2)
    assert gone == ["gone"] and not conn.in_grace
    await conn.aclose()
    await conn.aclose()
    assert gone == ["gone"]


async def test_aclose_cancels_the_grace_timer(services: Services) -> None:
    gone: list[str] = []
    conn = _connection(services, gone)
    conn.start_grace(0.1)
    await conn.aclose()
    await asyncio.sleep(0.2)
    assert gone == [] and not conn.in_grace and not conn.silent(0.0)
