"""Delivery from the outbox to the sinks: order, retries, ack only after confirmation, restarts,
summaries, rate limits, housekeeping metrics, close; the IoT Hub sink against a fake hub client;
faults: every logged failure names its reason, a reported reconnect ends the retry back-off, fresh
events overtake an outage's backlog while each (camera, ROI, tag) keeps its order."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from edge_runtime.backoff import Backoff
from edge_runtime.domain import BoundingBox, Event, EventKind
from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits, Sink, event_headers, failure_reason
from edge_runtime.events.ids import EVENT_ID_PATTERN, new_event_id
from edge_runtime.events.outbox import MessageType, Outbox, OutboxRecord
from edge_runtime.events.ratelimit import TokenBucket
from edge_runtime.events.summary import SummaryCounter
from edge_runtime.settings import DeliverySettings, IotHubSettings, MqttSettings
from edge_runtime.sinks.iothub import IotHubSink
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.status import SinkStatus

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DEFAULT_LIMITS = OutboxLimits()
_names = itertools.count()


def unique(prefix: str) -> str:
    """Metrics are process-wide: every test uses its own sink names."""
    return f"{prefix}-{next(_names)}"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_event(
    n: int = 0, camera: str = "cam-1", tag: str = "stain", kind: EventKind = EventKind.STARTED
) -> Event:
    return Event(
        id=new_event_id(T0 + n),
        kind=kind,
        camera=camera,
        roi="full",
        tag=tag,
        probability=0.9,
        boxes=(BoundingBox(0.1, 0.2, 0.3, 0.4),),
        captured_at=T0 + n,
        model_id="demo",
        model_sha1="abc123",
    )


class FakeSink:
    """Records what it confirms. `down` makes every attempt fail; `refuse` fails chosen message ids;
    `gate` holds publish before it decides (a confirmation that has not arrived yet)."""

    def __init__(self, name: str, delivery: DeliverySettings | None = None) -> None:
        self.name = name
        self.delivery = delivery or DeliverySettings()
        self.down = False
        self.refuse: set[str] = set()
        self.gate = asyncio.Event()
        self.gate.set()
        self.attempts: list[str] = []
        self.received: list[OutboxRecord] = []
        self.times: list[float] = []
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def publish(self, record: OutboxRecord) -> None:
        self.attempts.append(record.id)
        await self.gate.wait()
        if self.down or record.id in self.refuse:
            raise SinkUnavailableError(f"{self.name} is down")
        self.received.append(record)
        self.times.append(time.monotonic())

    def status(self) -> SinkStatus:
        return SinkStatus(self.name, None)

    async def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[str]:
        return [r.id for r in self.received if r.type == "event"]

    @property
    def summaries(self) -> list[Mapping[str, Any]]:
        return [r.body for r in self.received if r.type == "summary"]


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def retry_policy(initial: float, maximum: float) -> Callable[[], Backoff]:
    return lambda: Backoff(initial, maximum, jitter=0.0)


FAST_RETRY = retry_policy(0.01, 0.02)


def fast_dispatcher(
    outbox: Outbox, sinks: Sequence[Sink], limits: OutboxLimits = DEFAULT_LIMITS, **options: Any
) -> Dispatcher:
    """Retries after 10-20 ms and housekeeping every 20 ms, unless the test says otherwise."""
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("housekeeping_s", 0.02)
    return Dispatcher(outbox, sinks, limits, **options)


@pytest.fixture
async def dispatchers() -> AsyncIterator[list[Dispatcher]]:
    """Dispatchers a test leaves running are closed before its outbox."""
    made: list[Dispatcher] = []
    yield made
    for dispatcher in made:
        await dispatcher.close(drain_timeout=0.05)


@pytest.fixture
def dispatcher_for(outbox: Outbox, dispatchers: list[Dispatcher]) -> Callable[..., Dispatcher]:
    def make(*sinks: FakeSink, limits: OutboxLimits = DEFAULT_LIMITS, **options: Any) -> Dispatcher:
        dispatcher = fast_dispatcher(outbox, list(sinks), limits, **options)
        dispatchers.append(dispatcher)
        return dispatcher

    return make


async def outbox_ids(box: Outbox, sink: str) -> list[str]:
    return [r.id for r in await box.peek(sink, 1000)]


# --------------------------------------------------------------------------------------------------
# Delivery


async def test_delivers_in_order_to_every_sink_then_empties_the_outbox(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    a, b = FakeSink(unique("order-a")), FakeSink(unique("order-b"))
    dispatcher = dispatcher_for(a, b)
    await dispatcher.start()
    assert a.started and b.started
    events = [make_event(i, camera="cam-order") for i in range(20)]
    started = sample("edge_runtime_events_total", camera="cam-order", tag="stain", kind="started")
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: len(a.received) == 20 and len(b.received) == 20)
    await wait_for(lambda: all(sample("edge_runtime_sink_sent_total", sink=s.name) == 20 for s in (a, b)))
    for sink in (a, b):
        assert sink.events == [e.id for e in events]
        assert [r.body for r in sink.received] == [e.to_dict() for e in events]
        assert all(r.sink == sink.name and r.type == "event" for r in sink.received)
        assert sample("edge_runtime_sink_sent_total", sink=sink.name) == 20
        assert sample("edge_runtime_sink_failed_total", sink=sink.name) == 0
    assert (
        sample("edge_runtime_events_total", camera="cam-order", tag="stain", kind="started") == started + 20
    )
    await wait_for(lambda: sample("edge_runtime_sink_sent_total", sink=b.name) == 20)
    assert await dispatcher.backlog() == {a.name: 0, b.name: 0}
    assert await outbox.pending_by_sink() == {}


async def test_records_carry_the_events_routing_headers(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    sink = FakeSink(unique("headers"), DeliverySettings(summary_interval_s=0.05))
    dispatcher = dispatcher_for(sink)
    await dispatcher.start()
    event = make_event(0, camera="cam-h", tag="dent", kind=EventKind.ENDED)
    await dispatcher.publish(event)
    await wait_for(lambda: len(sink.events) == 1 and len(sink.summaries) >= 1)
    [record] = [r for r in sink.received if r.type is MessageType.EVENT]
    assert record.headers == {"camera": "cam-h", "tag": "dent", "kind": "ended"}
    assert record.body == event.to_dict()
    assert all(r.headers == {} for r in sink.received if r.type is MessageType.SUMMARY)


async def test_publish_returns_once_the_event_is_stored(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    sink = FakeSink(unique("stored"))
    sink.gate.clear()  # no confirmation yet
    dispatcher = dispatcher_for(sink)
    await dispatcher.start()
    event = make_event(0)
    await dispatcher.publish(event)
    assert await outbox_ids(outbox, sink.name) == [event.id]  # on disk as soon as publish returns


async def test_a_failing_sink_is_retried_without_loss_or_reordering_and_others_go_on(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    down, up = FakeSink(unique("down")), FakeSink(unique("up"))
    down.down = True
    dispatcher = dispatcher_for(down, up)
    await dispatcher.start()
    events = [make_event(i) for i in range(5)]
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: len(up.received) == 5 and len(down.attempts) >= 4)
    assert up.events == [e.id for e in events], "a sink that is down does not hold up the others"
    assert set(down.attempts) == {events[0].id}, "the first message is retried, never skipped"
    waiting = await outbox.peek(down.name, 100)
    assert [r.id for r in waiting] == [e.id for e in events]
    assert waiting[0].attempts >= 3 and all(r.attempts == 0 for r in waiting[1:])
    assert sample("edge_runtime_sink_failed_total", sink=down.name) >= 4
    assert sample("edge_runtime_sink_sent_total", sink=down.name) == 0

    down.down = False  # the broker is back
    await wait_for(lambda: len(down.received) == 5)
    await asyncio.sleep(0.05)
    assert down.events == [e.id for e in events], "each message once, in order"
    assert await outbox_ids(outbox, down.name) == []
    assert sample("edge_runtime_sink_sent_total", sink=down.name) == 5


async def test_retries_back_off_up_to_the_maximum(dispatcher_for: Callable[..., Dispatcher]) -> None:
    sink = FakeSink(unique("backoff"))
    sink.down = True
    stamps: list[float] = []
    original = sink.publish

    async def publish(record: OutboxRecord) -> None:
        stamps.append(time.monotonic())
        await original(record)

    sink.publish = publish  # type: ignore[method-assign]
    dispatcher = dispatcher_for(sink, retry=retry_policy(0.02, 0.08))
    await dispatcher.start()
    await dispatcher.publish(make_event(0))
    await wait_for(lambda: len(stamps) >= 6)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.018 and gaps[1] >= 0.038 and gaps[2] >= 0.078  # 0.02, 0.04, 0.08 ...
    assert all(0.078 <= gap < 0.5 for gap in gaps[3:5]), gaps  # ... and no longer than the maximum


async def test_ack_only_after_the_sink_confirms(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    sink = FakeSink(unique("ack"))
    sink.gate.clear()
    dispatcher = dispatcher_for(sink)
    await dispatcher.start()
    events = [make_event(i) for i in range(3)]
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: len(sink.attempts) == 1)
    await asyncio.sleep(0.05)
    assert await outbox_ids(outbox, sink.name) == [e.id for e in events], "in flight is not delivered"
    sink.gate.set()
    await wait_for(lambda: len(sink.received) == 3)
    await wait_for(lambda: sample("edge_runtime_sink_sent_total", sink=sink.name) == 3)
    assert await outbox_ids(outbox, sink.name) == []


async def test_a_sink_failing_midway_leaves_the_rest_in_the_outbox_and_close_keeps_it(
    tmp_path: Path, outbox: Outbox
) -> None:
    sink = FakeSink(unique("midway"))
    events = [make_event(i) for i in range(4)]
    sink.refuse = {events[1].id}
    dispatcher = fast_dispatcher(outbox, [sink])
    await dispatcher.start()
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: sink.attempts.count(events[1].id) >= 3)
    assert sink.events == [events[0].id]
    assert await outbox_ids(outbox, sink.name) == [e.id for e in events[1:]]

    started = time.monotonic()
    await dispatcher.close(drain_timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 2.0, "close waits for the drain timeout, then gives up"
    assert sink.closed
    attempts = len(sink.attempts)
    await asyncio.sleep(0.05)
    assert len(sink.attempts) == attempts, "no delivery after close"
    assert await outbox_ids(outbox, sink.name) == [e.id for e in events[1:]]


async def test_close_drains_what_can_go_out(outbox: Outbox) -> None:
    sink = FakeSink(unique("drain"))
    dispatcher = fast_dispatcher(outbox, [sink])
    events = [make_event(i) for i in range(5)]
    for event in events:
        await dispatcher.publish(event)  # before start: stored, waiting
    await dispatcher.start()
    await dispatcher.close(drain_timeout=2.0)
    assert sink.events == [e.id for e in events]
    assert await outbox_ids(outbox, sink.name) == []
    assert sink.closed


async def test_close_closes_every_sink_even_when_one_fails(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    class BadClose(FakeSink):
        async def close(self) -> None:
            raise OSError("stuck")

    bad, good = BadClose(unique("bad-close")), FakeSink(unique("good-close"))
    dispatcher = fast_dispatcher(outbox, [bad, good])
    await dispatcher.start()
    with caplog.at_level(logging.ERROR, logger="edge_runtime.events.dispatcher"):
        await dispatcher.close(drain_timeout=0.1)
    assert good.closed
    assert any(bad.name in r.getMessage() for r in caplog.records)


async def test_messages_from_a_previous_run_are_delivered_after_start(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    name = unique("restart")
    events = [make_event(i) for i in range(3)]
    first = Outbox(path)
    await first.open()
    down = FakeSink(name)
    down.down = True
    dispatcher = fast_dispatcher(first, [down])
    await dispatcher.start()
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: len(down.attempts) >= 1)
    await dispatcher.close(drain_timeout=0.05)
    await first.close()

    second = Outbox(path)
    await second.open()
    try:
        up = FakeSink(name)
        dispatcher = fast_dispatcher(second, [up])
        await dispatcher.start()
        await wait_for(lambda: len(up.received) == 3)  # nothing published in this run
        assert up.events == [e.id for e in events]
        assert up.received[0].attempts >= 1  # the failures of the last run are remembered
        assert [r.body for r in up.received] == [e.to_dict() for e in events]
        await dispatcher.close(drain_timeout=1.0)
        assert await outbox_ids(second, name) == []
    finally:
        await second.close()


async def test_messages_for_an_unconfigured_sink_are_kept_and_reported(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    gone = unique("removed-sink")
    await outbox.put([gone], "event", "old", {"camera": "c"}, 100)
    sink = FakeSink(unique("present"))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.events.dispatcher"):
        await dispatcher_for(sink).start()
    assert any(gone in r.getMessage() and "not configured" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0.05)
    assert await outbox_ids(outbox, gone) == ["old"]
    assert sink.received == []


# --------------------------------------------------------------------------------------------------
# Summaries and send_events


def merged_counts(summaries: list[Mapping[str, Any]]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for body in summaries:
        for camera, tags in body["cameras"].items():
            for tag, kinds in tags.items():
                for kind, count in kinds.items():
                    counts[(camera, tag, kind)] = counts.get((camera, tag, kind), 0) + count
    return counts


async def test_a_summary_only_sink_gets_summaries_and_no_events(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    quiet = FakeSink(unique("summary-only"), DeliverySettings(send_events=False, summary_interval_s=0.05))
    loud = FakeSink(unique("events-only"))
    dispatcher = dispatcher_for(quiet, loud)
    await dispatcher.start()
    events = [
        make_event(0, camera="cam-1", tag="stain"),
        make_event(1, camera="cam-1", tag="stain"),
        make_event(2, camera="cam-1", tag="stain", kind=EventKind.ENDED),
        make_event(3, camera="cam-2", tag="scratch"),
    ]
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: sum(s["events"] for s in quiet.summaries) == 4 and len(quiet.summaries) >= 3)
    assert quiet.events == [], "send_events: false sends no event"
    assert all(r.type == "summary" for r in quiet.received)
    assert loud.events == [e.id for e in events] and loud.summaries == [], "summary_interval_s 0: none"
    assert merged_counts(quiet.summaries) == {
        ("cam-1", "stain", "started"): 2,
        ("cam-1", "stain", "ended"): 1,
        ("cam-2", "scratch", "started"): 1,
    }
    for record in quiet.received:
        body = record.body
        assert body["type"] == "summary" and body["id"] == record.id and EVENT_ID_PATTERN.fullmatch(record.id)
        assert body["events"] == sum(
            c for tags in body["cameras"].values() for k in tags.values() for c in k.values()
        )
    # Back to back, and sent even when nothing happened (a heartbeat).
    bodies = quiet.summaries
    assert all(x["to"] == y["from"] for x, y in itertools.pairwise(bodies))
    assert all(datetime.fromisoformat(b["from"]) <= datetime.fromisoformat(b["to"]) for b in bodies)
    assert len({r.id for r in quiet.received}) == len(quiet.received)
    assert await outbox.pending_by_sink() in ({}, {quiet.name: 1}), "at most the next summary waits"


async def test_a_sink_can_get_events_and_summaries(dispatcher_for: Callable[..., Dispatcher]) -> None:
    both = FakeSink(unique("both"), DeliverySettings(summary_interval_s=0.05))
    dispatcher = dispatcher_for(both)
    await dispatcher.start()
    event = make_event(0, camera="cam-both")
    await dispatcher.publish(event)
    await wait_for(lambda: sum(s["events"] for s in both.summaries) == 1)
    assert both.events == [event.id]
    assert merged_counts(both.summaries) == {("cam-both", "stain", "started"): 1}


async def test_no_sink_wants_events(outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]) -> None:
    quiet = FakeSink(unique("none-wants"), DeliverySettings(send_events=False))
    dispatcher = dispatcher_for(quiet)
    await dispatcher.start()
    await dispatcher.publish(make_event(0, camera="cam-none"))
    assert await outbox.pending_by_sink() == {}
    assert sample("edge_runtime_events_total", camera="cam-none", tag="stain", kind="started") >= 1


def test_summary_counter_counts_per_camera_tag_and_kind() -> None:
    counter = SummaryCounter(T0)
    for event in (
        make_event(0, camera="b", tag="stain"),
        make_event(1, camera="a", tag="stain"),
        make_event(2, camera="a", tag="stain", kind=EventKind.ENDED),
        make_event(3, camera="a", tag="scratch"),
        make_event(4, camera="a", tag="stain"),
    ):
        counter.add(event)
    body = counter.take("S1", T0 + 60.5)
    assert body == {
        "id": "S1",
        "type": "summary",
        "from": "2023-11-14T22:13:20.000+00:00",
        "to": "2023-11-14T22:14:20.500+00:00",
        "events": 5,
        "cameras": {
            "a": {"scratch": {"started": 1}, "stain": {"ended": 1, "started": 2}},
            "b": {"stain": {"started": 1}},
        },
    }
    assert json.loads(json.dumps(body)) == body
    empty = counter.take("S2", T0 + 120)
    assert empty["from"] == body["to"] and empty["events"] == 0 and empty["cameras"] == {}


# --------------------------------------------------------------------------------------------------
# Rate limit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)  # 1 per second, burst of 10 (ten seconds' worth)
    for _ in range(10):
        assert bucket.wait_time() == 0.0
        bucket.take()
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 0.25
    assert bucket.wait_time() == pytest.approx(0.75)
    assert bucket.wait_time() == pytest.approx(0.75), "wait_time does not take"
    clock.now += 0.75
    assert bucket.wait_time() == 0.0
    bucket.take()
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 3600  # a long pause refills up to the burst, not beyond
    for _ in range(10):
        assert bucket.wait_time() == 0.0
        bucket.take()
    assert bucket.wait_time() > 0


def test_token_bucket_small_rates_and_explicit_burst() -> None:
    clock = FakeClock()
    slow = TokenBucket(3, clock=clock)  # one per 20 s, burst at least one
    assert slow.wait_time() == 0.0
    slow.take()
    assert slow.wait_time() == pytest.approx(20.0)
    strict = TokenBucket(120, burst=1, clock=clock)
    strict.take()
    assert strict.wait_time() == pytest.approx(0.5)


def test_token_bucket_zero_is_unlimited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, clock=clock)
    for _ in range(1000):
        assert bucket.wait_time() == 0.0
        bucket.take()


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
    await wait_for(lambda: len(free.received) == 6)
    assert len(limited.received) < 6
    assert len(await outbox_ids(outbox, limited.name)) >= 1, "over the limit, messages wait in the outbox"
    await wait_for(lambda: len(limited.received) == 6)
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
    await wait_for(lambda: len(limited.received) == 10)
    await asyncio.sleep(0.2)
    assert len(limited.received) == 10
    assert len(await outbox_ids(outbox, limited.name)) == 2


# --------------------------------------------------------------------------------------------------
# Housekeeping metrics and outbox bounds


async def test_depth_and_oldest_age_follow_the_backlog(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    sink = FakeSink(unique("depth"))
    sink.down = True
    dispatcher = dispatcher_for(sink)
    await dispatcher.start()
    for i in range(3):
        await dispatcher.publish(make_event(i))
    stored = time.time()
    await asyncio.sleep(0.15)
    await wait_for(lambda: sample("edge_runtime_outbox_depth", sink=sink.name) == 3)
    await wait_for(lambda: sample("edge_runtime_outbox_oldest_age_seconds", sink=sink.name) >= 0.1)
    assert sample("edge_runtime_outbox_oldest_age_seconds", sink=sink.name) <= time.time() - stored + 1.0
    sink.down = False
    await wait_for(lambda: sample("edge_runtime_outbox_depth", sink=sink.name) == 0)
    await wait_for(lambda: sample("edge_runtime_outbox_oldest_age_seconds", sink=sink.name) == 0)


async def test_a_full_outbox_drops_the_oldest_and_counts_it(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    down = FakeSink(unique("full-down"))
    down.down = True
    dispatcher = dispatcher_for(down, limits=OutboxLimits(max_events=3))
    await dispatcher.start()
    events = [make_event(i) for i in range(7)]
    for event in events:
        await dispatcher.publish(event)
    assert await outbox_ids(outbox, down.name) == [e.id for e in events[4:]]
    assert sample("edge_runtime_sink_dropped_total", sink=down.name, reason="full") >= 3
    down.down = False
    await wait_for(lambda: len(down.received) >= 3 and not down.down)
    await wait_for(lambda: down.events[-3:] == [e.id for e in events[4:]])
    # The first message may have been in flight when it was dropped: at most that one extra.
    assert len(down.events) <= 4
    dropped_full = sample("edge_runtime_sink_dropped_total", sink=down.name, reason="full")
    assert dropped_full == 4, "each of the 4 oldest counted once"
    assert sample("edge_runtime_sink_dropped_total", sink=down.name, reason="expired") == 0


async def test_expired_messages_are_dropped_and_counted(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]
) -> None:
    sink = FakeSink(unique("expire"))
    sink.down = True
    dispatcher = dispatcher_for(sink, limits=OutboxLimits(max_age_s=0.1))
    await dispatcher.start()
    for i in range(2):
        await dispatcher.publish(make_event(i))
    await wait_for(lambda: sample("edge_runtime_sink_dropped_total", sink=sink.name, reason="expired") == 2)
    assert await outbox_ids(outbox, sink.name) == []
    await wait_for(lambda: sample("edge_runtime_outbox_depth", sink=sink.name) == 0)
    assert sample("edge_runtime_sink_dropped_total", sink=sink.name, reason="full") == 0
    assert sink.received == []


# --------------------------------------------------------------------------------------------------
# IoT Hub sink against a fake hub client


class FakeHub:
    """A HubOutput: `up()` / `down()` change the connection and tell the watchers, as HubClient does."""

    def __init__(self) -> None:
        self.connected_once = asyncio.Event()
        self.connected = False
        self.last_error: str | None = None
        self.sent: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.hang = False
        self.watchers: list[Callable[[bool], None]] = []

    def up(self) -> None:
        self.connected = True
        self.connected_once.set()
        for listener in list(self.watchers):
            listener(True)

    def down(self) -> None:
        self.connected = False
        for listener in list(self.watchers):
            listener(False)

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        self.watchers.append(listener)
        return lambda: self.watchers.remove(listener)

    async def send_to_output(
        self, output: str, body: bytes, message_id: str, properties: Mapping[str, str]
    ) -> None:
        if self.hang:
            await asyncio.Event().wait()
        self.sent.append((output, body, message_id, dict(properties)))


def record_of(event: Event, seq: int = 1) -> OutboxRecord:
    return OutboxRecord(
        seq, "iothub", MessageType.EVENT, event.id, time.time(), 0, event.to_dict(), event_headers(event)
    )


async def test_iothub_sink_sends_the_event_with_its_id_and_properties() -> None:
    hub = FakeHub()
    hub.up()
    sink = IotHubSink(IotHubSettings(output="line1"), hub)
    event = make_event(0, camera="cam-7", tag="scratch", kind=EventKind.ENDED)
    await sink.publish(record_of(event))
    [(output, body, message_id, properties)] = hub.sent
    assert output == "line1"
    assert message_id == event.id
    assert json.loads(body.decode("utf-8")) == event.to_dict()
    assert properties == {"type": "event", "camera": "cam-7", "tag": "scratch", "kind": "ended"}
    assert sample("edge_runtime_sink_connected", sink="iothub") == 1
    assert sink.status().to_dict() == {"connected": True, "output": "line1", "last_error": None}
    assert sink.status() == SinkStatus("iothub", True, None, ("output", "line1"))


async def test_iothub_sink_summary_carries_only_its_type() -> None:
    hub = FakeHub()
    hub.up()
    sink = IotHubSink(IotHubSettings(), hub)
    body = SummaryCounter(T0).take("S1", T0 + 1)
    await sink.publish(OutboxRecord(1, "iothub", MessageType.SUMMARY, "S1", T0, 0, body))
    [(output, payload, message_id, properties)] = hub.sent
    assert (output, message_id, properties) == ("defects", "S1", {"type": "summary"})
    assert json.loads(payload) == body


async def test_iothub_sink_is_unavailable_before_the_first_connection() -> None:
    hub = FakeHub()
    hub.last_error = "ConnectionRefusedError: no edgeHub"
    sink = IotHubSink(IotHubSettings(), hub)
    with pytest.raises(SinkUnavailableError, match="no edgeHub"):
        await sink.publish(record_of(make_event(0)))
    assert hub.sent == []


async def test_iothub_sink_times_out_without_confirmation() -> None:
    hub = FakeHub()
    hub.up()
    hub.hang = True
    sink = IotHubSink(IotHubSettings(publish_timeout_s=0.05), hub)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await sink.publish(record_of(make_event(0)))
    assert 0.04 <= time.monotonic() - started < 1.0


async def test_iothub_sink_behind_the_dispatcher_waits_for_the_hub(outbox: Outbox) -> None:
    hub = FakeHub()
    sink = IotHubSink(IotHubSettings(), hub)
    dispatcher = fast_dispatcher(outbox, [sink])
    await dispatcher.start()
    events = [make_event(i) for i in range(3)]
    try:
        for event in events:
            await dispatcher.publish(event)
        await asyncio.sleep(0.1)
        assert hub.sent == [] and len(await outbox_ids(outbox, "iothub")) == 3
        hub.up()
        await wait_for(lambda: len(hub.sent) == 3)
        assert [message_id for _, _, message_id, _ in hub.sent] == [e.id for e in events]
    finally:
        await dispatcher.close(drain_timeout=1.0)
    assert await outbox_ids(outbox, "iothub") == []


async def test_a_hub_reconnect_ends_the_retry_wait_of_the_iothub_sink(outbox: Outbox) -> None:
    hub = FakeHub()
    sink = IotHubSink(IotHubSettings(), hub)
    dispatcher = fast_dispatcher(outbox, [sink], retry=retry_policy(10.0, 10.0))  # not to be waited out
    await dispatcher.start()
    event = make_event(0)
    try:
        failed = sample("edge_runtime_sink_failed_total", sink="iothub")
        await dispatcher.publish(event)
        await wait_for(lambda: sample("edge_runtime_sink_failed_total", sink="iothub") == failed + 1)
        assert hub.sent == []  # not connected yet: in the back-off now
        reconnected_at = time.monotonic()
        hub.up()
        await wait_for(lambda: len(hub.sent) == 1, timeout=2.0)
        assert time.monotonic() - reconnected_at < 0.5
        assert sample("edge_runtime_sink_connected", sink="iothub") == 1
        hub.down()
        assert sample("edge_runtime_sink_connected", sink="iothub") == 0, "the gauge follows the hub"
    finally:
        await dispatcher.close(drain_timeout=1.0)
    assert hub.watchers == [], "close unsubscribes the sink and the dispatcher"
    assert await outbox_ids(outbox, "iothub") == []


async def test_mqtt_sink_is_unavailable_before_it_connects() -> None:
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=1))
    with pytest.raises(SinkUnavailableError, match=r"not connected to 127\.0\.0\.1:1$"):
        await sink.publish(record_of(make_event(0)))


class FlakyOutbox(Outbox):
    """An outbox whose next read fails once, as sqlite does for a moment ('database is locked', I/O)."""

    fail_next_peek = False

    async def next_batch(self, sink: str, fresh_after: int, limit: int) -> list[OutboxRecord]:
        if self.fail_next_peek:
            self.fail_next_peek = False
            raise sqlite3.OperationalError("database is locked")
        return await super().next_batch(sink, fresh_after, limit)


async def test_a_transient_outbox_error_does_not_stop_delivery(tmp_path: Path) -> None:
    box = FlakyOutbox(tmp_path / "outbox.sqlite3")
    await box.open()
    sink = FakeSink(unique("flaky-outbox"))
    dispatcher = fast_dispatcher(box, [sink])
    try:
        await dispatcher.start()
        await dispatcher.publish(make_event(0))
        await wait_for(lambda: len(sink.received) == 1)
        box.fail_next_peek = True
        await dispatcher.publish(make_event(1))
        await wait_for(lambda: len(sink.received) == 2, timeout=2.0)
        assert not box.fail_next_peek, "the failure happened"
    finally:
        await dispatcher.close(drain_timeout=0.05)
        await box.close()


# --------------------------------------------------------------------------------------------------
# Faults: every logged failure names its reason


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
        await wait_for(lambda: len(sink.attempts) >= 2)
    [message] = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert message == f"sink {sink.name}: delivery failed {reason}; will retry"


def test_failure_reason_is_never_empty() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(asyncio.CancelledError()) == "CancelledError"
    assert failure_reason(SinkUnavailableError("  ")) == "SinkUnavailableError"
    assert failure_reason(ValueError("bad value")) == "bad value"


# --------------------------------------------------------------------------------------------------
# Faults: a reconnect the sink reports ends the retry back-off


class ReconnectingSink(FakeSink):
    """Down until `reconnect()`, which it reports the way the MQTT sink does (watch_connection)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = True
        self.listeners: list[Callable[[bool], None]] = []

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def reconnect(self) -> None:
        self.down = False
        for listener in self.listeners:
            listener(True)


async def test_a_reported_reconnect_ends_the_retry_wait(dispatcher_for: Callable[..., Dispatcher]) -> None:
    sink = ReconnectingSink(unique("reconnect"))
    dispatcher = dispatcher_for(sink, retry=retry_policy(10.0, 10.0))  # a back-off not to be waited out
    await dispatcher.start()
    await dispatcher.publish(make_event(0))
    await wait_for(lambda: len(sink.attempts) == 1)
    await asyncio.sleep(0.05)  # in the back-off now
    reconnected_at = time.monotonic()
    sink.reconnect()
    await wait_for(lambda: len(sink.received) == 1, timeout=2.0)
    assert sink.times[0] - reconnected_at < 0.5
    await dispatcher.close(drain_timeout=0.05)
    assert sink.listeners == [], "close unsubscribes"


# --------------------------------------------------------------------------------------------------
# Faults: after an outage fresh events overtake the backlog; each (camera, ROI, tag) keeps its order


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
    await wait_for(lambda: len(sink.attempts) >= 2)
    sink.down = False  # the outage ends: the backlog drains at ~2 ms per message
    await wait_for(lambda: len(sink.received) >= 20)
    at_publish = len(sink.received)
    fresh_new = make_event(1000, camera="cam-new")  # a key with nothing stored
    fresh_same = make_event(1001, camera="cam-1", kind=EventKind.ENDED)  # cam-1 has 50 rows waiting
    await dispatcher.publish(fresh_new)
    await dispatcher.publish(fresh_same)
    await wait_for(lambda: len(sink.received) == 202)
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
    await wait_for(lambda: len(sink.attempts) >= 1)
    sink.down = False  # what is stored when delivery resumes is the backlog
    await wait_for(lambda: len(sink.received) >= 3)
    alarm = make_event(100, camera="cam-alarm")
    await dispatcher.publish(alarm)
    sent_before = len(sink.received)
    await wait_for(lambda: alarm.id in sink.events, timeout=3.0)
    assert sink.events.index(alarm.id) <= sent_before + 1, "next but one, not after the batch"
