"""Final assessments the LLM backend could not make at session end: kept on disk, retried until done.

When the backend is still down after a session's in-line retries, the session becomes ``pending``: its
final :class:`~stream_server.engine.Snapshot` (audio/visual feature arrays, transcript, indicators,
window) is written to ``<var_dir>/pending/<session>.npz`` and its path stored in the session's ``meta``.
:class:`PendingAssessments` retries with exponential back-off (``assess_retry_base_s`` doubling, at most
``pending_retry_max_s``), and on start-up for every session the store still holds as ``pending``. On
success it stores the assessment, publishes ``assessment.result``, marks the session ``closed`` and
publishes ``session.closed``; the snapshot file is then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import BackendError, StorageError
from mllmdr_core.frames import TranscriptLine
from stream_server.engine import Snapshot
from stream_server.protocol import (
    AssessmentResultEvent,
    ErrorEvent,
    SessionClosedEvent,
    SessionStatusEvent,
    error_code_of,
)

if TYPE_CHECKING:
    from stream_server.session import Services

log = logging.getLogger("stream_server.pending")


def save_snapshot(path: Path, snap: Snapshot) -> Path:
    """Write ``snap`` to ``path`` (``.npz``, no pickles) atomically; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                audio=snap.audio,  # (Ta, D_audio)
                visual=snap.visual,  # (Tv, D_visual)
                window=np.asarray(snap.window, dtype=np.float64),  # (2,)
                transcript=np.asarray(json.dumps([asdict(line) for line in snap.transcript])),
                indicators=np.asarray(json.dumps(snap.indicators)),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot keep the session's features for a later assessment: {exc}") from exc
    return path


def load_snapshot(path: Path) -> Snapshot:
    """Read a snapshot written by :func:`save_snapshot`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            window = data["window"]
            return Snapshot(
                audio=np.array(data["audio"], dtype=np.float32),
                visual=np.array(data["visual"], dtype=np.float32),
                transcript=[TranscriptLine(**d) for d in json.loads(str(data["transcript"]))],
                indicators={str(k): float(v) for k, v in json.loads(str(data["indicators"])).items()},
                window=(float(window[0]), float(window[1])),
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise StorageError(f"pending session features {path} unreadable: {exc}") from exc


class PendingAssessments:
    """Background retries of final assessments for ``pending`` sessions (one task per session)."""

    def __init__(self, services: Services) -> None:
        self.svc = services
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def directory(self) -> Path:
        return self.svc.settings.var_path / "pending"

    def retrying(self, session_id: str) -> bool:
        task = self._tasks.get(session_id)
        return task is not None and not task.done()

    async def park(self, session_id: str, snap: Snapshot, *, reason: str, media_time_s: float) -> None:
        """Keep ``snap`` on disk, mark the session ``pending`` in the store and start retrying."""
        path = await self.svc.run(save_snapshot, self.directory / f"{session_id}.npz", snap)
        meta = {"snapshot": str(path), "reason": reason, "media_time_s": media_time_s, "since": time.time()}
        await self.svc.store.update_meta(session_id, {"pending": meta})
        await self.svc.store.set_state(session_id, "pending")
        self.start(session_id)

    def start(self, session_id: str) -> None:
        if not self.retrying(session_id):
            self._tasks[session_id] = asyncio.ensure_future(self._retry(session_id))

    async def resume_all(self) -> int:
        """Server start-up: retry every session the store holds as ``pending``. Returns how many."""
        ids = await self.svc.store.sessions_in_state("pending")
        for session_id in ids:
            self.start(session_id)
        return len(ids)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _retry(self, session_id: str) -> None:
        try:
            row = await self.svc.store.get_session(session_id)
            info: dict[str, Any] = (row or {}).get("meta", {}).get("pending") or {}
            if row is None or row["state"] != "pending" or not info.get("snapshot"):
                return
            path = Path(info["snapshot"])
            snap = await self.svc.run(load_snapshot, path)
            result = await self._assess_until_done(session_id, snap)
            await self._finish(session_id, result, info)
            with contextlib.suppress(OSError):
                path.unlink()
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

    async def _assess_until_done(self, session_id: str, snap: Snapshot) -> Assessment:
        settings = self.svc.settings
        attempt = 0
        while True:
            delay = min(settings.assess_retry_base_s * 2**attempt, settings.pending_retry_max_s)
            await asyncio.sleep(delay)
            try:
                async with self.svc.assess_slots:
                    t0 = time.perf_counter()
                    result = await self.svc.run(
                        lambda: self.svc.engine.assess(snap, session_id=session_id, kind="final")
                    )
                    self.svc.metrics.stage_seconds.observe(time.perf_counter() - t0, "assess_final")
                return result
            except BackendError as exc:
                attempt += 1
                log.info("pending session %s: backend still down (%s); try %d", session_id, exc, attempt)

    async def _finish(self, session_id: str, result: Assessment, info: dict[str, Any]) -> None:
        svc = self.svc
        await svc.store.add_assessment(result)
        svc.metrics.assessments.inc(1.0, "final")
        await svc.bus.publish(AssessmentResultEvent(session_id=session_id, assessment=result))
        await svc.store.update_meta(session_id, {"pending": None})
        await svc.store.set_state(session_id, "closed", ended=True)
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

