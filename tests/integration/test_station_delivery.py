"""Verdicts on their way out, with the real parts: part triggers over MQTT through a real mosquitto,
SIGTERM while parts are pending (the runtime as a process), and a restart with verdicts still queued
for a broker that was down.

- MQTT: a trigger on <prefix>/stations/<id>/trigger is answered on .../verdicts; a payload that names
  no part (or an unknown station) on .../rejected; a repeated part id is not published again.
- SIGTERM: every pending part gets no_verdict/shutdown, written (JSONL) before the process exits.
- Restart: verdicts queued while the broker was down (the shutdown ones included) reach it after a
  restart, each exactly once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mqtt_runtime
import pytest
from mosquitto import Broker, Observer, Received, free_port, mosquitto_available
from station_support import StationServe, camera, station, station_settings, station_tree, verdicts_in

from edge_runtime.demo.model import build_demo_export
from edge_runtime.engine import Predictor, PredictorOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

brokers = mqtt_runtime.brokers
observers = mqtt_runtime.observers
PREFIX = "st-it"
SYNTHETIC = "synthetic://conveyor"
JsonBody = dict[str, Any]


def mqtt_sink(port: int, client_id: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "client_id": client_id,
        "topic_prefix": PREFIX,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        "publish_timeout_s": 2,
    }


def payloads(observer: Observer, topic: str) -> list[JsonBody]:
    return [json.loads(m.payload) for m in observer.on(topic)]


# --- 6. triggers over MQTT -----------------------------------------------------------------------------
async def test_mqtt_trigger_is_answered_on_verdicts_and_a_bad_one_on_rejected(
    tmp_path: Path,
    start_server: Any,
    demo_dir: Path,
    brokers: Callable[..., Broker],
    observers: Callable[..., Observer],
) -> None:
    broker = brokers()
    verdicts, rejected = f"{PREFIX}/stations/st/verdicts", f"{PREFIX}/stations/st/rejected"
    observer = observers(broker, [f"{PREFIX}/stations/+/verdicts", f"{PREFIX}/stations/+/rejected"])
    settings = station_settings(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[station("st", ["belt"], deadline_ms=5000)],
        sinks={"mqtt": mqtt_sink(broker.port, "edge-st-it")},
        triggers={"mqtt": True},
    )
    start_server(demo_dir, settings)

    def publish(station_id: str, payload: str | bytes) -> None:
        info = observer.client.publish(f"{PREFIX}/stations/{station_id}/trigger", payload, qos=1)
        info.wait_for_publish(5)

    # until the runtime's trigger client is subscribed and the camera streams: a verdict that is one
    deadline, n = time.monotonic() + 20, 0
    while not any(v["verdict"] != "no_verdict" for v in payloads(observer, verdicts)):
        assert time.monotonic() < deadline, f"no verdict within 20 s: {payloads(observer, verdicts)}"
        n += 1
        publish("st", json.dumps({"partId": f"warm-{n}"}))
        await asyncio.sleep(0.5)

    publish("st", json.dumps({"partId": "q-1", "metadata": {"line": "3"}, "plcTime": time.time()}))
    publish("st", "q-2")  # a bare part id
    answers: dict[str, JsonBody] = {}
    for part_id in ("q-1", "q-2"):

        def of_part(message: Received, part: str = part_id) -> bool:
            return bool(json.loads(message.payload)["part_id"] == part)

        msg = await observer.message(verdicts, of_part)
        answers[part_id] = json.loads(msg.payload)
        assert msg.qos == 1
    assert answers["q-1"]["source"] == "mqtt" and answers["q-1"]["metadata"] == {"line": "3"}
    assert answers["q-1"]["plc_time"] is not None
    assert {a["verdict"] for a in answers.values()} <= {"pass", "fail"}, answers

    # a repeat is answered by the first verdict, not published again
    publish("st", json.dumps({"partId": "q-1"}))
    # refused: answered on .../rejected of the station named in the topic
    publish("st", json.dumps({"partId": ""}))
    publish("st", b"{not json")
    publish("st", b"\xff\xfe")
    publish("nope", json.dumps({"partId": "q-3"}))
    await observer.until(lambda: len(observer.on(rejected)) >= 3, 10, "3 rejections of station st")
    nope = await observer.message(f"{PREFIX}/stations/nope/rejected")
    assert "unknown station" in json.loads(nope.payload)["error"]
    errors = [r["error"] for r in payloads(observer, rejected)]
    assert any("partId" in e for e in errors) and any("JSON" in e for e in errors), errors
    assert any("UTF-8" in e for e in errors), errors
    assert all(r["topic"] == f"{PREFIX}/stations/st/trigger" for r in payloads(observer, rejected))
    await asyncio.sleep(1.0)
    published = [v["part_id"] for v in payloads(observer, verdicts)]
    assert published.count("q-1") == 1 and published.count("q-2") == 1, published
    assert "q-3" not in published and "" not in published


# --- 7 + 8. SIGTERM with pending parts; a restart delivers the queued verdicts once ----------------------
def http_json(url: str, body: object | None = None, timeout: float = 30) -> tuple[int, JsonBody]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_sigterm_gives_pending_parts_no_verdict_and_a_restart_delivers_the_backlog_once(
    tmp_path: Path,
) -> None:
    model = build_demo_export(tmp_path / "model")
    mqtt_port = free_port()  # no broker yet: every verdict waits in the outbox
    tree = station_tree(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[
            station("st", ["belt"], deadline_ms=5000),
            # 50 frames a second apart: a part here is pending for the whole test
            station("long", ["belt"], frames=50, min_interval_ms=1000, deadline_ms=600_000),
        ],
        sinks={"mqtt": mqtt_sink(mqtt_port, "edge-st-restart")},
        server={"shutdown_timeout_s": 5},
    )
    jsonl = tmp_path / "events.jsonl"
    first = StationServe(tmp_path, tree, model, "serve-1")
    waiting: dict[str, tuple[int, JsonBody] | BaseException] = {}
    try:
        first.wait_ready()
        deadline, n, done = time.monotonic() + 20, 0, list[JsonBody]()
        while len(done) < 5:  # five parts judged (after the camera streams)
            assert time.monotonic() < deadline, first.log[-3000:]
            n += 1
            status, verdict = http_json(f"{first.base}/stations/st/trigger", {"partId": f"r-{n}"})
            assert status == 200, verdict
            if verdict["verdict"] != "no_verdict":
                done.append(verdict)
        pending = [f"long-{i}" for i in range(3)]
        for part_id in pending:
            status, body = http_json(f"{first.base}/stations/long/trigger?wait=false", {"partId": part_id})
            assert status == 202, body

        def wait_for_part() -> None:  # a caller waiting for its verdict while the runtime stops
            try:
                waiting["long-http"] = http_json(
                    f"{first.base}/stations/long/trigger", {"partId": "long-http"}
                )
            except BaseException as exc:
                waiting["long-http"] = exc

        caller = threading.Thread(target=wait_for_part, daemon=True)
        caller.start()
        time.sleep(1.0)
        began = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        rc = first.proc.wait(30)
        took = time.monotonic() - began
        caller.join(10)
    finally:
        first.stop()
    assert rc == 0, first.log[-3000:]
    assert took < 10, f"exit took {took:.1f} s"

    # every pending part: no_verdict/shutdown, written before the exit
    shutdown = {v["part_id"]: v for v in verdicts_in(jsonl, "long")}
    assert set(shutdown) == {*pending, "long-http"}, shutdown.keys()
    for verdict in shutdown.values():
        assert (verdict["verdict"], verdict["reason"]) == ("no_verdict", "shutdown"), verdict
    # what the waiting HTTP caller got (documented in the report)
    answer = waiting.get("long-http")
    assert isinstance(answer, tuple), f"the waiting caller got {answer!r}"
    assert answer[0] == 200 and answer[1]["id"] == shutdown["long-http"]["id"], answer

    produced = [v["id"] for v in verdicts_in(jsonl)]
    assert len(produced) == len(set(produced)) and len(produced) >= len(done) + 4

    # a broker at last, and the runtime again: every queued verdict arrives, once
    broker = Broker(tmp_path / "broker", port=mqtt_port).start()
    observer = Observer(broker, [f"{PREFIX}/stations/+/verdicts"]).start()
    second = StationServe(tmp_path, {**tree, "stations": tree["stations"][:1]}, model, "serve-2")
    try:

        def delivered() -> list[str]:
            return [json.loads(m.payload)["id"] for m in observer.received()]

        observer.wait_for(lambda: set(produced) <= set(delivered()), 30, "every queued verdict")
        time.sleep(1.5)  # a second copy would have come by now
        ids = delivered()
        assert sorted(ids) == sorted(produced), "a verdict delivered twice (or one never produced)"
        assert all(m.qos == 1 for m in observer.received())
        by_part = {json.loads(m.payload)["part_id"]: m.topic for m in observer.received()}
        assert by_part["long-0"] == f"{PREFIX}/stations/long/verdicts"
        assert by_part[done[0]["part_id"]] == f"{PREFIX}/stations/st/verdicts"
    finally:
        if second.proc.poll() is None:
            second.proc.send_signal(signal.SIGTERM)
            second.proc.wait(15)
        second.stop()
        observer.close()
        broker.stop()


# --- triggers the broker kept while the runtime was down -----------------------------------------------
def slow_load(path: Path, options: PredictorOptions) -> Predictor:
    """A model that takes a moment to load, as a large one does on a small box."""
    time.sleep(1.5)
    return Predictor.load(path, options)


async def test_triggers_sent_while_the_runtime_was_down_are_judged_after_its_restart(
    tmp_path: Path,
    start_server: Any,
    demo_dir: Path,
    brokers: Callable[..., Broker],
    observers: Callable[..., Observer],
) -> None:
    broker = brokers()
    verdicts = f"{PREFIX}/stations/st/verdicts"
    observer = observers(broker, [verdicts])
    settings = station_settings(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[station("st", ["belt"], deadline_ms=5000)],
        sinks={"mqtt": mqtt_sink(broker.port, "edge-st-down")},
        triggers={"mqtt": True},
    )

    def publish(payload: str) -> None:
        observer.client.publish(f"{PREFIX}/stations/st/trigger", payload, qos=1).wait_for_publish(5)

    start_server(demo_dir, settings)
    deadline, n = time.monotonic() + 20, 0
    while not any(v["verdict"] != "no_verdict" for v in payloads(observer, verdicts)):
        assert time.monotonic() < deadline, payloads(observer, verdicts)
        n += 1
        publish(f"warm-{n}")  # the first run makes the broker keep the runtime's session
        await asyncio.sleep(0.5)
    start_server.stop_all()

    publish("while-down")  # kept by the broker for the runtime's persistent session
    start_server(demo_dir, settings, loader=slow_load, wait=False)
    message = await observer.message(verdicts, lambda m: b"while-down" in m.payload, timeout=20)
    verdict = json.loads(message.payload)
    assert verdict["verdict"] in ("pass", "fail"), (verdict["reason"], verdict["detail"])
