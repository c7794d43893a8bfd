"""A token bucket per sink: over the limit, messages wait in the outbox instead of being sent."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate_per_minute` tokens per minute, bursts up to `burst`; 0 = unlimited."""

    def __init__(
        self, rate_per_minute: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, rate_per_minute / 6.0)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def wait_time(self) -> float:
        """Seconds until one token is available (0 = now). Does not take it."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self) -> None:
        if self.rate > 0:
            self._refill()
            self._tokens -= 1.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
