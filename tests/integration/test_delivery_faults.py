"""Delivery under faults, black-box: a real mosquitto (or a bare TCP listener) on one side, the runtime's
outbox + dispatcher + MQTT sink (or `edge-runtime serve`) on the other; only what crosses MQTT, TCP, HTTP
and the process boundary is asserted.

- the reconnect pace has a floor: no setting makes the client reconnect in a busy loop;
- a publish the broker never confirms is logged with its reason (no PUBACK within the timeout);
- `serve` on a port that is taken says so in one line and exits 2, shutting down what it started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Broker, Observer, mosquitto_available

from edge_runtime.domain import Event, EventKind
from edge_runtime.events.dispatcher import Dispatcher
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.outbox import Outbox
from edge_runtime.settings import MqttSettings
from edge_runtime.sinks.mqtt import MqttSink

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
PREFIX = "faults"


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
    started = Broker(tmp_path / "broker").start()
    yield started
    started.stop()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    watching = Observer(broker, [f"{PREFIX}/+/events"]).start()
    yield watching
    watching.close()


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


def make_event(camera: str = "cam-1", roi: str = "full", tag: str = "stain", kind: str = "started") -> Event:
    return Event(
        id=new_event_id(),
        kind=EventKind(kind),
        camera=camera,
        roi=roi,
        tag=tag,
        probability=0.9,
        boxes=(),
        captured_at=time.time(),
        model_id="faults",
        model_sha1="0" * 40,
    )


async def eventually(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


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
            await eventually(lambda: sink.status()["connected"], 5, "CONNACK from the muted broker")
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
