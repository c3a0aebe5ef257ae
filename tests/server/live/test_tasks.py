"""``TaskSet``: named tasks replaced by name, one idempotent ``aclose``."""

from __future__ import annotations

import asyncio

from stream_server.live.tasks import TaskSet


async def test_start_replaces_a_task_of_the_same_name_and_aclose_cancels_all_once() -> None:
    tasks = TaskSet("s_test:part")
    first = tasks.start("tick", asyncio.sleep(60))
    second = tasks.start("tick", asyncio.sleep(60))
    other = tasks.start("other", asyncio.sleep(60))
    await asyncio.sleep(0)
    assert first.cancelled() and tasks.running("tick") and tasks.running("other")
    assert second.get_name() == "s_test:part:tick"
    await tasks.aclose()
    assert second.cancelled() and other.cancelled()
    assert not tasks.running("tick") and tasks.closed
    await tasks.aclose()  # idempotent: nothing left, no error
    assert not tasks.running("other")


async def test_spawned_tasks_are_kept_until_done_and_not_cancelled_by_aclose() -> None:
    tasks = TaskSet("s_test:part")
    done = asyncio.Event()

    async def work() -> int:
        await asyncio.sleep(0.05)
        done.set()
        return 7

    spawned = tasks.spawn(work())
    await tasks.aclose()
    assert await spawned == 7 and done.is_set()
