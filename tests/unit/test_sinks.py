"""Sinks against fakes: the JSONL file (one object per line, appended, behind the dispatcher), the IoT Hub
sink against a fake hub client (message id, properties from the record's headers, unavailable before the
first connection, timeout, a hub reconnect ends the dispatcher's wait), the MQTT sink before it connects.
The real broker and the real SDK are in tests/integration."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from factories import T0, fast_dispatcher, make_event, quick_retry, sample, stored_ids
from fakes import FakeHub
from waiting import eventually

from edge_runtime.domain import Event, EventKind
from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.dispatcher import Dispatcher, event_headers
from edge_runtime.events.outbox import MessageType, Outbox, OutboxRecord
from edge_runtime.events.summary import SummaryCounter
from edge_runtime.settings import IotHubSettings, MqttSettings
from edge_runtime.sinks.iothub import IotHubSink
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.status import SinkStatus

# --------------------------------------------------------------------------------------------------
# JSONL


def event_record(event: Event, seq: int = 1) -> OutboxRecord:
    return OutboxRecord(seq, "jsonl", MessageType.EVENT, event.id, event.captured_at, 0, event.to_dict())


async def test_jsonl_sink_writes_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "events.jsonl"
    sink = JsonlSink(path)
    assert sink.name == "jsonl" and sink.delivery.send_events and sink.delivery.summary_interval_s == 0
    assert sink.status().to_dict() == {"path": str(path)}
    assert sink.status() == SinkStatus("jsonl", None, target=("path", str(path)))
    events = [
        make_event(0, snapshot="/snapshots/a.jpg"),
        make_event(1, kind=EventKind.ENDED, boxes=()),
    ]
    try:
        await sink.start()
        for seq, event in enumerate(events, 1):
            await sink.publish(event_record(event, seq))
        # Flushed after every line: readable while the sink is still open (tail -f).
        assert len(path.read_text().splitlines()) == 2
    finally:
        await sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    assert all("\n" not in line and line.startswith("{") for line in lines)
    # A restarted sink appends.
    again = JsonlSink(path)
    try:
        await again.start()
        await again.publish(event_record(make_event(2)))
    finally:
        await again.close()
    assert len(path.read_text().splitlines()) == 3


async def test_jsonl_sink_behind_the_dispatcher(tmp_path: Path, outbox: Outbox) -> None:
    path = tmp_path / "events.jsonl"
    dispatcher = Dispatcher(outbox, [JsonlSink(path)])
    await dispatcher.start()
    events = [make_event(i) for i in range(20)]
    for event in events:
        await dispatcher.publish(event)
    await eventually(lambda: path.exists() and len(path.read_text().splitlines()) == 20)
    await dispatcher.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    assert await outbox.pending_by_sink() == {}


# --------------------------------------------------------------------------------------------------
# IoT Hub, against a fake hub client


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
        assert hub.sent == [] and len(await stored_ids(outbox, "iothub")) == 3
        hub.up()
        await eventually(lambda: len(hub.sent) == 3)
        assert [message_id for _, _, message_id, _ in hub.sent] == [e.id for e in events]
    finally:
        await dispatcher.close(drain_timeout=1.0)
    assert await stored_ids(outbox, "iothub") == []


async def test_a_hub_reconnect_ends_the_retry_wait_of_the_iothub_sink(outbox: Outbox) -> None:
    hub = FakeHub()
    sink = IotHubSink(IotHubSettings(), hub)
    dispatcher = fast_dispatcher(outbox, [sink], retry=quick_retry(10.0, 10.0))  # not to be waited out
    await dispatcher.start()
    event = make_event(0)
    try:
        failed = sample("edge_runtime_sink_failed_total", sink="iothub")
        await dispatcher.publish(event)
        await eventually(lambda: sample("edge_runtime_sink_failed_total", sink="iothub") == failed + 1)
        assert hub.sent == []  # not connected yet: in the back-off now
        reconnected_at = time.monotonic()
        hub.up()
        await eventually(lambda: len(hub.sent) == 1, timeout=2.0)
        assert time.monotonic() - reconnected_at < 0.5
        assert sample("edge_runtime_sink_connected", sink="iothub") == 1
        hub.down()
        assert sample("edge_runtime_sink_connected", sink="iothub") == 0, "the gauge follows the hub"
    finally:
        await dispatcher.close(drain_timeout=1.0)
    assert hub.listeners == [], "close unsubscribes the sink and the dispatcher"
    assert await stored_ids(outbox, "iothub") == []


# --------------------------------------------------------------------------------------------------
# MQTT


async def test_mqtt_sink_is_unavailable_before_it_connects() -> None:
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=1))
    with pytest.raises(SinkUnavailableError, match=r"not connected to 127\.0\.0\.1:1$"):
        await sink.publish(record_of(make_event(0)))
