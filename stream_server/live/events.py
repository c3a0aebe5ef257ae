"""The session's one way out: lifecycle status (published only on change), warnings, errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mllmdr_core.errors import MllmdrError, StorageError
from stream_server.live.tasks import TaskSet
from stream_server.protocol import (
    ErrorEvent,
    ServerEvent,
    SessionStateName,
    SessionStatusEvent,
    WarningEvent,
    error_code_of,
)
from stream_server.services import Services

log = logging.getLogger("stream_server.session")
# (publisher connected, kinds of the tracks received): what a status event reports besides the state
Link = Callable[[], tuple[bool, frozenset[str]]]


class SessionEvents:
    """Publishes one session's events on the bus; the session's state lives here."""

    def __init__(self, session_id: str, services: Services, link: Link) -> None:
        self.session_id = session_id
        self.svc = services
        self.state: SessionStateName = "created"
        self.tasks = TaskSet(f"{session_id}:events")
        self._link = link
        self._last: tuple[str, bool, bool, bool] | None = None  # the last status published
        self._warned: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self) -> None:
        """Worker threads post their warnings to the running loop (called on the loop)."""
        self._loop = asyncio.get_running_loop()

    async def publish(self, event: ServerEvent, *, persist: bool = True) -> Any:
        return await self.svc.bus.publish(event, persist=persist)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.tasks.spawn(coro)

    async def status(self, state: SessionStateName, detail: str = "") -> None:
        """Set the state; store it and publish ``session.status`` only when what it reports changed."""
        self.state = state
        connected, kinds = self._link()
        now = (state, connected and state == "live", "audio" in kinds, "video" in kinds)
        if now == self._last:
            return
        self._last = now
        with contextlib.suppress(MllmdrError):
            await self.svc.store.set_state(self.session_id, state, ended=state == "closed")
        await self.publish(
            SessionStatusEvent(
                session_id=self.session_id,
                state=state,
                publisher_connected=now[1],
                audio=now[2],
                video=now[3],
                detail=detail,
            )
        )

    def claim_once(self, code: str) -> bool:
        """True the first time ``code`` is claimed (a once-per-session warning)."""
        if code in self._warned:
            return False
        self._warned.add(code)
        return True

    async def warn(self, code: str, message: str, once: bool = True, **detail: float | int | str) -> None:
        if not self.claim_once(code) and once:
            return
        await self.publish(
            WarningEvent(session_id=self.session_id, code=code, message=message, detail=detail)
        )

    def warn_soon(self, code: str, message: str, once: bool = True, **detail: float | int | str) -> None:
        """A warning raised from a worker thread (or a callback): published by a task on the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self.spawn(self.warn(code, message, once, **detail)))

    async def error(self, exc: BaseException, *, fatal: bool = False) -> None:
        """The one error path: an ``error`` event, published live even when the store is failing."""
        code = error_code_of(exc)
        log.warning("session %s: %s: %s", self.session_id, code, exc, exc_info=code == "internal")
        event = ErrorEvent(
            session_id=self.session_id,
            code=code,  # type: ignore[arg-type]
            message=str(exc)[:500] or type(exc).__name__,
            fatal=fatal,
        )
        try:
            await self.publish(event)
        except StorageError:
            # the store itself is failing (disk full, read-only): still tell the live subscribers
            with contextlib.suppress(Exception):
                await self.publish(event, persist=False)
        except Exception:
            log.exception("session %s: could not publish an error event", self.session_id)

    async def aclose(self) -> None:
        """Idempotent; warnings still in flight finish on their own."""
        await self.tasks.aclose()
