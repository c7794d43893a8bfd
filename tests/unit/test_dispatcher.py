"""The dispatcher: delivery from the outbox to every sink in order, retries without loss, ack only after
the sink confirms, close (drain, then keep the rest), restarts, sinks no longer configured, summaries and
send_events, housekeeping (depth and age metrics, the count and age bounds). Faults, rate limits and the
order after an outage are in test_dispatcher_faults.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from factories import fast_dispatcher, make_event, quick_retry, sample, stored_ids, unique
from fakes import FakeSink
from waiting import eventually

from edge_runtime.domain import EventKind
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits
from edge_runtime.events.ids import EVENT_ID_PATTERN
from edge_runtime.events.outbox import MessageType, Outbox, OutboxRecord
from edge_runtime.settings import DeliverySettings

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
    await eventually(lambda: len(a.received) == 20 and len(b.received) == 20)
    await eventually(lambda: all(sample("edge_runtime_sink_sent_total", sink=s.name) == 20 for s in (a, b)))
    for sink in (a, b):
        assert sink.events == [e.id for e in events]
        assert [r.body for r in sink.received] == [e.to_dict() for e in events]
        assert all(r.sink == sink.name and r.type == "event" for r in sink.received)
        assert sample("edge_runtime_sink_sent_total", sink=sink.name) == 20
        assert sample("edge_runtime_sink_failed_total", sink=sink.name) == 0
    assert (
        sample("edge_runtime_events_total", camera="cam-order", tag="stain", kind="started") == started + 20
    )
    await eventually(lambda: sample("edge_runtime_sink_sent_total", sink=b.name) == 20)
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
    await eventually(lambda: len(sink.events) == 1 and len(sink.summaries) >= 1)
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
    assert await stored_ids(outbox, sink.name) == [event.id]  # on disk as soon as publish returns


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
    await eventually(lambda: len(up.received) == 5 and len(down.attempts) >= 4)
    assert up.events == [e.id for e in events], "a sink that is down does not hold up the others"
    assert set(down.attempts) == {events[0].id}, "the first message is retried, never skipped"
    waiting = await outbox.peek(down.name, 100)
    assert [r.id for r in waiting] == [e.id for e in events]
    assert waiting[0].attempts >= 3 and all(r.attempts == 0 for r in waiting[1:])
    assert sample("edge_runtime_sink_failed_total", sink=down.name) >= 4
    assert sample("edge_runtime_sink_sent_total", sink=down.name) == 0

    down.down = False  # the broker is back
    await eventually(lambda: len(down.received) == 5)
    await asyncio.sleep(0.05)
    assert down.events == [e.id for e in events], "each message once, in order"
    assert await stored_ids(outbox, down.name) == []
    assert sample("edge_runtime_sink_sent_total", sink=down.name) == 5


async def test_retries_back_off_up_to_the_maximum(dispatcher_for: Callable[..., Dispatcher]) -> None:
    sink = FakeSink(unique("backoff"))
    sink.down = True
    stamps = sink.attempted_at
    dispatcher = dispatcher_for(sink, retry=quick_retry(0.02, 0.08))
    await dispatcher.start()
    await dispatcher.publish(make_event(0))
    await eventually(lambda: len(stamps) >= 6)
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
    await eventually(lambda: len(sink.attempts) == 1)
    await asyncio.sleep(0.05)
    assert await stored_ids(outbox, sink.name) == [e.id for e in events], "in flight is not delivered"
    sink.gate.set()
    await eventually(lambda: len(sink.received) == 3)
    await eventually(lambda: sample("edge_runtime_sink_sent_total", sink=sink.name) == 3)
    assert await stored_ids(outbox, sink.name) == []


async def test_dispatcher_delivers_in_order_to_every_sink_and_counts(outbox: Outbox) -> None:
    a, b = FakeSink("deliver-a"), FakeSink("deliver-b")
    dispatcher = Dispatcher(outbox, [a, b])
    await dispatcher.start()
    assert a.started and b.started
    events = [make_event(i, camera="cam-deliver") for i in range(5)]
    started_before = sample("edge_runtime_events_total", camera="cam-deliver", tag="stain", kind="started")
    sent_before = sample("edge_runtime_sink_sent_total", sink="deliver-a")
    for event in events:
        await dispatcher.publish(event)
    await eventually(lambda: len(a.received) == 5 and len(b.received) == 5)
    assert a.events == b.events == [e.id for e in events]
    assert [r.body for r in a.received] == [e.to_dict() for e in events]
    assert all(r.type == "event" for r in a.received + b.received)
    await eventually(lambda: sample("edge_runtime_sink_sent_total", sink="deliver-a") == sent_before + 5)
    assert (
        sample("edge_runtime_events_total", camera="cam-deliver", tag="stain", kind="started")
        == started_before + 5
    )
    await dispatcher.close()
    assert a.closed and b.closed
    assert await outbox.pending_by_sink() == {}


async def test_dispatcher_retries_after_a_sink_failure(outbox: Outbox) -> None:
    sink = FakeSink("retry", fail_times=2)
    failed_before = sample("edge_runtime_sink_failed_total", sink="retry")
    dispatcher = Dispatcher(outbox, [sink], retry=quick_retry(0.01, 0.02))
    await dispatcher.start()
    first, second = make_event(0), make_event(1)
    await dispatcher.publish(first)
    await dispatcher.publish(second)
    await eventually(lambda: len(sink.received) == 2)
    assert sink.events == [first.id, second.id]  # the failed event is retried, not skipped
    assert len(sink.attempts) == 4
    assert sample("edge_runtime_sink_failed_total", sink="retry") == failed_before + 2
    await dispatcher.close()
    assert await outbox.pending_by_sink() == {}


async def test_a_failing_sink_does_not_hold_up_the_others(outbox: Outbox) -> None:
    down, up = FakeSink("always-down", fail_times=10**9), FakeSink("healthy")
    dispatcher = Dispatcher(outbox, [down, up], retry=quick_retry(0.01, 0.02))
    await dispatcher.start()
    events = [make_event(i) for i in range(3)]
    for event in events:
        await dispatcher.publish(event)
    await eventually(lambda: len(up.received) == 3 and len(down.attempts) >= 3)  # still retrying the first
    assert up.events == [e.id for e in events] and down.received == []
    await dispatcher.close(drain_timeout=0.1)
    assert down.closed and up.closed
    assert await outbox.pending_by_sink() == {"always-down": 3}, "kept on disk for the next run"


# --------------------------------------------------------------------------------------------------
# Close and restart


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
    await eventually(lambda: sink.attempts.count(events[1].id) >= 3)
    assert sink.events == [events[0].id]
    assert await stored_ids(outbox, sink.name) == [e.id for e in events[1:]]

    started = time.monotonic()
    await dispatcher.close(drain_timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 2.0, "close waits for the drain timeout, then gives up"
    assert sink.closed
    attempts = len(sink.attempts)
    await asyncio.sleep(0.05)
    assert len(sink.attempts) == attempts, "no delivery after close"
    assert await stored_ids(outbox, sink.name) == [e.id for e in events[1:]]


async def test_close_drains_what_can_go_out(outbox: Outbox) -> None:
    sink = FakeSink(unique("drain"))
    dispatcher = fast_dispatcher(outbox, [sink])
    events = [make_event(i) for i in range(5)]
    for event in events:
        await dispatcher.publish(event)  # before start: stored, waiting
    await dispatcher.start()
    await dispatcher.close(drain_timeout=2.0)
    assert sink.events == [e.id for e in events]
    assert await stored_ids(outbox, sink.name) == []
    assert sink.closed


async def test_close_gives_stored_events_a_chance_to_go_out(outbox: Outbox) -> None:
    sink = FakeSink("close-queued")
    dispatcher = Dispatcher(outbox, [sink])
    events = [make_event(i) for i in range(3)]
    for event in events:
        await dispatcher.publish(event)
    await dispatcher.start()
    await dispatcher.close(drain_timeout=2.0)
    assert sink.events == [e.id for e in events]
    assert sink.closed


async def test_close_waits_for_the_event_in_flight(outbox: Outbox) -> None:
    sink = FakeSink("close-in-flight", delay=0.2)
    dispatcher = Dispatcher(outbox, [sink])
    await dispatcher.start()
    event = make_event(0)
    await dispatcher.publish(event)
    await dispatcher.close(drain_timeout=2.0)  # 2 s is plenty for a 0.2 s delivery
    assert sink.events == [event.id]
    assert await outbox.pending_by_sink() == {}


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
    await eventually(lambda: len(down.attempts) >= 1)
    await dispatcher.close(drain_timeout=0.05)
    await first.close()

    second = Outbox(path)
    await second.open()
    try:
        up = FakeSink(name)
        dispatcher = fast_dispatcher(second, [up])
        await dispatcher.start()
        await eventually(lambda: len(up.received) == 3)  # nothing published in this run
        assert up.events == [e.id for e in events]
        assert up.received[0].attempts >= 1  # the failures of the last run are remembered
        assert [r.body for r in up.received] == [e.to_dict() for e in events]
        await dispatcher.close(drain_timeout=1.0)
        assert await stored_ids(second, name) == []
    finally:
        await second.close()


async def test_messages_for_an_unconfigured_sink_are_kept_and_reported(
    outbox: Outbox, dispatcher_for: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    gone = unique("removed-sink")
    await outbox.put([gone], MessageType.EVENT, "old", {"camera": "c"}, 100)
    sink = FakeSink(unique("present"))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.events.dispatcher"):
        await dispatcher_for(sink).start()
    assert any(gone in r.getMessage() and "not configured" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0.05)
    assert await stored_ids(outbox, gone) == ["old"]
    assert sink.received == []


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
        await eventually(lambda: len(sink.received) == 1)
        box.fail_next_peek = True
        await dispatcher.publish(make_event(1))
        await eventually(lambda: len(sink.received) == 2, timeout=2.0)
        assert not box.fail_next_peek, "the failure happened"
    finally:
        await dispatcher.close(drain_timeout=0.05)
        await box.close()


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
    await eventually(lambda: sum(s["events"] for s in quiet.summaries) == 4 and len(quiet.summaries) >= 3)
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
    await eventually(lambda: sum(s["events"] for s in both.summaries) == 1)
    assert both.events == [event.id]
    assert merged_counts(both.summaries) == {("cam-both", "stain", "started"): 1}


async def test_no_sink_wants_events(outbox: Outbox, dispatcher_for: Callable[..., Dispatcher]) -> None:
    quiet = FakeSink(unique("none-wants"), DeliverySettings(send_events=False))
    dispatcher = dispatcher_for(quiet)
    await dispatcher.start()
    await dispatcher.publish(make_event(0, camera="cam-none"))
    assert await outbox.pending_by_sink() == {}
    assert sample("edge_runtime_events_total", camera="cam-none", tag="stain", kind="started") >= 1


# --------------------------------------------------------------------------------------------------
# Housekeeping metrics and outbox bounds


async def test_dispatcher_drops_the_oldest_when_the_outbox_is_full(outbox: Outbox) -> None:
    sink = FakeSink("drop-unstarted")
    dispatcher = Dispatcher(outbox, [sink], OutboxLimits(max_events=2))
    events = [make_event(i) for i in range(5)]
    before = sample("edge_runtime_sink_dropped_total", sink="drop-unstarted", reason="full")
    for event in events:
        await dispatcher.publish(event)  # nothing drains yet: the outbox keeps the newest two
    assert sample("edge_runtime_sink_dropped_total", sink="drop-unstarted", reason="full") == before + 3
    await dispatcher.start()
    await eventually(lambda: len(sink.received) == 2)
    assert sink.events == [e.id for e in events[3:]]
    await dispatcher.close()


async def test_a_slow_sink_keeps_the_newest_and_finishes_the_event_in_flight(outbox: Outbox) -> None:
    sink = FakeSink("drop-slow")
    sink.gate.clear()  # the sink hangs on its first event
    dispatcher = Dispatcher(outbox, [sink], OutboxLimits(max_events=2))
    await dispatcher.start()
    events = [make_event(i) for i in range(5)]
    before = sample("edge_runtime_sink_dropped_total", sink="drop-slow", reason="full")
    await dispatcher.publish(events[0])
    await eventually(lambda: len(sink.attempts) == 1)  # events[0] is in flight
    for event in events[1:]:
        await dispatcher.publish(event)  # never waits for the sink
    assert sample("edge_runtime_sink_dropped_total", sink="drop-slow", reason="full") >= before + 2
    sink.gate.set()
    await eventually(lambda: len(sink.received) == 3)
    assert sink.events == [events[0].id, events[3].id, events[4].id]
    await dispatcher.close()
    assert await outbox.pending_by_sink() == {}


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
    await eventually(lambda: sample("edge_runtime_outbox_depth", sink=sink.name) == 3)
    await eventually(lambda: sample("edge_runtime_outbox_oldest_age_seconds", sink=sink.name) >= 0.1)
    assert sample("edge_runtime_outbox_oldest_age_seconds", sink=sink.name) <= time.time() - stored + 1.0
    sink.down = False
    await eventually(lambda: sample("edge_runtime_outbox_depth", sink=sink.name) == 0)
    await eventually(lambda: sample("edge_runtime_outbox_oldest_age_seconds", sink=sink.name) == 0)


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
    assert await stored_ids(outbox, down.name) == [e.id for e in events[4:]]
    assert sample("edge_runtime_sink_dropped_total", sink=down.name, reason="full") >= 3
    down.down = False
    await eventually(lambda: len(down.received) >= 3 and not down.down)
    await eventually(lambda: down.events[-3:] == [e.id for e in events[4:]])
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
    await eventually(lambda: sample("edge_runtime_sink_dropped_total", sink=sink.name, reason="expired") == 2)
    assert await stored_ids(outbox, sink.name) == []
    await eventually(lambda: sample("edge_runtime_outbox_depth", sink=sink.name) == 0)
    assert sample("edge_runtime_sink_dropped_total", sink=sink.name, reason="full") == 0
    assert sink.received == []
