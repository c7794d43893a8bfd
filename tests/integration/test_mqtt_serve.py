"""The whole runtime with MQTT: `python -m edge_runtime serve` (the built-in demo camera produces a
`stain` event a few seconds after start) against a real mosquitto: the Last Will on a crash, `offline`
on a clean stop, a broker down at start, and configuration errors that stop `serve` at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import mqtt_runtime
import pytest
from mosquitto import mosquitto_available
from mqtt_runtime import PREFIX, event_ids, jpeg, mqtt_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

brokers = mqtt_runtime.brokers
observers = mqtt_runtime.observers
serve = mqtt_runtime.serve


# 3. Last Will on a crash, `offline` from the sink on a clean stop


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_offline_status_after_the_runtime_stops(how, brokers, observers, serve):
    broker = brokers()
    observer = observers(broker, [f"{PREFIX}/status", f"{PREFIX}/+/status"])
    # A long keepalive: an `offline` within seconds of SIGKILL comes from the closed socket (the Will),
    # not from the broker noticing a silent client after 1.5 x keepalive.
    server = serve(mqtt_env(broker.port, keepalive_s="60"))
    ready = await server.ready()
    assert ready["sinks"]["mqtt"]["connected"] in (
        True,
        False,
    )  # the sink is reported (maybe still connecting)
    await observer.message(f"{PREFIX}/status", lambda m: m.payload == b"online", timeout=15)
    camera = await observer.message(f"{PREFIX}/demo-conveyor/status", timeout=15)
    assert json.loads(camera.payload)["camera"] == "demo-conveyor"
    ready = await server.ready()
    assert ready["sinks"]["mqtt"] == {
        "connected": True,
        "broker": f"127.0.0.1:{broker.port}",
        "last_error": None,
    }

    stopped_at = time.time()
    server.proc.send_signal(getattr(signal, how))
    offline = await observer.message(
        f"{PREFIX}/status", lambda m: m.at >= stopped_at and m.payload == b"offline", timeout=10
    )
    assert offline.at - stopped_at < 5, f"offline after {offline.at - stopped_at:.1f} s"
    rc = await server.wait(15)
    if how == "SIGTERM":
        assert rc == 0, server.log
        # A clean DISCONNECT (the broker discards the Will): this `offline` is the sink's own.
        assert "Client edge-it-serve disconnected." in broker.log
    else:
        assert rc == -signal.SIGKILL
        assert "Client edge-it-serve closed its connection." in broker.log
    # Retained: whoever subscribes later learns the runtime is gone.
    late = observers(broker, [f"{PREFIX}/status"])
    retained = await late.message(f"{PREFIX}/status")
    assert (retained.payload, retained.retain) == (b"offline", True)


# 5. A broker that is down at start stops nothing; what happened meanwhile arrives later


async def test_broker_down_at_start_then_events_arrive(brokers, observers, serve):
    # The observer's persistent session is saved while the broker is up; then the broker stops cleanly,
    # so when it comes back the observer gets whatever the runtime publishes, whoever reconnects first.
    broker = brokers(persistence=True)
    topics = [f"{PREFIX}/+/events", f"{PREFIX}/+/snapshot"]
    observer = observers(broker, topics, client_id="it-observer", clean_session=False)
    broker.wait_session_saved("it-observer")
    await asyncio.to_thread(broker.terminate)

    server = serve(mqtt_env(broker.port, publish_snapshots="true"))
    ready = await server.ready()
    assert ready["status"] == "ready"
    assert ready["sinks"]["mqtt"]["connected"] is False
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(server.base + "/image", data=jpeg()) as response,
    ):
        body = await response.text()
    assert response.status == 200, body
    assert isinstance(json.loads(body)["predictions"], list)

    deadline = time.monotonic() + 30
    while not server.events():
        assert time.monotonic() < deadline, f"the demo camera produced no event:\n{server.log}"
        assert server.proc.poll() is None, server.log
        await asyncio.sleep(0.2)
    meanwhile = {e["id"]: e for e in server.events()}
    assert observer.received() == []
    ready = await server.ready()
    assert ready["sinks"]["mqtt"]["connected"] is False
    assert ready["sinks"]["mqtt"]["last_error"], ready["sinks"]

    await asyncio.to_thread(broker.start)
    await observer.until(lambda: set(event_ids(observer)) >= set(meanwhile), 20, "the events from before")
    await asyncio.sleep(0.3)  # the last event's snapshot follows it
    received = observer.received()
    snapshots = 0
    for index, message in enumerate(received):
        if not message.topic.endswith("/events"):
            continue
        event = json.loads(message.payload)
        assert message.qos == 1
        assert message.topic == f"{PREFIX}/{event['camera']}/events"
        if event["id"] not in meanwhile:
            continue
        assert event == meanwhile[event["id"]]
        if event["snapshot"]:  # its JPEG comes right after it, on the camera's snapshot topic
            snapshot = received[index + 1]
            assert snapshot.topic == f"{PREFIX}/{event['camera']}/snapshot"
            assert snapshot.payload == (server.snapshot_dir / f"{event['id']}.jpg").read_bytes()
            assert snapshot.payload[:2] == b"\xff\xd8" and snapshot.qos == 1
            snapshots += 1
    assert snapshots >= 1, [e["snapshot"] for e in meanwhile.values()]
    ready = await server.ready()
    assert ready["sinks"]["mqtt"]["connected"] is True
    server.proc.send_signal(signal.SIGTERM)
    assert await server.wait(15) == 0, server.log


# 6. Bad configuration stops `serve` at once, naming the setting


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "EDGE_RUNTIME_SINKS__MQTT__HOST": "127.0.0.1",
                "EDGE_RUNTIME_SINKS__MQTT__TLS__CA_FILE": "/nonexistent",
            },
            "sinks.mqtt.tls.ca_file",
        ),
        ({"EDGE_RUNTIME_SINKS__KAFKA__HOST": "x"}, "unknown sink 'kafka'"),
        ({"EDGE_RUNTIME_SINKS__MQTT__PORT": "1883"}, "sinks.mqtt.host"),
    ],
    ids=["missing-ca-file", "unknown-sink", "missing-host"],
)
async def test_bad_mqtt_configuration_fails_at_start(env, message, serve):
    server = serve(env)
    rc = await server.wait(60)
    assert rc == 2, server.log
    assert "error:" in server.log and message in server.log, server.log
