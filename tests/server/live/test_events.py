"""``SessionEvents``: a status is stored and published only when what it reports changed."""

from __future__ import annotations

import asyncio

from stream_server.live.events import SessionEvents
from stream_server.services import Services


async def _drain(sub_queue: asyncio.Queue[object]) -> list[object]:
    items = []
    while not sub_queue.empty():
        items.append(sub_queue.get_nowait())
    return items


async def test_status_is_published_only_on_change(services: Services) -> None:
    link = {"connected": True, "kinds": frozenset({"audio"})}
    events = SessionEvents("s_test", services, link=lambda: (link["connected"], link["kinds"]))  # type: ignore[arg-type]
    sub = services.bus.subscribe("s_test")
    await events.status("live")
    await events.status("live", "again")  # unchanged: not published
    link["kinds"] = frozenset({"audio", "video"})
    await events.status("live")  # a video track arrived: changed
    await events.status("reconnecting", "lost")
    await events.status("reconnecting", "lost")
    published = [e for e in await _drain(sub.queue) if e is not None]
    assert [(e.state, e.audio, e.video, e.publisher_connected) for e in published] == [  # type: ignore[attr-defined]
        ("live", True, False, True),
        ("live", True, True, True),
        ("reconnecting", True, True, False),
    ]
    assert events.state == "reconnecting"
    row = await services.store.get_session("s_test")
    assert row is not None and row["state"] == "reconnecting"
    await events.aclose()
    await events.aclose()


async def test_a_once_warning_is_published_once(services: Services) -> None:
    events = SessionEvents("s_test", services, link=lambda: (False, frozenset()))
    sub = services.bus.subscribe("s_test")
    await events.warn("asr_stopped", "first")
    await events.warn("asr_stopped", "second")
    await events.warn("publisher_lost", "a", once=False)
    await events.warn("publisher_lost", "b", once=False)
    messages = [e.message for e in await _drain(sub.queue) if e is not None]  # type: ignore[attr-defined]
    assert messages == ["first", "a", "b"]
    assert not events.claim_once("asr_stopped") and events.claim_once("audio_behind")
