"""One retry policy for everything that reconnects (cameras, sinks, the hub): capped doubling, jittered."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """`next_delay()` gives initial, 2x, 4x ... up to `maximum`, each times a jitter of +-`jitter`
    (cameras on one switch must not retry in step); `reset()` after a success. Owned by one thread."""

    initial: float
    maximum: float
    jitter: float = 0.2
    uniform: Callable[[float, float], float] = random.uniform  # injectable for tests
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum <= 0 or not 0 <= self.jitter < 1:
            raise ValueError("Backoff needs initial > 0, maximum > 0 and 0 <= jitter < 1")
        self._next = min(self.initial, self.maximum)

    @property
    def upcoming(self) -> float:
        """The next delay before jitter."""
        return self._next

    def next_delay(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        if self.jitter == 0:
            return delay
        return delay * self.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self._next = min(self.initial, self.maximum)
