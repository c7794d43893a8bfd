"""Micro-batching: inputs of the same shape for the same model, prepared within a short window, run
as one batch (server.batch_window_ms > 0, and only for a `Predictor.batchable` model).

    caller ─ prepare (on the pool) ─ MicroBatcher.infer(predictor, prepared)
        joins the open group of its (model, shape, dtype), or opens one with a timer of `window_s`
        group full (max_batch) or timer fired ─ Predictor.infer(group) on the pool ─ each caller its result

The window bounds the latency it adds: the first input of a group waits at most `window_s` before the
batch starts. Touched on the event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_runtime import metrics
from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Prepared


class Batchable(Protocol):
    def infer(self, items: list[Prepared]) -> list[PredictionResult]: ...


@dataclass
class _Group:
    predictor: Batchable
    items: list[Prepared] = field(default_factory=list)
    waiters: list[asyncio.Future[PredictionResult]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class MicroBatcher:
    def __init__(self, executor: Executor, window_s: float, max_batch: int) -> None:
        self._executor = executor
        self.window_s = window_s
        self.max_batch = max_batch
        self._open: dict[tuple[Any, ...], _Group] = {}

    async def infer(self, predictor: Batchable, prepared: Prepared) -> PredictionResult:
        loop = asyncio.get_running_loop()
        key = (id(predictor), prepared.tensor.shape, prepared.tensor.dtype.str)
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group(predictor)
            group.timer = loop.call_later(self.window_s, self._flush, key, group)
        waiter: asyncio.Future[PredictionResult] = loop.create_future()
        group.items.append(prepared)
        group.waiters.append(waiter)
        if len(group.items) >= self.max_batch:
            self._flush(key, group)
        return await waiter

    def _flush(self, key: tuple[Any, ...], group: _Group) -> None:
        if self._open.get(key) is not group:
            return  # already flushed (full before its timer fired)
        del self._open[key]
        if group.timer is not None:
            group.timer.cancel()
        metrics.BATCH_SIZE.observe(len(group.items))
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, group.predictor.infer, group.items)
        job.add_done_callback(_settle(group.waiters))


def _settle(waiters: list[asyncio.Future[PredictionResult]]) -> Callable[[asyncio.Future[Any]], None]:
    def settle(job: asyncio.Future[list[PredictionResult]]) -> None:
        error = None if job.cancelled() else job.exception()
        for n, waiter in enumerate(waiters):
            if waiter.done():  # its caller went away
                continue
            if job.cancelled():
                waiter.cancel()
            elif error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(job.result()[n])

    return settle
