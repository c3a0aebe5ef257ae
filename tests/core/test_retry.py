"""assess_with_retry: the one retry loop of live assessments and pending finals."""

from __future__ import annotations

import threading
import time

import pytest

from mllmdr_core.assessment import Assessment, ItemAssessment, ModelInfo
from mllmdr_core.errors import BackendError, FeatureSpecError
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.retry import Kind, RetryPolicy, RetryStopped, assess_with_retry
from mllmdr_core.snapshot import SessionSnapshot


def _assessment(session_id: str, kind: Kind) -> Assessment:
    info = ModelInfo(bundle_id="b", training_data="synthetic", non_clinical=False, backend="test")
    return Assessment(
        session_id=session_id,
        kind=kind,
        window_start_s=0.0,
        window_end_s=1.0,
        items=[ItemAssessment(key=k, score=0, rationale="-") for k in ITEM_KEYS],
        total=0,
        binary=False,
        model=info,
    )


class Flaky:
    """Fails with ``error`` for the first ``failures`` calls, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or BackendError("backend down (test)")
        self.calls = 0

    def assess(self, snapshot: SessionSnapshot, *, session_id: str, kind: Kind) -> Assessment:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return _assessment(session_id, kind)


def test_policy_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=None, base_s=0.5, max_s=3.0)
    assert [policy.delay(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_retries_backend_errors_and_reports_each_wait() -> None:
    seen: list[int] = []
    flaky = Flaky(2)
    result = assess_with_retry(
        flaky,
        SessionSnapshot(),
        session_id="s",
        kind="final",
        policy=RetryPolicy(3, 0.01, 0.01),
        on_retry=lambda n, _exc: seen.append(n),
    )
    assert result.session_id == "s" and result.kind == "final"
    assert flaky.calls == 3 and seen == [1, 2]


def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    flaky = Flaky(5)
    with pytest.raises(BackendError, match="backend down"):
        assess_with_retry(
            flaky, SessionSnapshot(), session_id="s", kind="checkpoint", policy=RetryPolicy(3, 0.0, 0.0)
        )
    assert flaky.calls == 3


def test_other_errors_are_not_retried() -> None:
    flaky = Flaky(1, FeatureSpecError("wrong width"))
    with pytest.raises(FeatureSpecError):
        assess_with_retry(flaky, SessionSnapshot(), session_id="s", kind="final", policy=RetryPolicy(3, 0, 0))
    assert flaky.calls == 1


def test_stop_ends_an_unbounded_wait_at_once() -> None:
    stop = threading.Event()
    flaky = Flaky(10**6)
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(RetryStopped):
        assess_with_retry(
            flaky,
            SessionSnapshot(),
            session_id="s",
            kind="final",
            policy=RetryPolicy(None, 30.0, 30.0),
            stop=stop,
        )
    assert time.monotonic() - t0 < 5.0 and flaky.calls == 1
