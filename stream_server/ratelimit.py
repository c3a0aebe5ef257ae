"""Token buckets: per-key request budgets (a burst, refilled at a steady rate) for the rate limits.

``Buckets`` keeps one bucket per key (a session id, an API key) and answers ``rate_limited`` with the
seconds until the next request would pass, which the routes send as ``Retry-After`` (REST) or
``retry_after_s`` (an ``error`` event on the WebSocket). The clock is monotonic and injectable (tests).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from mllmdr_core.errors import ProtocolError
from stream_server.protocol import protocol_error

MAX_KEYS = 10_000  # buckets kept; the least recently used go first (a full bucket forgets nothing)


class TokenBucket:
    """``burst`` requests at once, then ``per_s`` requests per second."""

    def __init__(self, burst: float, per_s: float, now: float) -> None:
        self.burst = burst
        self.per_s = per_s
        self.tokens = burst
        self.at = now

    def take(self, now: float) -> float:
        """0.0 when a request may pass (one token taken); else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_s


class Buckets:
    """One ``TokenBucket`` per key; ``check`` raises ``rate_limited`` (with ``retry_after_s``)."""

    def __init__(
        self, what: str, burst: float, per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.burst = burst
        self.per_s = per_s
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str) -> None:
        now = self._clock()
        bucket = self._buckets.pop(key, None) or TokenBucket(self.burst, self.per_s, now)
        self._buckets[key] = bucket
        while len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
        wait = bucket.take(now)
        if wait > 0.0:
            raise rate_limited(f"too many {self.what}; retry in {math.ceil(wait)} s", wait)


def rate_limited(message: str, retry_after_s: float) -> ProtocolError:
    err = protocol_error("rate_limited", message)
    err.retry_after_s = retry_after_s  # type: ignore[attr-defined]
    return err


def retry_after_of(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, (int, float)) else None
