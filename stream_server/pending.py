"""Final assessments the LLM backend could not make at session end: kept on disk, retried until done.

When the backend is still down after a session's in-line retries, the session becomes ``pending``: its
final :class:`~mllmdr_core.snapshot.SessionSnapshot` (audio/visual feature arrays, transcript, indicators,
window) is kept as ``.npz`` bytes in the store (``pending_snapshots``, readable by every instance) and,
for a fast local read, in ``<var_dir>/pending/<session>.npz`` (path in the session's ``meta``).

Several instances may share the database, so retries are claimed (``Store.claim_pending``): the parking
instance holds the claim and renews it every ``pending_claim_ttl_s / 3`` while it retries with
exponential back-off (``assess_retry_base_s`` doubling, at most ``pending_retry_max_s``; the core's
``retry.assess_with_retry``, the loop live sessions use too). Every instance
looks for unclaimed or expired claims at start-up and every ``pending_scan_s``, so a session parked by an
instance that died is taken over once its claim expires. Success is committed with
``Store.finish_pending`` (assessment stored and session ``closed`` in one transaction, only while the
claim is still ours): exactly one final assessment per session, whichever instance makes it. Then
``assessment.result`` and ``session.closed`` are published and the local file deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import StorageError
from mllmdr_core.retry import RetryPolicy, RetryStopped, assess_with_retry
from mllmdr_core.snapshot import SessionSnapshot
from stream_server.audio_processing import from_meta, stamp
from stream_server.protocol import (
    AssessmentResultEvent,
    ErrorEvent,
    SessionClosedEvent,
    SessionStatusEvent,
    error_code_of,
)
from stream_server.services import Services

log = logging.getLogger("stream_server.pending")


def save_snapshot(path: Path, snap: SessionSnapshot | bytes) -> Path:
    """Write ``snap`` (or its ``to_bytes()``) to ``path`` atomically; returns ``path``."""
    data = snap if isinstance(snap, bytes) else snap.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot keep the session's features for a later assessment: {exc}") from exc
    return path


def load_snapshot(source: Path | bytes) -> SessionSnapshot:
    """Read a snapshot written by :func:`save_snapshot` (a file) or ``SessionSnapshot.to_bytes``."""
    if isinstance(source, bytes):
        return SessionSnapshot.from_bytes(source, where="bytes from the store")
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise StorageError(f"pending session features ({source}) unreadable: {exc}") from exc
    return SessionSnapshot.from_bytes(data, where=str(source))


class PendingAssessments:
    """Background retries of final assessments for ``pending`` sessions (one task per session claimed)."""

    def __init__(self, services: Services) -> None:
        self.svc = services
        # who holds a claim in the database: host, process, and a random part (pids repeat in containers)
        self.owner = f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._scanner: asyncio.Task[None] | None = None

    @property
    def directory(self) -> Path:
        return self.svc.settings.var_path / "pending"

    def retrying(self, session_id: str) -> bool:
        task = self._tasks.get(session_id)
        return task is not None and not task.done()

    async def park(self, session_id: str, snap: SessionSnapshot, *, reason: str, media_time_s: float) -> None:
        """Keep ``snap`` (store + local file), mark the session ``pending`` claimed by us, start retrying."""
        data = await self.svc.run(snap.to_bytes)
        path = await self.svc.run(save_snapshot, self.directory / f"{session_id}.npz", data)
        info = {"snapshot": str(path), "reason": reason, "media_time_s": media_time_s, "since": time.time()}
        ttl = self.svc.settings.pending_claim_ttl_s
        await self.svc.store.park_pending(session_id, data, info, owner=self.owner, claim_ttl_s=ttl)
        self.start(session_id)

    def start(self, session_id: str) -> None:
        if not self.retrying(session_id):
            self._tasks[session_id] = asyncio.ensure_future(self._retry(session_id))

    async def resume_all(self) -> int:
        """Server start-up: retry every pending session no live instance holds (returns how many), then
        look again every ``pending_scan_s`` (claims of instances that died expire)."""
        count = await self.scan()
        if self._scanner is None:
            self._scanner = asyncio.ensure_future(self._scan_forever())
        return count

    async def scan(self) -> int:
        """Start retrying the pending sessions whose claim is free or expired."""
        ids = [s for s in await self.svc.store.claimable_pending() if not self.retrying(s)]
        for session_id in ids:
            self.start(session_id)
        return len(ids)

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(self.svc.settings.pending_scan_s)
            try:
                await self.scan()
            except StorageError as exc:
                log.warning("pending scan failed: %s", exc)

    async def close(self) -> None:
        """Stop retrying; claims still held are released so another instance can take over at once."""
        tasks = [t for t in (self._scanner, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._scanner = None

    async def _retry(self, session_id: str) -> None:
        store, ttl = self.svc.store, self.svc.settings.pending_claim_ttl_s
        try:
            if not await store.claim_pending(session_id, self.owner, ttl):
                return  # closed meanwhile, or another instance holds it (its claim expires if it dies)
        except StorageError as exc:
            log.warning("pending session %s: cannot claim: %s", session_id, exc)
            return
        lost = threading.Event()
        keeper = asyncio.ensure_future(self._keep_claim(session_id, lost))
        finished = False
        try:
            row = await store.get_session(session_id)
            info: dict[str, Any] = (row or {}).get("meta", {}).get("pending") or {}
            snap = await self._load(session_id, info)
            result = await self._assess_until_done(session_id, snap, lost)
            if result is not None:
                result = stamp(result, from_meta((row or {}).get("meta", {})))
            if result is None or not await store.finish_pending(session_id, self.owner, result):
                log.warning(
                    "pending session %s: claim lost; another instance makes its assessment", session_id
                )
                return
            finished = True
            await self._publish_finished(session_id, result, info)
            with contextlib.suppress(OSError):
                Path(info.get("snapshot") or self.directory / f"{session_id}.npz").unlink()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not a backend outage (bad snapshot, model error): report it, stay pending
            log.warning("pending session %s: %s", session_id, exc, exc_info=True)
            with contextlib.suppress(Exception):
                await self.svc.bus.publish(
                    ErrorEvent(
                        session_id=session_id,
                        code=error_code_of(exc),  # type: ignore[arg-type]
                        message=f"pending final assessment failed: {str(exc)[:400]}",
                    )
                )
        finally:
            keeper.cancel()
            if not finished:
                with contextlib.suppress(Exception):
                    await store.release_claim(session_id, self.owner)

    async def _keep_claim(self, session_id: str, lost: threading.Event) -> None:
        """Renew our claim every third of its lifetime; set ``lost`` when another instance has it."""
        ttl = self.svc.settings.pending_claim_ttl_s
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await self.svc.store.claim_pending(session_id, self.owner, ttl):
                    lost.set()
                    return
            except StorageError as exc:  # a database blip: try again; the claim lasts ttl
                log.info("pending session %s: claim renewal failed: %s", session_id, exc)

    async def _load(self, session_id: str, info: dict[str, Any]) -> SessionSnapshot:
        """The local file when this instance parked the session, else the store's copy."""
        local = Path(info["snapshot"]) if info.get("snapshot") else None
        if local is not None and local.is_file():
            return await self.svc.run(load_snapshot, local)
        data = await self.svc.store.pending_snapshot(session_id)
        if data is None:
            raise StorageError(
                f"pending session {session_id}: its features are in neither the store nor {local}"
            )
        return await self.svc.run(load_snapshot, data)

    async def _assess_until_done(
        self, session_id: str, snap: SessionSnapshot, lost: threading.Event
    ) -> Assessment | None:
        """Retry until the backend answers (None once our claim is lost: another instance has it)."""
        settings = self.svc.settings
        policy = RetryPolicy(None, settings.assess_retry_base_s, settings.pending_retry_max_s)

        def retry() -> Assessment | None:
            if lost.wait(policy.delay(1)):
                return None
            t0 = time.perf_counter()
            try:
                result = assess_with_retry(
                    self.svc.engine,
                    snap,
                    session_id=session_id,
                    kind="final",
                    policy=policy,
                    on_retry=lambda n, exc: log.info(
                        "pending session %s: backend still down (%s); try %d", session_id, exc, n
                    ),
                    stop=lost,
                )
            except RetryStopped:
                return None
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - t0, "assess_final")
            return result

        try:  # not in the analysis pool: a long outage must not hold a live session's worker thread
            return await asyncio.to_thread(retry)
        except asyncio.CancelledError:
            lost.set()  # the thread stops waiting at once
            raise

    async def _publish_finished(self, session_id: str, result: Assessment, info: dict[str, Any]) -> None:
        """After ``finish_pending`` committed: the result, the closed state, ``session.closed``."""
        svc = self.svc
        svc.metrics.record_assessment(result)
        await svc.bus.publish(AssessmentResultEvent(session_id=session_id, assessment=result))
        await svc.bus.publish(
            SessionStatusEvent(
                session_id=session_id, state="closed", publisher_connected=False, detail="assessment done"
            )
        )
        reason = info.get("reason", "ended")
        await svc.bus.publish(
            SessionClosedEvent(
                session_id=session_id,
                reason=reason if reason in ("ended", "publisher_gone", "error") else "ended",
                final_assessment=True,
                media_time_s=float(info.get("media_time_s", 0.0)),
            )
        )
        svc.bus.close_session(session_id)
        log.info("pending session %s: final assessment stored", session_id)
