"""Tasks a part owns: created by name, cancelled together by one idempotent ``aclose``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    """A part's asyncio tasks (pipecat's ``BaseObject.create_task``): named ones and fire-and-forget ones."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.closed = False

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as the task ``name`` (replacing, and cancelling, one of that name)."""
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.owner}:{name}")
        self._tasks[name] = task
        return task

    def cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A fire-and-forget task, kept referenced until it finishes."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def aclose(self) -> None:
        """Idempotent: cancel the named tasks and wait for them (background tasks finish on their own)."""
        self.closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
