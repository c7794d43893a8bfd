"""Who may use the inference executor now: a bounded count of admitted requests, and the body budget.

A request is admitted only once its body is in (see body.py), so clients that upload slowly hold no
inference slot; the slot is held from the executor job to the answer. When all slots are taken a request
waits a short, bounded time for one (clients such as msrest do not retry a POST, so a refusal is a
failed inspection), in arrival order, then is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edge_runtime import metrics
from edge_runtime.api import errors
from edge_runtime.api.body import BodyBudget


class Admission:
    """Touched only on the event loop."""

    def __init__(self, max_inflight: int, max_body_buffer_bytes: int, wait_s: float = 1.0) -> None:
        self.max_inflight = max_inflight
        self.wait_s = wait_s
        self.bodies = BodyBudget(max_body_buffer_bytes)
        self._slots = asyncio.Semaphore(max_inflight)

    @asynccontextmanager
    async def slot(self, status: int = 503) -> AsyncIterator[None]:
        """`status`: what a refusal answers (503 on the container's routes, 429 on the cloud's)."""
        try:
            async with asyncio.timeout(self.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise errors.busy(retry_after_s=1, status=status) from None
        metrics.HTTP_INFLIGHT.inc()
        try:
            yield
        finally:
            self._slots.release()
            metrics.HTTP_INFLIGHT.dec()
