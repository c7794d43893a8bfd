"""Fan events out to every sink over bounded queues; a slow or failing sink never blocks the cameras.

Policy when a sink's queue is full: the oldest queued event is dropped and counted
(edge_runtime_sink_dropped_total). Durable store-and-forward comes with the MQTT / IoT Hub sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from edge_runtime import metrics
from edge_runtime.domain import Event

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    async def publish(self, event: Event) -> None:
        """Deliver one event; raise to have it retried."""

    async def close(self) -> None: ...


class Dispatcher:
    RETRY_DELAY_S = 1.0

    def __init__(self, sinks: Sequence[Sink], queue_size: int) -> None:
        self._sinks = tuple(sinks)
        self._queues: dict[str, asyncio.Queue[Event]] = {s.name: asyncio.Queue(queue_size) for s in sinks}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._drain(sink), name=f"sink-{sink.name}") for sink in self._sinks
        ]

    def publish(self, event: Event) -> None:
        """Never blocks: called from the sampling loop."""
        metrics.EVENTS.labels(event.camera, event.tag, event.kind.value).inc()
        for sink in self._sinks:
            queue = self._queues[sink.name]
            if queue.full():
                queue.get_nowait()
                queue.task_done()
                metrics.SINK_DROPPED.labels(sink.name).inc()
                log.warning("sink %s is behind: dropped its oldest queued event", sink.name)
            queue.put_nowait(event)

    async def _drain(self, sink: Sink) -> None:
        queue = self._queues[sink.name]
        while True:
            event = await queue.get()
            while True:
                try:
                    await sink.publish(event)
                    metrics.SINK_SENT.labels(sink.name).inc()
                    queue.task_done()
                    break
                except Exception as exc:  # a sink's failure must not end its drain loop
                    metrics.SINK_FAILED.labels(sink.name).inc()
                    log.warning("sink %s failed (%s); retrying", sink.name, exc)
                    await asyncio.sleep(self.RETRY_DELAY_S)

    async def close(self, drain_timeout: float = 2.0) -> None:
        """Give queued events a moment to go out, then stop and close every sink."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                # join() also waits for the event a sink is delivering right now
                await asyncio.gather(*(q.join() for q in self._queues.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sink in self._sinks:
            await sink.close()
