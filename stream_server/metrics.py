"""A small Prometheus text-format registry (counters, gauges, histograms with labels); thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mllmdr_core.assessment import Assessment

LabelKey = tuple[str, ...]
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
GROUNDING_BUCKETS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)


def _labels(names: Sequence[str], values: LabelKey, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self._samples()]

    def _samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def _samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {v:g}" for k, v in items]


class Gauge(_Metric):
    """A gauge set directly or computed at scrape time by ``fn``."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        fn: Callable[[], dict[LabelKey, float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelKey, float] = {}
        self.fn = fn

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[labels] = value

    def _samples(self) -> list[str]:
        values = self.fn() if self.fn else None
        with self._lock:
            items = values if values is not None else dict(self._values)
        return [f"{self.name}{_labels(self.label_names, k)} {v:g}" for k, v in sorted(items.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[LabelKey, list[int]] = {}
        self._sums: dict[LabelKey, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            counts = self._counts.setdefault(labels, [0] * (len(self.buckets) + 1))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[labels] = self._sums.get(labels, 0.0) + value

    def count(self, *labels: str) -> int:
        with self._lock:
            counts = self._counts.get(labels)
            return counts[-1] if counts else 0

    def _samples(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            for key in sorted(self._counts):
                counts = self._counts[key]
                for bound, c in zip(self.buckets, counts, strict=False):
                    le = 'le="' + f"{bound:g}" + '"'
                    out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {c}")
                inf = 'le="+Inf"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, inf)} {counts[-1]}")
                out.append(f"{self.name}_sum{_labels(self.label_names, key)} {self._sums[key]:g}")
                out.append(f"{self.name}_count{_labels(self.label_names, key)} {counts[-1]}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The server's metrics; one instance per app."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.stage_seconds = Histogram("mllmdr_stage_seconds", "Per-stage processing time.", ["stage"])
        self.lag_seconds = Histogram(
            "mllmdr_processing_lag_seconds", "Media received to processed (indicator emission) lag.", ["kind"]
        )
        self.frames = Counter("mllmdr_frames_total", "Media frames received.", ["kind"])
        self.dropped = Counter("mllmdr_frames_dropped_total", "Media frames dropped (queue full).", ["kind"])
        self.events = Counter("mllmdr_events_total", "Events published.", ["type"])
        self.ws_errors = Counter("mllmdr_client_errors_total", "Client errors answered.", ["code"])
        self.ws_slow = Counter(
            "mllmdr_slow_subscribers_total",
            "Event WebSockets closed with 1013 for reading too slowly (send_timeout: one event not taken "
            "within ws_send_timeout_s; overflow: more than ws_queue_events queued).",
            ["cause"],
        )
        self.sessions_started = Counter("mllmdr_sessions_started_total", "Sessions created.")
        self.assessments = Counter("mllmdr_assessments_total", "Assessments produced.", ["kind"])
        self.grounding = Histogram(
            "mllmdr_assessment_grounding",
            "Grounding share of each assessment (mllmdr_core.grounding: rationale sentences found in "
            "the item prompts).",
            ["kind"],
            buckets=GROUNDING_BUCKETS,
        )
        self.sessions_live = Gauge("mllmdr_sessions_live", "Sessions held in memory.")
        self.queue_depth = Gauge("mllmdr_queue_depth", "Queued frames (sum over sessions).", ["kind"])
        for m in (
            self.stage_seconds,
            self.lag_seconds,
            self.frames,
            self.dropped,
            self.events,
            self.ws_errors,
            self.ws_slow,
            self.sessions_started,
            self.assessments,
            self.grounding,
            self.sessions_live,
            self.queue_depth,
        ):
            r.add(m)

    def record_assessment(self, result: Assessment) -> None:
        """Count an assessment produced and observe its grounding share (when it has one)."""
        self.assessments.inc(1.0, result.kind)
        if result.grounding_share is not None:
            self.grounding.observe(result.grounding_share, result.kind)

    def render(self) -> str:
        return self.registry.render()
