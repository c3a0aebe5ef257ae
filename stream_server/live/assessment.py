"""Assessment scheduling: checkpoints (on request and on a schedule), the final one, parking it.

Every assessment goes through the core's ``assess_with_retry`` (``ASSESS_ATTEMPTS`` tries, an
``assessment_retry`` warning before each wait); a final one the backend still cannot make is parked
with ``PendingAssessments`` and retried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Literal

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import BackendError, MllmdrError
from mllmdr_core.retry import RetryPolicy, assess_with_retry
from mllmdr_core.snapshot import SessionSnapshot
from stream_server.audio_processing import Processing, stamp
from stream_server.live.events import SessionEvents
from stream_server.live.state import GuardedState
from stream_server.live.tasks import TaskSet
from stream_server.pending import PendingAssessments
from stream_server.protocol import AssessmentResultEvent, CheckpointResultEvent, CloseReason
from stream_server.services import Services

ASSESS_ATTEMPTS = 3  # final/checkpoint assessment tries when the LLM backend fails


class AssessmentScheduler:
    """Owns the checkpoint schedule; ``checkpoint`` and ``final`` store and publish their result."""

    def __init__(
        self,
        session_id: str,
        services: Services,
        pending: PendingAssessments,
        *,
        state: GuardedState,
        events: SessionEvents,
        interval_s: float | None,
        connected: Callable[[], bool],
    ) -> None:
        self.session_id = session_id
        self.svc = services
        self.pending = pending
        self.state = state
        self.events = events
        self.interval_s = interval_s
        self._connected = connected
        self.tasks = TaskSet(f"{session_id}:assessment")
        self.audio_processing: Processing = {}  # as the publisher reported it; carried by every result

    def start(self) -> None:
        if self.interval_s:
            self.tasks.start("schedule", self._schedule(self.interval_s))

    async def _schedule(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._connected():
                with contextlib.suppress(MllmdrError):
                    await self.checkpoint(trigger="schedule")

    async def snapshot(self) -> SessionSnapshot:
        return await self.svc.run(self.state.snapshot, self.svc.settings.indicator_window_s)

    def _retry_warning(self, kind: str) -> Callable[[int, BackendError], None]:
        """Worker thread → loop: an ``assessment_retry`` warning before each wait of the retry loop."""

        def warn(failures: int, exc: BackendError) -> None:
            message = f"{kind} assessment failed ({exc}); retrying"
            self.events.warn_soon("assessment_retry", message, once=False, attempt=failures)

        return warn

    async def assess(
        self, kind: Literal["checkpoint", "final"], taken: SessionSnapshot | None = None
    ) -> Assessment:
        """One assessment (one at a time per process), stored."""
        settings = self.svc.settings
        policy = RetryPolicy(ASSESS_ATTEMPTS, settings.assess_retry_base_s, settings.pending_retry_max_s)
        async with self.svc.assess_slots:
            t0 = time.perf_counter()
            snap = taken if taken is not None else await self.snapshot()
            # not in the analysis pool: the back-off between tries must not hold an ingest worker
            result = await asyncio.to_thread(
                lambda: assess_with_retry(
                    self.svc.engine,
                    snap,
                    session_id=self.session_id,
                    kind=kind,
                    policy=policy,
                    on_retry=self._retry_warning(kind),
                )
            )
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - t0, f"assess_{kind}")
        result = stamp(result, self.audio_processing)
        self.svc.metrics.record_assessment(result)
        await self.svc.store.add_assessment(result)
        return result

    async def checkpoint(
        self, *, trigger: Literal["request", "schedule"] = "request", ref: str | None = None
    ) -> Assessment:
        try:
            result = await self.assess("checkpoint")
        except Exception as exc:
            await self.events.error(exc)
            raise
        await self.events.publish(
            CheckpointResultEvent(session_id=self.session_id, ref=ref, trigger=trigger, assessment=result)
        )
        return result

    async def final(
        self, reason: CloseReason, *, media_time_s: float, started: float
    ) -> tuple[Assessment | None, bool]:
        """The final assessment, published; ``(None, True)`` when it was parked for a later retry."""
        snap = await self.snapshot()  # after the flush: the last window and segment
        result: Assessment | None = None
        try:
            result = await self.assess("final", snap)
            self.svc.metrics.stage_seconds.observe(time.perf_counter() - started, "end_to_final")
            await self.events.publish(AssessmentResultEvent(session_id=self.session_id, assessment=result))
        except BackendError as exc:  # still down after the retries: keep the features, retry later
            return None, await self._park(snap, reason, exc, media_time_s)
        except Exception as exc:
            await self.events.error(exc)
        return result, False

    async def _park(
        self, snap: SessionSnapshot, reason: CloseReason, exc: BackendError, media_time_s: float
    ) -> bool:
        """Backend down at the end: session ``pending``, features kept, assessment retried. False if the
        features could not be kept (then the session closes without a final assessment)."""
        try:
            await self.pending.park(self.session_id, snap, reason=reason, media_time_s=media_time_s)
        except MllmdrError as store_exc:
            await self.events.error(exc)
            await self.events.error(store_exc)
            return False
        await self.events.status("pending", "final assessment waits for the LLM backend")
        await self.events.warn(
            "assessment_pending",
            f"final assessment failed ({exc}); the session's features are kept and the assessment is "
            "retried in the background; it will arrive as assessment.result",
        )
        return True

    async def aclose(self) -> None:
        """Idempotent: the checkpoint schedule stops (a checkpoint under way is cancelled with it)."""
        await self.tasks.aclose()
