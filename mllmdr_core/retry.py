"""Retries of an assessment when the LLM backend fails: the one retry loop live sessions and pending
final assessments share.

``assess_with_retry`` is synchronous (call it from a worker thread): it retries only ``BackendError``
(backend down, timed out), waiting ``policy.delay(attempt)`` between tries; a ``stop`` event ends the
waiting at once (the caller no longer wants the result, e.g. another instance took the session over).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import BackendError
from mllmdr_core.snapshot import SessionSnapshot

Kind = Literal["checkpoint", "final"]


class SnapshotAssessor(Protocol):
    """What can assess a snapshot: ``mllmdr_core.assess.Assessor`` or a server engine wrapping one."""

    def assess(self, snapshot: SessionSnapshot, *, session_id: str, kind: Kind) -> Assessment: ...


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (None: until it succeeds or ``stop``), waiting ``base_s · 2^k`` (at most
    ``max_s``) after the k-th failure."""

    attempts: int | None = 3
    base_s: float = 2.0
    max_s: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed tries (1, 2, …)."""
        return float(min(self.base_s * 2 ** (failures - 1), self.max_s))


class RetryStopped(BackendError):
    """``stop`` was set while waiting to retry: no assessment was made."""


def assess_with_retry(
    assessor: SnapshotAssessor,
    snapshot: SessionSnapshot,
    *,
    session_id: str,
    kind: Kind,
    policy: RetryPolicy,
    on_retry: Callable[[int, BackendError], None] | None = None,
    stop: threading.Event | None = None,
) -> Assessment:
    """``assessor.assess(snapshot)``, retried on ``BackendError`` per ``policy``. ``on_retry(failures,
    error)`` runs before each wait. The last ``BackendError`` is raised when the attempts run out;
    ``RetryStopped`` when ``stop`` is set."""
    stop = stop or threading.Event()
    failures = 0
    while True:
        if stop.is_set():
            raise RetryStopped(f"{kind} assessment of {session_id} stopped before it was made")
        try:
            return assessor.assess(snapshot, session_id=session_id, kind=kind)
        except BackendError as exc:
            failures += 1
            if policy.attempts is not None and failures >= policy.attempts:
                raise
            if on_retry is not None:
                on_retry(failures, exc)
            stop.wait(policy.delay(failures))
