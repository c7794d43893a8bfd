"""The MQTT sink against a real mosquitto: topics and payloads, QoS 1, retained status, Last Will,
no loss across broker and runtime restarts, TLS / mutual TLS / passwords, and configuration errors.

In-process tests wire Outbox + Dispatcher + MqttSink as the application does; the Last Will, broker-
down-at-start and configuration tests run `python -m edge_runtime serve` (the built-in demo camera
produces a `stain` event a few seconds after start). Every test has its own broker on a free port.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Iterator
from datetime import datetime

import mqtt_runtime
import pytest
from certs import TlsFiles, make_tls_files
from mosquitto import TlsListener, free_port, mosquitto_available
from mqtt_runtime import PREFIX, Runtime, camera_status, event_ids, events_of, jpeg, make_event, mqtt_settings
from waiting import eventually

from edge_runtime.domain import BoundingBox, Event, EventKind
from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.ids import EVENT_ID_PATTERN
from edge_runtime.events.outbox import Outbox, OutboxRecord
from edge_runtime.settings import TlsSettings
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.status import CameraState, StatusBoard, camera_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

brokers = mqtt_runtime.brokers
observers = mqtt_runtime.observers
runtimes = mqtt_runtime.runtimes


# --------------------------------------------------------------------------------------------------
# 1. Topics, payloads, QoS, retained status, snapshots


async def test_events_status_and_snapshots_arrive_as_documented(tmp_path, brokers, observers, runtimes):
    broker = brokers()
    live = observers(broker, [f"{PREFIX}/#"])
    board = StatusBoard()  # the camera states the sink mirrors, pushed as the captures push them
    board.put(camera_key("cam-1"), camera_status("cam-1", CameraState.STREAMING))
    snapshots: dict[str, bytes] = {}
    settings = mqtt_settings(broker.port, publish_snapshots=True)
    runtime = await runtimes(tmp_path / "outbox.sqlite3", settings, board, snapshots.get).start()
    await eventually(lambda: runtime.sink.status().connected, 10, "sink connected")
    assert runtime.sink.status().to_dict() == {
        "connected": True,
        "broker": f"127.0.0.1:{broker.port}",
        "last_error": None,
    }

    # Retained: an observer that subscribes later gets `online` and the camera status at once.
    await live.message(f"{PREFIX}/cam-1/status")
    late = observers(broker, [f"{PREFIX}/status", f"{PREFIX}/+/status"])
    online = await late.message(f"{PREFIX}/status")
    assert (online.payload, online.retain, online.qos) == (b"online", True, 1)
    camera = await late.message(f"{PREFIX}/cam-1/status")
    assert camera.retain and camera.qos == 1
    body = json.loads(camera.payload)
    assert set(body) == {"camera", "state", "last_error", "at"}
    assert (body["camera"], body["state"], body["last_error"]) == ("cam-1", "streaming", None)
    assert abs(datetime.fromisoformat(body["at"]).timestamp() - time.time()) < 30
    assert datetime.fromisoformat(body["at"]).utcoffset() is not None

    # Two events: the first with boxes and a snapshot, the second with neither.
    captured = 1_750_000_000.123
    first = make_event(
        boxes=(BoundingBox(0.125, 0.25, 0.3333333333, 0.5),), snapshot=True, captured_at=captured
    )
    second = make_event(kind=EventKind.ENDED, captured_at=captured + 2.5)
    snapshots[first.id] = jpeg()
    snapshots[second.id] = jpeg(1)  # must not be sent: the event has no snapshot
    await runtime.dispatcher.publish(first)
    await runtime.dispatcher.publish(second)
    await live.until(lambda: len(events_of(live)) >= 2, 10, "both events")
    await asyncio.sleep(0.3)  # room for a wrong extra snapshot to show up

    received = [m for m in live.received() if m.topic.endswith(("/events", "/snapshot"))]
    assert [m.topic for m in received] == [
        f"{PREFIX}/cam-1/events",
        f"{PREFIX}/cam-1/snapshot",  # right after its event
        f"{PREFIX}/cam-1/events",
    ]
    assert all(m.qos == 1 and not m.retain for m in received)
    assert json.loads(received[0].payload) == {
        "id": first.id,
        "kind": "started",
        "camera": "cam-1",
        "roi": "full",
        "tag": "stain",
        "probability": 0.87654321,
        "boxes": [{"left": 0.125, "top": 0.25, "width": 0.333333, "height": 0.5}],
        "captured_at": "2025-06-15T15:06:40.123+00:00",
        "model": {"id": "model-under-test", "sha1": "0123456789abcdef0123456789abcdef01234567"},
        "snapshot": f"/snapshots/{first.id}.jpg",
    }
    assert EVENT_ID_PATTERN.fullmatch(json.loads(received[0].payload)["id"])
    assert received[1].payload == snapshots[first.id]
    assert received[1].payload[:2] == b"\xff\xd8"
    assert json.loads(received[2].payload) == {
        "id": second.id,
        "kind": "ended",
        "camera": "cam-1",
        "roi": "full",
        "tag": "stain",
        "probability": 0.87654321,
        "boxes": [],
        "captured_at": "2025-06-15T15:06:42.623+00:00",
        "model": {"id": "model-under-test", "sha1": "0123456789abcdef0123456789abcdef01234567"},
        "snapshot": None,
    }
    assert await runtime.backlog() == 0

    # A state change is published (retained); a removed camera's retained status is cleared.
    board.put(camera_key("cam-1"), camera_status("cam-1", CameraState.STALLED, "no frame for 5 s"))
    stalled = await live.message(f"{PREFIX}/cam-1/status", lambda m: b"stalled" in m.payload)
    assert json.loads(stalled.payload)["last_error"] == "no frame for 5 s"
    board.remove(camera_key("cam-1"))
    await live.message(f"{PREFIX}/cam-1/status", lambda m: m.payload == b"")
    after_removal = observers(broker, [f"{PREFIX}/+/status"])
    await asyncio.sleep(0.3)
    assert after_removal.on(f"{PREFIX}/cam-1/status") == []

    # A clean close says `offline` (retained) itself.
    closed_at = time.time()
    await runtime.close()
    offline = await live.message(f"{PREFIX}/status", lambda m: m.at >= closed_at)
    assert offline.payload == b"offline"
    again = observers(broker, [f"{PREFIX}/status"])
    retained = await again.message(f"{PREFIX}/status")
    assert (retained.payload, retained.retain) == (b"offline", True)


async def test_publish_without_a_broker_raises_sink_unavailable():
    sink = MqttSink(mqtt_settings(free_port()))  # nothing listens there
    await sink.start()  # a broker that is down must not raise here
    try:
        event = make_event()
        record = OutboxRecord(1, "mqtt", "event", event.id, time.time(), 0, event.to_dict())
        with pytest.raises(SinkUnavailableError):
            await sink.publish(record)
        assert sink.status().connected is False
    finally:
        await sink.close()


async def test_unreachable_broker_shows_in_sink_status():
    port = free_port()  # nothing listens there
    sink = MqttSink(mqtt_settings(port))
    await sink.start()
    try:
        await eventually(lambda: sink.status().last_error, 5, "last_error set after failed attempts")
        assert sink.status().connected is False
        assert "refused" in str(sink.status().last_error).lower(), sink.status()
    finally:
        await sink.close()


# --------------------------------------------------------------------------------------------------
# 2. No event lost across a broker kill and a runtime restart


async def test_no_event_lost_across_broker_kill_and_runtime_restart(tmp_path, brokers, observers, runtimes):
    # A persistent observer on a broker that saves sessions at once: its subscription survives the
    # broker's SIGKILL, and it receives what was published while it was away.
    broker = brokers(persistence=True)
    observer = observers(broker, [f"{PREFIX}/+/events"], client_id="it-observer", clean_session=False)
    broker.wait_session_saved("it-observer")
    outbox_path = tmp_path / "outbox.sqlite3"
    settings = mqtt_settings(broker.port)
    produced: list[Event] = []

    async def produce(runtime: Runtime, count: int) -> None:
        for _ in range(count):
            event = make_event(camera=f"cam-{len(produced) % 3}")
            produced.append(event)
            await runtime.dispatcher.publish(event)

    first = await runtimes(outbox_path, settings).start()
    await eventually(lambda: first.sink.status().connected, 10, "sink connected")
    await produce(first, 40)  # a burst: delivery is still under way when the broker dies
    await asyncio.to_thread(broker.stop)
    await produce(first, 20)
    await eventually(lambda: not first.sink.status().connected, 10, "sink sees the broker gone")
    assert first.sink.status().last_error
    assert await first.backlog() >= 20
    await first.close()

    # The same outbox file, a new runtime, while the broker is still down.
    second = runtimes(outbox_path, settings)
    await second.outbox.open()
    waiting = await second.outbox.pending_by_sink()  # before the dispatcher starts: nothing delivered yet
    assert waiting.get("mqtt", 0) >= 20, waiting
    await second.dispatcher.start()
    await produce(second, 40)
    assert len(produced) == 100
    assert len({e.id for e in produced}) == 100
    await asyncio.sleep(0.5)
    assert not second.sink.status().connected
    assert await second.backlog() >= 60

    await asyncio.to_thread(broker.start)  # same port, saved sessions back
    expected = {e.id: e.to_dict() for e in produced}
    await observer.until(lambda: set(event_ids(observer)) >= set(expected), 30, "all 100 events")
    await eventually(lambda: second.sink.status().connected, 5, "sink reconnected")

    received = events_of(observer)
    assert all(m.qos == 1 for m in received)
    for message in received:
        body = json.loads(message.payload)
        assert body == expected[body["id"]], body
        assert message.topic == f"{PREFIX}/{body['camera']}/events"
    ids = [json.loads(m.payload)["id"] for m in received]
    assert set(ids) == set(expected)  # none lost, nothing foreign; at-least-once may repeat a few
    # Repeats come from two places: the broker redelivering to the persistent observer what was in its
    # in-flight window (mosquitto's max_inflight_messages, 20) when it was killed, and ours: one
    # unconfirmed message per runtime and outage. Ours are bounded tightly, the broker's by its window.
    ours = [json.loads(m.payload)["id"] for m in received if not m.dup]
    assert len(ours) - len(set(ours)) <= 2, f"{len(ours) - len(set(ours))} repeated by the runtime"
    assert len(ids) - len(set(ids)) <= 20 + 2, f"{len(ids) - len(set(ids))} duplicates"

    assert await second.backlog() == 0
    await second.close()
    check = Outbox(outbox_path)
    await check.open()
    try:
        assert await check.pending_by_sink() == {}
    finally:
        await check.close()


# --------------------------------------------------------------------------------------------------
# 4. TLS, mutual TLS, passwords


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A second, unrelated CA: a broker certificate it did not sign must be refused."""
    return make_tls_files(tmp_path_factory.mktemp("other-tls"))


def secured(case: str, tls: TlsFiles, other_tls: TlsFiles) -> tuple[dict, dict, dict]:
    """(broker kwargs, sink settings overrides, observer kwargs) for one security case."""
    server = {"ca": tls.ca, "cert": tls.server_cert, "key": tls.server_key}
    users = {"edge": "s3cret", "watcher": "w4tch"}
    watcher = {"username": "watcher", "password": "w4tch"}
    return {
        "tls": ({"tls": TlsListener(**server)}, {"tls": TlsSettings(ca_file=tls.ca)}, {"ca": tls.ca}),
        "mutual-tls": (
            {"tls": TlsListener(**server, require_certificate=True)},
            {"tls": TlsSettings(ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key)},
            {"ca": tls.ca, "client_cert": (tls.client_cert, tls.client_key)},
        ),
        "password": ({"users": users}, {"username": "edge", "password": "s3cret"}, watcher),
        # The password file written here (PBKDF2-SHA512, mosquitto 2.0's $7$ format), not by
        # mosquitto_passwd: the fallback for machines without it must work too.
        "password-hashed-here": (
            {"users": users, "hashed_here": True},
            {"username": "edge", "password": "s3cret"},
            watcher,
        ),
        "wrong-password": ({"users": users}, {"username": "edge", "password": "guessed"}, watcher),
        "untrusted-ca": (
            {"tls": TlsListener(**server)},
            {"tls": TlsSettings(ca_file=other_tls.ca)},
            {"ca": tls.ca},
        ),
    }[case]


@pytest.mark.parametrize("case", ["tls", "mutual-tls", "password", "password-hashed-here"])
async def test_secured_broker_gets_the_events(case, tmp_path, brokers, observers, runtimes, tls, other_tls):
    broker_kwargs, sink_kwargs, observer_kwargs = secured(case, tls, other_tls)
    broker = brokers(**broker_kwargs)
    observer = observers(broker, [f"{PREFIX}/#"], **observer_kwargs)
    runtime = await runtimes(tmp_path / "outbox.sqlite3", mqtt_settings(broker.port, **sink_kwargs)).start()
    if "tls" in sink_kwargs:
        assert runtime.sink.settings.effective_port == broker.port
    event = make_event()
    await runtime.dispatcher.publish(event)
    message = await observer.message(f"{PREFIX}/cam-1/events", timeout=10)
    assert json.loads(message.payload) == event.to_dict()
    assert message.qos == 1
    assert (await observer.message(f"{PREFIX}/status")).payload == b"online"
    assert runtime.sink.status().connected is True
    await eventually(lambda: runtime.sink.status().last_error is None, 1, "no error")
    assert await runtime.backlog() == 0


# paho 1.6.1's reconnect() does not close the socket when the TLS handshake fails; the garbage
# collector closes it later, with a ResourceWarning (an error here). Not the sink's doing: the tests
# that make handshakes fail tolerate exactly that warning, and collect the sockets before they end.
PAHO_HANDSHAKE_LEAK = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <ssl\.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def failed_handshakes() -> Iterator[None]:
    """Request before `runtimes`: its teardown then runs after theirs, once paho has stopped."""
    yield
    gc.collect()


REJECTION_WAIT_S = 2.5  # two or three connection attempts at reconnect_min_s = 1


@PAHO_HANDSHAKE_LEAK
@pytest.mark.parametrize("case", ["wrong-password", "untrusted-ca"])
async def test_rejected_client_never_connects_and_keeps_its_events(
    case, tmp_path, failed_handshakes, brokers, observers, runtimes, tls, other_tls
):
    broker_kwargs, sink_kwargs, observer_kwargs = secured(case, tls, other_tls)
    broker = brokers(**broker_kwargs)
    observer = observers(broker, [f"{PREFIX}/#"], **observer_kwargs)  # the broker itself works
    runtime = await runtimes(tmp_path / "outbox.sqlite3", mqtt_settings(broker.port, **sink_kwargs)).start()
    events = [make_event(), make_event()]
    for event in events:
        await runtime.dispatcher.publish(event)
    deadline = time.monotonic() + REJECTION_WAIT_S
    while time.monotonic() < deadline:
        assert runtime.sink.status().connected is False, runtime.sink.status()
        await asyncio.sleep(0.05)
    assert observer.received() == []  # not even `online`
    assert await runtime.backlog() == 2
    await runtime.close()
    check = Outbox(tmp_path / "outbox.sqlite3")
    await check.open()
    try:
        assert [r.id for r in await check.peek("mqtt", 10)] == [e.id for e in events]
    finally:
        await check.close()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong-password", "not authorised"),
        ("untrusted-ca", "certificate verify failed"),
    ],
)
@PAHO_HANDSHAKE_LEAK
async def test_rejection_reason_shows_in_sink_status(
    case, reason, tmp_path, failed_handshakes, brokers, runtimes, tls, other_tls
):
    broker_kwargs, sink_kwargs, _ = secured(case, tls, other_tls)
    broker = brokers(**broker_kwargs)
    runtime = await runtimes(tmp_path / "outbox.sqlite3", mqtt_settings(broker.port, **sink_kwargs)).start()
    await asyncio.sleep(REJECTION_WAIT_S)
    status = runtime.sink.status()
    assert status.connected is False
    assert reason in str(status.last_error), status


@PAHO_HANDSHAKE_LEAK
async def test_sink_recovers_after_the_broker_refused_its_tls_client(
    tmp_path, failed_handshakes, brokers, runtimes, observers, tls
):
    server = {"ca": tls.ca, "cert": tls.server_cert, "key": tls.server_key}
    strict = brokers(tls=TlsListener(**server, require_certificate=True))
    settings = mqtt_settings(strict.port, tls=TlsSettings(ca_file=tls.ca))  # no client certificate
    runtime = await runtimes(tmp_path / "outbox.sqlite3", settings).start()
    event = make_event()
    await runtime.dispatcher.publish(event)
    # TLS 1.3: the broker's "certificate required" alert arrives after the handshake, on paho's first
    # read; paho 1.6 lets that SSLError escape its network thread, which must survive it and say why.
    await eventually(lambda: runtime.sink.status().last_error, 5, "the refusal in the sink status")
    # Under load the broker may close the socket before paho reads the alert: an SSL EOF, still a TLS
    # reason (seen once in 22 loaded runs).
    reason = str(runtime.sink.status().last_error).lower()
    assert "certificate required" in reason or "sslerror" in reason or "ssleoferror" in reason, reason
    assert runtime.sink.status().connected is False
    await asyncio.to_thread(strict.stop)
    # The broker comes back on the same port without requiring client certificates.
    relaxed = brokers(port=strict.port, tls=TlsListener(**server))
    observer = observers(relaxed, [f"{PREFIX}/+/events"], ca=tls.ca)
    await eventually(lambda: runtime.sink.status().connected, 5, "sink reconnected")
    message = await observer.message(f"{PREFIX}/cam-1/events", timeout=5)
    assert json.loads(message.payload)["id"] == event.id
