"""Events -> durable outbox -> one delivery loop per sink.

`publish` stores the event for every sink in the outbox (one sqlite transaction) and returns; each
sink's loop sends what waits for it (order below), deleting a row only once the sink confirms it. A sink
that is down or slow never blocks the cameras or the other sinks; its messages wait on disk, bounded
by count and age (drops counted in edge_runtime_sink_dropped_total{reason}). A failed send is retried
after a back-off (`retry`, by default 0.5 s doubling to 5 s), or at once when the sink reports that it has
reconnected.

Order: per (camera, ROI, tag) events go in the order they were stored. Across keys, events stored after
delivery (re)started (the start, or the first confirmed send after a failure) go before the backlog
stored until then, so after an outage a live alarm does not queue behind every stored event (see
Outbox.next_batch); a batch of backlog is cut short when something new is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edge_runtime import metrics
from edge_runtime.backoff import Backoff
from edge_runtime.domain import EventKind, Record
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.outbox import Backlog, MessageType, Outbox, OutboxRecord
from edge_runtime.events.ratelimit import TokenBucket
from edge_runtime.events.summary import SummaryCounter
from edge_runtime.settings import DeliverySettings
from edge_runtime.status import SinkStatus

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str
    delivery: DeliverySettings

    async def start(self) -> None:
        """Begin connecting in the background; an unreachable broker must not raise here."""

    async def publish(self, record: OutboxRecord) -> None:
        """Deliver one message and return once the far end confirmed it; raise to retry later."""

    def status(self) -> SinkStatus:
        """Where it delivers and, for a sink with a connection, whether it is up and its last error."""

    async def close(self) -> None: ...


@runtime_checkable
class ConnectionWatch(Protocol):
    """A sink that pushes its connection changes (MQTT): a reconnect ends its retry wait at once."""

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call `listener(connected)` on the event loop at every change; returns the unsubscribe."""


def event_headers(event: Record) -> dict[str, str]:
    """An event's routing headers (OutboxRecord.headers): MQTT topic, IoT Hub properties, UI filters."""
    return {"camera": event.camera, "tag": event.tag, "kind": event.kind.value}


def failure_reason(exc: BaseException) -> str:
    """Never empty: a bare TimeoutError() says nothing in str(), so its type name stands in."""
    text = str(exc).strip()
    return text or type(exc).__name__


def default_retry() -> Backoff:
    """0.5 s doubling to 5 s, no jitter: a sink that is down fails fast, so retrying often is cheap, and
    each sink's retries are its own (the broker's reconnect pace is the client's, not ours)."""
    return Backoff(0.5, 5.0, jitter=0.0)


def default_bucket(delivery: DeliverySettings) -> TokenBucket:
    return TokenBucket(delivery.rate_limit_per_minute)


@dataclass(slots=True)
class _Delivering:
    """One sink's delivery loop state."""

    backoff: Backoff
    failing: bool = False
    fresh_after: int = 0  # outbox seq when delivery last (re)started: later rows overtake the backlog


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    max_events: int = 100_000
    max_age_s: float = 7 * 24 * 3600.0


class Dispatcher:
    """`retry` makes each sink's back-off policy, `bucket_for` its rate limit; `clock` (wall time) dates
    summaries and outbox ages; `housekeeping_s` paces the bounds and depth metrics; `batch` is how many
    rows one look at the outbox plans."""

    def __init__(
        self,
        outbox: Outbox,
        sinks: Sequence[Sink],
        limits: OutboxLimits = OutboxLimits(),
        *,
        retry: Callable[[], Backoff] = default_retry,
        bucket_for: Callable[[DeliverySettings], TokenBucket] = default_bucket,
        clock: Callable[[], float] = time.time,
        housekeeping_s: float = 1.0,
        batch: int = 50,
        on_backlog: Callable[[str, Backlog], None] | None = None,
    ) -> None:
        """`on_backlog(sink, backlog)`: each sink's outbox depth and oldest row, at every housekeeping."""
        self._on_backlog = on_backlog
        self._outbox = outbox
        self._sinks = tuple(sinks)
        self._limits = limits
        self._retry = retry
        self._bucket_for = bucket_for
        self._clock = clock
        self._housekeeping_s = housekeeping_s
        self._batch = batch
        self._wakeups = {s.name: asyncio.Event() for s in sinks}
        self._idle = {s.name: asyncio.Event() for s in sinks}
        self._reconnected = {s.name: asyncio.Event() for s in sinks}
        self._unwatch: list[Callable[[], None]] = []
        self._summaries = {
            s.name: SummaryCounter(clock()) for s in sinks if s.delivery.summary_interval_s > 0
        }
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    async def start(self) -> None:
        names = {s.name for s in self._sinks}
        for name in names:  # series at 0 from the start, so rate() and the alerts see the first drop
            for reason in ("full", "expired"):
                metrics.SINK_DROPPED.labels(name, reason)
        for sink_name, count in (await self._outbox.pending_by_sink()).items():
            if sink_name in names:
                log.info("outbox: %d message(s) from before the restart wait for %s", count, sink_name)
            else:
                log.warning(
                    "outbox: %d message(s) wait for sink %s, which is not configured", count, sink_name
                )
        for sink in self._sinks:
            if isinstance(sink, ConnectionWatch):
                self._unwatch.append(sink.watch_connection(functools.partial(self._connection, sink.name)))
            await sink.start()
            backlog_until = await self._outbox.last_seq(sink.name)  # stored before the start: backlog
            deliver = self._deliver(sink, backlog_until)
            self._tasks.append(asyncio.create_task(deliver, name=f"deliver-{sink.name}"))
            if sink.name in self._summaries:
                self._tasks.append(asyncio.create_task(self._summarise(sink), name=f"summary-{sink.name}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="outbox-housekeeping"))

    async def publish(self, event: Record) -> None:
        """Store the event durably for every sink; returns once it is on disk."""
        metrics.EVENTS.labels(event.camera, event.tag, event.kind.value).inc()
        for counter in self._summaries.values():
            counter.add(event)
        # A verdict answers a trigger: it goes out even where only summaries of defect events do.
        verdict = event.kind is EventKind.VERDICT
        targets = [s.name for s in self._sinks if s.delivery.send_events or verdict]
        await self._store(targets, MessageType.EVENT, event.id, event.to_dict(), event_headers(event))

    async def _store(
        self,
        targets: Sequence[str],
        type_: MessageType,
        message_id: str,
        body: dict[str, object],
        headers: Mapping[str, str],
    ) -> None:
        if not targets:
            return
        dropped = await self._outbox.put(targets, type_, message_id, body, self._limits.max_events, headers)
        for name in targets:
            if dropped.get(name):
                metrics.SINK_DROPPED.labels(name, "full").inc(dropped[name])
                log.warning("outbox for %s is full: dropped its %d oldest message(s)", name, dropped[name])
            self._idle[name].clear()
            self._wakeups[name].set()

    def _connection(self, sink_name: str, connected: bool) -> None:
        if connected:
            self._reconnected[sink_name].set()

    async def _deliver(self, sink: Sink, fresh_after: int) -> None:
        bucket = self._bucket_for(sink.delivery)
        state = _Delivering(self._retry(), fresh_after=fresh_after)
        while True:
            try:
                await self._deliver_some(sink, bucket, state)
            except sqlite3.Error as exc:  # the disk, not the sink: back off and carry on
                log.error("outbox error while delivering to %s: %s", sink.name, exc)
                await asyncio.sleep(state.backoff.maximum)
            except Exception:  # anything else must not end this sink's delivery either
                log.exception("delivery loop of %s failed; carrying on", sink.name)
                await asyncio.sleep(state.backoff.maximum)

    async def _deliver_some(self, sink: Sink, bucket: TokenBucket, state: _Delivering) -> None:
        self._wakeups[sink.name].clear()
        records = await self._outbox.next_batch(sink.name, state.fresh_after, self._batch)
        if not records:
            if not self._wakeups[sink.name].is_set():  # nothing was stored while we looked
                self._idle[sink.name].set()
            await self._wakeups[sink.name].wait()
            return
        for index, record in enumerate(records):
            if (wait := bucket.wait_time()) > 0:
                await asyncio.sleep(wait)
            if index and record.seq <= state.fresh_after and self._wakeups[sink.name].is_set():
                return  # something new was stored: plan again, it need not wait for this backlog
            reconnected = self._reconnected[sink.name]
            reconnected.clear()  # from here on a reconnect counts: it may come while publish fails
            try:
                await sink.publish(record)
            except Exception as exc:  # any failure: the message stays in the outbox
                metrics.SINK_FAILED.labels(sink.name).inc()
                await self._outbox.note_attempt(record.seq)
                level = logging.DEBUG if state.failing else logging.WARNING
                log.log(level, "sink %s: delivery failed (%s); will retry", sink.name, failure_reason(exc))
                state.failing = True
                await self._back_off(reconnected, state)
                return
            bucket.take()
            await self._outbox.ack(record.seq)
            metrics.SINK_SENT.labels(sink.name).inc()
            if state.failing:
                log.info("sink %s: delivering again", sink.name)
                state.failing = False
                state.fresh_after = await self._outbox.last_seq(sink.name)  # the outage's backlog
            state.backoff.reset()

    async def _back_off(self, reconnected: asyncio.Event, state: _Delivering) -> None:
        """Wait the retry delay, or less: a sink that reconnects meanwhile is tried again at once."""
        try:
            async with asyncio.timeout(state.backoff.next_delay()):
                await reconnected.wait()
        except TimeoutError:
            pass  # the next wait is longer
        else:
            state.backoff.reset()

    async def _summarise(self, sink: Sink) -> None:
        counter = self._summaries[sink.name]
        while True:
            await asyncio.sleep(sink.delivery.summary_interval_s)
            summary_id = new_event_id()
            try:
                body = counter.take(summary_id, self._clock())
                await self._store([sink.name], MessageType.SUMMARY, summary_id, body, {})
            except Exception:  # one lost summary must not end the heartbeat
                log.exception("summary for %s could not be stored", sink.name)

    async def _housekeeping(self) -> None:
        while True:
            try:
                await self._keep_house()
            except Exception:
                log.exception("outbox housekeeping failed; carrying on")
            await asyncio.sleep(self._housekeeping_s)

    async def _keep_house(self) -> None:
        configured = {s.name for s in self._sinks}
        for name in set(await self._outbox.pending_by_sink()) - configured:
            # Rows of a sink switched off still age out, so it never resumes with stale events.
            trimmed = await self._outbox.trim(name, self._limits.max_events, self._limits.max_age_s)
            if trimmed.expired or trimmed.full:
                metrics.SINK_DROPPED.labels(name, "expired").inc(trimmed.expired)
                metrics.SINK_DROPPED.labels(name, "full").inc(trimmed.full)
        for sink in self._sinks:
            trimmed = await self._outbox.trim(sink.name, self._limits.max_events, self._limits.max_age_s)
            if trimmed.expired:
                metrics.SINK_DROPPED.labels(sink.name, "expired").inc(trimmed.expired)
                log.warning("outbox for %s: dropped %d expired message(s)", sink.name, trimmed.expired)
            if trimmed.full:
                metrics.SINK_DROPPED.labels(sink.name, "full").inc(trimmed.full)
            backlog = await self._outbox.backlog(sink.name)
            metrics.OUTBOX_DEPTH.labels(sink.name).set(backlog.depth)
            age = 0.0 if backlog.oldest_created is None else max(0.0, self._clock() - backlog.oldest_created)
            metrics.OUTBOX_OLDEST_AGE.labels(sink.name).set(age)
            if self._on_backlog is not None:
                self._on_backlog(sink.name, backlog)

    async def backlog(self) -> dict[str, int]:
        return {s.name: (await self._outbox.backlog(s.name)).depth for s in self._sinks}

    async def close(self, drain_timeout: float = 2.0) -> None:
        """Give waiting messages a moment to go out; what is left stays in the outbox for next time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await asyncio.gather(*(idle.wait() for idle in self._idle.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        unwatch, self._unwatch = self._unwatch, []  # close may run twice
        for stop_watching in unwatch:
            stop_watching()
        for sink in self._sinks:
            try:
                await sink.close()
            except Exception:  # one sink's failure to close must not keep the others open
                log.exception("sink %s did not close cleanly", sink.name)
