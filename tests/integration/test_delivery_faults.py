"""Delivery under faults, black-box: a real mosquitto (or a bare TCP listener) on one side, the runtime's
outbox + dispatcher + MQTT sink (or `edge-runtime serve`) on the other; only what crosses MQTT, TCP, HTTP
and the process boundary is asserted.

- the reconnect pace has a floor: no setting makes the client reconnect in a busy loop;
- a publish the broker never confirms is logged with its reason (no PUBACK within the timeout);
- a broker that comes back is used at once: the backlog starts draining on the reconnect, not after the
  dispatcher's retry back-off;
- after an outage a fresh event overtakes the stored backlog, yet per (camera, ROI, tag) the order holds;
- `serve` on a port that is taken says so in one line and exits 2, shutting down what it started.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import make_event
from mosquitto import Broker, Observer, mosquitto_available
from waiting import eventually

from edge_runtime.backoff import Backoff
from edge_runtime.domain import EventKind
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits, default_retry
from edge_runtime.events.outbox import Outbox
from edge_runtime.settings import MqttSettings
from edge_runtime.sinks.mqtt import MqttSink

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
PREFIX = "faults"
STARTED, ENDED = EventKind.STARTED, EventKind.ENDED


# --------------------------------------------------------------------------------------------------
# Helpers


class ClosingListener:
    """Accepts TCP connections and closes them at once, counting them: a broker that never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="closing-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class MutedBroker(ClosingListener):
    """Accepts the MQTT connection (CONNACK) and then never answers again: no PUBACK, ever."""

    def _run(self) -> None:
        held: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.accepted.append(time.monotonic())
            conn.settimeout(5)
            conn.recv(4096)  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, session present 0, accepted
            held.append(conn)  # read nothing more: PUBLISH packets pile up unanswered
        for conn in held:
            conn.close()


@pytest.fixture
def closing_listener() -> Iterator[ClosingListener]:
    listener = ClosingListener()
    yield listener
    listener.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that keeps sessions, with a persistent observer's subscription saved, then stopped:
    whatever the runtime publishes once it is started again reaches the observer."""
    down = Broker(tmp_path / "broker", persistence=True).start()
    yield down
    down.stop()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    watching = Observer(broker, [f"{PREFIX}/+/events"], client_id="faults-observer", clean_session=False)
    watching.start()
    broker.wait_session_saved("faults-observer")
    broker.terminate()
    yield watching
    watching.close()


class Runtime:
    """What events_ctx builds: an outbox file, the MQTT sink, the dispatcher between them."""

    def __init__(self, outbox_path: Path, settings: MqttSettings, retry: Callable[[], Backoff]) -> None:
        self.outbox = Outbox(outbox_path)
        self.sink = MqttSink(settings)
        self.dispatcher = Dispatcher(self.outbox, [self.sink], OutboxLimits(1_000_000, 3600.0), retry=retry)

    async def start(self) -> Runtime:
        await self.outbox.open()
        await self.dispatcher.start()
        return self

    async def close(self) -> None:
        await self.dispatcher.close(drain_timeout=0)
        await self.outbox.close()


@pytest.fixture
async def runtime_with(
    tmp_path: Path, broker: Broker, observer: Observer
) -> AsyncIterator[Callable[[Callable[[], Backoff]], Runtime]]:
    """Makes the runtime (not started yet) with the dispatcher's retry policy a test chooses."""
    made: list[Runtime] = []

    def make(retry: Callable[[], Backoff] = default_retry) -> Runtime:
        settings = mqtt_settings(broker.port, reconnect_min_s=0.5, reconnect_max_s=0.5)
        made.append(Runtime(tmp_path / "outbox.sqlite3", settings, retry))
        return made[-1]

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
def runtime(runtime_with: Callable[[Callable[[], Backoff]], Runtime]) -> Runtime:
    """Not started yet, with the dispatcher's own retry policy."""
    return runtime_with(default_retry)


def arrivals(observer: Observer) -> dict[str, float]:
    """Event id -> when the observer got it first (time.time())."""
    first: dict[str, float] = {}
    for message in observer.received():
        first.setdefault(json.loads(message.payload)["id"], message.at)
    return first


def mqtt_settings(port: int, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"edge-faults-{os.urandom(3).hex()}",
        "topic_prefix": PREFIX,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        "publish_timeout_s": 2,
        **overrides,
    }
    return MqttSettings(**values)


# --------------------------------------------------------------------------------------------------
# 15. The reconnect pace has a floor


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(lambda port: mqtt_settings(port, reconnect_min_s=0.5, reconnect_max_s=0.5), id="floor"),
        # Values that skip validation (a settings object built in code) reach paho floored all the same.
        pytest.param(
            lambda port: MqttSettings.model_construct(
                host="127.0.0.1", port=port, reconnect_min_s=0.05, reconnect_max_s=0.05
            ),
            id="unvalidated",
        ),
    ],
)
async def test_reconnect_attempts_are_paced_whatever_the_settings(
    settings: Callable[[int], MqttSettings], closing_listener: ClosingListener
) -> None:
    sink = MqttSink(settings(closing_listener.port))
    cpu_before = time.process_time()
    await sink.start()
    try:
        await asyncio.sleep(2.6)
    finally:
        await sink.close()
    attempts = len(closing_listener.accepted)
    # 0.5 s floor: an attempt at once, then one every 0.5 s or more -> at most ~6 in 2.6 s.
    assert 1 <= attempts <= 7, f"{attempts} connection attempts in 2.6 s"
    assert time.process_time() - cpu_before < 1.0, "the reconnect loop burns CPU"


# --------------------------------------------------------------------------------------------------
# 17. A missing PUBACK is logged with its reason


async def test_a_publish_never_confirmed_is_logged_as_a_missing_puback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MqttSink, "CLOSE_TIMEOUT_S", 0.2)  # its `offline` goodbye gets no PUBACK either
    muted = MutedBroker()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    sink = MqttSink(mqtt_settings(muted.port, publish_timeout_s=0.3))
    dispatcher = Dispatcher(outbox, [sink])
    try:
        with caplog.at_level(logging.WARNING, logger="edge_runtime.events.dispatcher"):
            await dispatcher.start()
            await eventually(lambda: sink.status().connected, 5, "CONNACK from the muted broker")
            await dispatcher.publish(make_event())
            await eventually(
                lambda: any("delivery failed" in r.getMessage() for r in caplog.records), 5, "a failure"
            )
    finally:
        await dispatcher.close(drain_timeout=0)
        await outbox.close()
        muted.close()
    [message] = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert message == (
        f"sink mqtt: delivery failed (no PUBACK from 127.0.0.1:{muted.port} within 0.3 s); will retry"
    )


# --------------------------------------------------------------------------------------------------
# 16. The broker's return starts delivery at once


async def test_delivery_resumes_on_reconnect_not_after_the_back_off(
    broker: Broker, observer: Observer, runtime_with: Callable[[Callable[[], Backoff]], Runtime]
) -> None:
    # A retry back-off of 5 s (the dispatcher's maximum) from the first failure on.
    runtime = runtime_with(lambda: Backoff(5.0, 5.0, jitter=0.0))
    await runtime.start()
    event = make_event()
    await runtime.dispatcher.publish(event)
    await asyncio.sleep(0.3)  # the attempt failed (not connected): the dispatcher waits now
    await asyncio.to_thread(broker.start)
    back = time.time()
    await observer.until(lambda: event.id in arrivals(observer), 10, "the event stored while down")
    took = arrivals(observer)[event.id] - back
    # paho retries every 0.5 s; delivery follows the CONNACK instead of the remaining ~4.7 s back-off.
    assert took < 2.0, f"first event {took:.2f} s after the broker came back"


# --------------------------------------------------------------------------------------------------
# 19. After an outage a fresh alarm overtakes the backlog; per (camera, ROI, tag) the order holds

BACKLOG = 3000


async def test_a_fresh_alarm_overtakes_the_backlog_and_keys_keep_their_order(
    broker: Broker, observer: Observer, runtime: Runtime
) -> None:
    await runtime.start()
    stored = [
        make_event(camera=f"cam-{i % 3}", tag=f"tag-{i % 2}", kind=STARTED if i % 4 < 2 else ENDED)
        for i in range(BACKLOG)
    ]
    for event in stored:  # the broker is down: all of them wait in the outbox
        await runtime.dispatcher.publish(event)
    await asyncio.to_thread(broker.start)
    back = time.monotonic()
    await observer.until(lambda: len(observer.received()) >= 100, 10, "the backlog draining")
    alarm = make_event(camera="cam-9", tag="crack")  # nothing of its key is stored
    ended = make_event(camera="cam-1", tag="tag-1", kind=ENDED)  # cam-1/tag-1 has ~500 stored rows
    published = time.time()
    await runtime.dispatcher.publish(alarm)
    await runtime.dispatcher.publish(ended)
    await observer.until(lambda: len(arrivals(observer)) >= BACKLOG + 2, 60, "every event")
    drained = time.monotonic() - back
    got = arrivals(observer)
    alarm_after = got[alarm.id] - published
    # Before: the alarm queued behind every stored event (about the whole drain time).
    assert alarm_after < 0.1 * drained, f"alarm {alarm_after:.2f} s after publish; drain {drained:.1f} s"
    order = [json.loads(m.payload) for m in observer.received()]
    first_seen: dict[str, int] = {}
    for position, body in enumerate(order):
        first_seen.setdefault(body["id"], position)
    for key in {(e.camera, e.tag) for e in stored}:
        expected = [e.id for e in stored if (e.camera, e.tag) == key]
        if key == ("cam-1", "tag-1"):
            expected.append(ended.id)  # the fresh `ended` never before its stored `started`s
        assert sorted(expected, key=first_seen.__getitem__) == expected, key
    print(f"alarm {alarm_after:.3f} s after publish; {BACKLOG} stored events drained in {drained:.2f} s")
