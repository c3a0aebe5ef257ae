"""The live sessions of this process: created, looked up, resumed from the store after a restart."""

from __future__ import annotations

import asyncio
import secrets

from stream_server.audio_processing import from_meta
from stream_server.pending import PendingAssessments
from stream_server.protocol import protocol_error
from stream_server.services import Services
from stream_server.session import LiveSession


def new_session_id() -> str:
    return "s_" + secrets.token_hex(8)


class SessionManager:
    """Live sessions of this process; sessions known only to the store are resumed on demand."""

    def __init__(self, services: Services, pending: PendingAssessments) -> None:
        self.svc = services
        self.pending = pending
        self.sessions: dict[str, LiveSession] = {}
        self._lock = asyncio.Lock()
        self._expiries: set[asyncio.Task[None]] = set()  # unused-session timers
        services.metrics.sessions_live.fn = self._count_live
        services.metrics.queue_depth.fn = self._queue_depths

    def _count_in_use(self) -> int:
        """Live sessions a publisher has connected to (created-but-unused ones do not count)."""
        return sum(1 for s in self.sessions.values() if s.live and s.has_media)

    def _count_live(self) -> dict[tuple[str, ...], float]:
        return {(): float(sum(1 for s in self.sessions.values() if s.live))}

    def _queue_depths(self) -> dict[tuple[str, ...], float]:
        live = list(self.sessions.values())
        return {
            ("audio",): float(sum(len(s.ingest.queues.audio) for s in live)),
            ("video",): float(sum(len(s.ingest.queues.video) for s in live)),
        }

    async def create(
        self, *, external_id: str | None, checkpoint_interval_s: float | None, expires_in_s: float
    ) -> LiveSession:
        """A new session; closed (``expired``) after ``expires_in_s`` (or ``unused_session_ttl_s`` if
        sooner) when nobody has used it by then."""
        live = self._count_in_use()
        if live >= self.svc.settings.max_sessions:
            raise protocol_error("rate_limited", f"server is at its limit of {live} live sessions")
        sid = new_session_id()
        interval = checkpoint_interval_s or self.svc.settings.checkpoint_interval_s
        await self.svc.store.create_session(
            sid,
            self.svc.engine.info.bundle_id,
            {"external_id": external_id, "checkpoint_interval_s": interval},
        )
        session = await self.svc.run(self._new, sid, interval)
        self.sessions[sid] = session
        await session.start(announce=True)
        self.svc.metrics.sessions_started.inc()
        unused_s = min(expires_in_s, self.svc.settings.unused_session_ttl_s)
        timer = asyncio.ensure_future(self._expire_unused(session, unused_s))
        self._expiries.add(timer)
        timer.add_done_callback(self._expiries.discard)
        return session

    async def _expire_unused(self, session: LiveSession, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if session.live and not session.used:
            await session.end("expired")

    async def get_live(self, session_id: str) -> LiveSession:
        """The live session, resuming one from the store (after a restart); errors if unknown or ended."""
        async with self._lock:
            session = self.sessions.get(session_id)
            if session is not None and session.live:
                return session
            row = await self.svc.store.get_session(session_id)
            if row is None:
                raise protocol_error("not_found", f"unknown session {session_id}")
            if row["state"] in ("closed", "pending") or session is not None:
                raise protocol_error("session_closed", f"session {session_id} has ended")
            interval = row["meta"].get("checkpoint_interval_s")
            session = await self.svc.run(self._new, session_id, interval)
            session.assessments.audio_processing = from_meta(row["meta"])
            transcript = await self.svc.store.transcript(session_id)
            points = await self.svc.store.indicators(session_id)
            media_time_s = max((float(p["media_time_s"]) for p in points), default=0.0)
            self.sessions[session_id] = session
            await session.resume_from(transcript, media_time_s)
            return session

    def get(self, session_id: str) -> LiveSession | None:
        """The session this process holds (live or closed), without resuming one."""
        return self.sessions.get(session_id)

    def _new(self, session_id: str, interval: float | None) -> LiveSession:
        """Worker thread: a session (its state loads the engine's per-session models)."""
        return LiveSession(session_id, self.svc, self.pending, checkpoint_interval_s=interval)

    async def close(self) -> None:
        """Server shutdown: stop media; sessions stay open in the store and resume on the next offer."""
        for timer in list(self._expiries):
            timer.cancel()
        await asyncio.gather(*(s.stop() for s in self.sessions.values() if s.live), return_exceptions=True)
