"""The dispatcher under faults and limits: every logged failure names its reason; a reconnect the sink
reports ends the retry back-off; a rate limit holds messages in the outbox without losing any; after an
outage fresh events overtake the backlog while each (camera, ROI, tag) keeps its order."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

import pytest
from factories import make_event, quick_retry, stored_ids, unique
from fakes import FakeSink
from waiting import eventually

from edge_runtime.domain import EventKind
from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.dispatcher import Dispatcher, failure_reason
from edge_runtime.events.outbox import Outbox, OutboxRecord
from edge_runtime.events.ratelimit import TokenBucket
from edge_runtime.settings import DeliverySettings

# --------------------------------------------------------------------------------------------------
# Every logged failure names its reason


class RaisingSink(FakeSink):
    """Fails every publish with a new `error()`."""

    def __init__(self, name: str, error: Callable[[], BaseException]) -> None:
        super().__init__(name)
        self.error = error

    async def publish(self, record: OutboxRecord) -> None:
        self.attempts.append(record.id)
        raise self.error()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError, "(TimeoutError)"),  # asyncio.timeout raises it with an empty str()
        (lambda: SinkUnavailableError("not connected to b:1883"), "(not connected to b:1883)"),
        (lambda: OSError(""), "(OSError)"),
    ],
    ids=["bare-timeout", "with-message", "empty-message"],
)
async def test_a_failed_delivery_is_logged_with_its_reason(
    error: Callable[[], BaseException],
    reason: str,
    dispatcher_for: Callable[..., Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RaisingSink(unique("reason"), error)
    dispatcher = dispatcher_for(sink)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.events.dispatcher"):
        await dispatcher.start()
        await dispatcher.publish(make_event(0))
        await eventually(lambda: len(sink.attempts) >= 2)
    [message] = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert message == f"sink {sink.name}: delivery failed {reason}; will retry"


def test_failure_reason_is_never_empty() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(asyncio.CancelledError()) == "CancelledError"
    assert failure_reason(SinkUnavailableError("  ")) == "SinkUnavailableError"
    assert failure_reason(ValueError("bad value")) == "bad value"


# --------------------------------------------------------------------------------------------------
# A reconnect the sink reports ends the retry back-off


async def test_a_reported_reconnect_ends_the_retry_wait(dispatcher_for: Callable[..., Dispatcher]) -> None:
    sink = FakeSink(unique("reconnect"))
    sink.down = True  # until reconnect(), which it reports the way the MQTT sink does (watch_connection)
    dispatcher = dispatcher_for(sink, retry=quick_retry(10.0, 10.0))  # a back-off not to be waited out
    await dispatcher.start()
    await dispatcher.publish(make_event(0))
    await eventually(lambda: len(sink.attempts) == 1)
    await asyncio.sleep(0.05)  # in the back-off now
    reconnected_at = time.monotonic()
    sink.reconnect()
    await eventually(lambda: len(sink.received) == 1, timeout=2.0)
    assert sink.times[0] - reconnected_at < 0.5
    await dispatcher.close(drain_timeout=0.05)
    assert sink.listeners == [], "close unsubscribes"


# --------------------------------------------------------------------------------------------------
# Rate limits: over the limit, messages wait in the outbox


async def test_a_rate_limited_sink_waits_and_loses_nothing(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    rates: list[float] = []

    def strict_bucket(delivery: DeliverySettings) -> TokenBucket:
        rates.append(delivery.rate_limit_per_minute)
        return TokenBucket(delivery.rate_limit_per_minute, burst=1)

    limited = FakeSink(unique("limited"), DeliverySettings(rate_limit_per_minute=1200))  # 20/s
    free = FakeSink(unique("free"))
    dispatcher = dispatcher_for(limited, free, bucket_for=strict_bucket)
    await dispatcher.start()
    events = [make_event(i) for i in range(6)]
    started = time.monotonic()
    for event in events:
        await dispatcher.publish(event)
    await eventually(lambda: len(free.received) == 6)
    assert len(limited.received) < 6
    assert len(await stored_ids(outbox, limited.name)) >= 1, "over the limit, messages wait in the outbox"
    await eventually(lambda: len(limited.received) == 6)
    assert time.monotonic() - started >= 5 * 0.05 - 0.01  # 1 at once, then 5 at 20 per second
    assert free.times[-1] < limited.times[-1] - 0.1, "the limit of one sink does not slow the others"
    gaps = [b - a for a, b in itertools.pairwise(limited.times)]
    assert min(gaps) >= 0.04, gaps
    assert limited.events == [e.id for e in events]
    assert sorted(rates) == [0.0, 1200.0], "one bucket per sink, at the sink's own rate"


async def test_the_default_burst_is_ten_seconds_of_the_rate(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    limited = FakeSink(unique("burst"), DeliverySettings(rate_limit_per_minute=60))  # burst of 10
    dispatcher = dispatcher_for(limited)
    await dispatcher.start()
    for i in range(12):
        await dispatcher.publish(make_event(i))
    await eventually(lambda: len(limited.received) == 10)
    await asyncio.sleep(0.2)
    assert len(limited.received) == 10
    assert len(await stored_ids(outbox, limited.name)) == 2


# --------------------------------------------------------------------------------------------------
# After an outage fresh events overtake the backlog; each (camera, ROI, tag) keeps its order


class SlowSink(FakeSink):
    """Takes `pause` per message once up: a backlog takes a while to drain."""

    pause = 0.002

    async def publish(self, record: OutboxRecord) -> None:
        if not self.down:
            await asyncio.sleep(self.pause)
        await super().publish(record)


async def test_fresh_events_overtake_the_backlog_but_not_their_own_key(
    dispatcher_for: Callable[..., Dispatcher],
) -> None:
    sink = SlowSink(unique("fresh-first"))
    sink.down = True
    dispatcher = dispatcher_for(sink, batch=10)
    await dispatcher.start()
    backlog = [
        make_event(i, camera=f"cam-{i % 4}", kind=EventKind.STARTED if i % 8 < 4 else EventKind.ENDED)
        for i in range(200)
    ]
    for event in backlog:
        await dispatcher.publish(event)
    await eventually(lambda: len(sink.attempts) >= 2)
    sink.down = False  # the outage ends: the backlog drains at ~2 ms per message
    await eventually(lambda: len(sink.received) >= 20)
    at_publish = len(sink.received)
    fresh_new = make_event(1000, camera="cam-new")  # a key with nothing stored
    fresh_same = make_event(1001, camera="cam-1", kind=EventKind.ENDED)  # cam-1 has 50 rows waiting
    await dispatcher.publish(fresh_new)
    await dispatcher.publish(fresh_same)
    await eventually(lambda: len(sink.received) == 202)
    order = sink.events
    assert order.index(fresh_new.id) <= at_publish + 10 + 1, "within the next batch, not after 180 more"
    assert order.index(fresh_new.id) < 100
    cam_1 = [e.id for e in backlog if e.camera == "cam-1"] + [fresh_same.id]
    assert [i for i in order if i in set(cam_1)] == cam_1, "its key's stored rows first, in order"
    for camera in ("cam-0", "cam-2", "cam-3"):
        stored = [e.id for e in backlog if e.camera == camera]
        assert [i for i in order if i in set(stored)] == stored


async def test_a_fresh_event_does_not_wait_for_a_rate_limited_batch_of_backlog(
    dispatcher_for: Callable[..., Dispatcher],
) -> None:
    sink = FakeSink(unique("limited-fresh"), DeliverySettings(rate_limit_per_minute=1200))  # 20/s
    sink.down = True
    dispatcher = dispatcher_for(sink, bucket_for=lambda d: TokenBucket(d.rate_limit_per_minute, burst=1))
    await dispatcher.start()
    for i in range(40):  # 2 s of sending at the limit
        await dispatcher.publish(make_event(i, camera=f"cam-{i % 2}"))
    await eventually(lambda: len(sink.attempts) >= 1)
    sink.down = False  # what is stored when delivery resumes is the backlog
    await eventually(lambda: len(sink.received) >= 3)
    alarm = make_event(100, camera="cam-alarm")
    await dispatcher.publish(alarm)
    sent_before = len(sink.received)
    await eventually(lambda: alarm.id in sink.events, timeout=3.0)
    assert sink.events.index(alarm.id) <= sent_before + 1, "next but one, not after the batch"
