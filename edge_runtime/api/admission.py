"""Who may use the inference executor now: a bounded count of admitted requests, and the body budget.

A request is admitted only once its body is in (see body.py), so clients that upload slowly hold no
inference slot; the slot is held from the executor job to the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edge_runtime import metrics
from edge_runtime.api import errors
from edge_runtime.api.body import BodyBudget


class Admission:
    """Touched only on the event loop."""

    def __init__(self, max_inflight: int, max_body_buffer_bytes: int) -> None:
        self.max_inflight = max_inflight
        self.inflight = 0
        self.bodies = BodyBudget(max_body_buffer_bytes)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.inflight >= self.max_inflight:
            raise errors.busy(retry_after_s=1)
        self.inflight += 1
        metrics.HTTP_INFLIGHT.inc()
        try:
            yield
        finally:
            self.inflight -= 1
            metrics.HTTP_INFLIGHT.dec()
