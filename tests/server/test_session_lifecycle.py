"""``LiveSession``: one teardown in a fixed order, shared by ``stop`` and ``end``; both idempotent."""

from __future__ import annotations

import asyncio
from typing import Any

from stream_server.pending import PendingAssessments
from stream_server.services import Services
from stream_server.session import LiveSession


def _record_closes(session: LiveSession) -> list[str]:
    """Each part's ``aclose`` (and the media worker's ``stop``) appends its name, then runs."""
    order: list[str] = []
    parts: dict[str, Any] = {
        "connection": session.connection,
        "feed": session.feed,
        "assessments": session.assessments,
        "transcript": session.transcript,
        "ingest": session.ingest,
        "events": session.events,
    }
    for name, part in parts.items():
        for method in ("aclose", "stop") if name == "ingest" else ("aclose",):
            original = getattr(part, method)

            async def wrapped(*args: Any, _o: Any = original, _n: str = f"{name}.{method}") -> Any:
                order.append(_n)
                return await _o(*args)

            setattr(part, method, wrapped)
    return order


async def test_stop_tears_down_in_a_fixed_order_once(services: Services) -> None:
    session = LiveSession("s_test", services, PendingAssessments(services), checkpoint_interval_s=5.0)
    await session.start(announce=False)
    assert session.live and session.status == "created"
    order = _record_closes(session)
    await session.stop()
    assert order == [
        "connection.aclose",
        "feed.aclose",
        "assessments.aclose",
        "ingest.stop",
        "transcript.aclose",
        "ingest.aclose",
        "ingest.stop",  # aclose stops the worker again: idempotent
        "events.aclose",
    ]
    assert not session.live and not session.assessments.tasks.running("schedule")
    assert not session.feed.tasks.running("tick") and not session.ingest.tasks.running("worker")
    assert await session.end() is None  # already stopped: returns at once, no second teardown
    assert order[-1] == "events.aclose" and len(order) == 8


async def test_end_twice_makes_one_final_and_one_status_per_state(services: Services) -> None:
    session = LiveSession("s_test", services, PendingAssessments(services), checkpoint_interval_s=None)
    sub = services.bus.subscribe("s_test")
    await session.start(announce=False)
    first, second = await asyncio.gather(session.end(), session.end())
    assert first is not None and first is second and session.final is first
    events = []
    while not sub.queue.empty():
        event = sub.queue.get_nowait()
        if event is not None:
            events.append(event)
    states = [e.state for e in events if e.type == "session.status"]  # type: ignore[attr-defined]
    assert states == ["ending", "closed"]
    assert [e.type for e in events].count("assessment.result") == 1
    assert events[-1].type == "session.closed" and events[-1].final_assessment is True  # type: ignore[attr-defined]
    row = await services.store.get_session("s_test")
    assert row is not None and row["state"] == "closed"
    await session.stop()  # after the end: the same teardown runs again harmlessly
    assert not session.live
