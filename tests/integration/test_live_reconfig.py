"""Configuration changes without a restart through the admin API (the twin's local twin), over TCP.

Cameras are added, changed and removed, an MQTT sink is switched on against a real mosquitto, and an
invalid patch (an unreadable certificate) is rejected whole with the running configuration intact.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from admin_client import admin_call
from mosquitto import Broker, Observer, mosquitto_available

from edge_runtime.app import create_app
from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import build_demo_export
from edge_runtime.settings import build_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]
KEY = "reconfig-key"


def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return admin_call(url, KEY, method, path, body)


def ready(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health/ready", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_cameras_and_sinks_change_live(tmp_path: Path, start_server: Any) -> None:
    settings = build_settings(
        {
            "server": {"inference_workers": 2, "admin_key": KEY},
            "model": {"device": "cpu"},
            "cameras": [{**DEMO_CAMERA.model_dump(), "fps": 5}],
            "events": {
                "jsonl_path": tmp_path / "events.jsonl",
                "snapshot_dir": tmp_path / "snapshots",
                "outbox_path": tmp_path / "outbox.sqlite3",
            },
        }
    )
    server = start_server(build_demo_export(tmp_path / "model"), settings)
    url = server.url
    broker = Broker(tmp_path / "broker").start()
    observer = Observer(broker, ["live/#"]).start()
    observer.wait_subscribed(1)
    try:
        assert set(ready(url)["sinks"]) == {"jsonl"}

        # an invalid patch (the CA file cannot be read) changes nothing, not even its valid half
        status, body = call(
            url,
            "PATCH",
            "/admin/desired",
            {
                "cameras": {"second": {"url": "synthetic://conveyor"}},
                "sinks": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "tls": {"ca_file": "/nope"}}},
            },
        )
        assert status == 400 and "sinks.mqtt.tls.ca_file" in body["error"]
        assert set(ready(url)["cameras"]) == {DEMO_CAMERA.id}
        assert set(ready(url)["sinks"]) == {"jsonl"}

        # sinks that cannot start (the JSONL folder is a file): rejected, the previous sinks restored
        (tmp_path / "a-file").write_text("x")
        status, body = call(
            url,
            "PATCH",
            "/admin/desired",
            # (null drops the earlier rejected keys: a rejected patch stays in the desired document)
            {"cameras": None, "sinks": None, "events": {"jsonl_path": str(tmp_path / "a-file" / "e.jsonl")}},
        )
        assert status == 400 and "sinks: cannot start" in body["error"], body
        assert set(ready(url)["sinks"]) == {"jsonl"}
        assert ready(url)["sinks"]["jsonl"]["path"] == str(tmp_path / "events.jsonl")
        lines = len((tmp_path / "events.jsonl").read_text().splitlines())
        wait_until(
            lambda: len((tmp_path / "events.jsonl").read_text().splitlines()) > lines,
            30,
            "JSONL still written",
        )

        # switch the MQTT sink on and add a camera, in one patch (nulling the rejected events key)
        status, body = call(
            url,
            "PATCH",
            "/admin/desired",
            {
                "cameras": {"second": {"url": "synthetic://conveyor", "fps": 5, "rules": {"*": {}}}},
                "events": None,
                "sinks": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "live"}},
            },
        )
        assert status == 200, body
        assert "camera second added" in body["changes"] and "sinks" in body["changes"]
        wait_until(lambda: ready(url)["sinks"].get("mqtt", {}).get("connected"), 10, "mqtt connected")
        assert set(ready(url)["cameras"]) == {DEMO_CAMERA.id, "second"}
        # both cameras' events now reach the broker (the demo's stain starts 2 s into each cycle)
        wait_until(
            lambda: observer.on(f"live/{DEMO_CAMERA.id}/events") and observer.on("live/second/events"),
            30,
            "events from both cameras over MQTT",
        )
        retained = [m for m in observer.on("live/status") if m.payload == b"online"]
        assert retained

        # change one camera in place (fps), remove the other
        status, body = call(
            url, "PATCH", "/admin/desired", {"cameras": {"second": None, DEMO_CAMERA.id: {"fps": 3}}}
        )
        assert status == 200, body
        assert "camera second removed" in body["changes"]
        assert f"camera {DEMO_CAMERA.id} changed" in body["changes"]
        assert set(ready(url)["cameras"]) == {DEMO_CAMERA.id}
        assert ready(url)["cameras"][DEMO_CAMERA.id]["state"] == "streaming"  # not reopened
        # the removed camera's retained status is cleared
        wait_until(
            lambda: any(m.payload == b"" for m in observer.on("live/second/status")), 5, "status cleared"
        )
        status, body = call(url, "GET", "/admin/status")
        assert body["config"]["status"] == "applied"
        status, desired = call(url, "GET", "/admin/desired")
        assert desired["cameras"] == {DEMO_CAMERA.id: {"fps": 3}}
    finally:
        observer.close()
        start_server.stop_all()
        broker.stop()


def test_module_starts_without_a_model_and_gets_one_later(tmp_path: Path, start_server: Any) -> None:
    """Inside IoT Edge the model comes from the twin: until then readiness says why, then it serves."""
    settings = build_settings(
        {
            "server": {"inference_workers": 1, "admin_key": KEY},
            "model": {"device": "cpu"},
            "events": {"jsonl_path": None, "snapshot_dir": None, "outbox_path": tmp_path / "outbox.sqlite3"},
        }
    )
    server = start_server.serve_app(create_app(settings, None))
    wait_until(lambda: call(server.url, "GET", "/admin/status")[1]["model"]["status"] == "failed", 10, "load")
    request = urllib.request.Request(server.url + "/health/ready")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    with caught.value:
        assert caught.value.code == 503
        assert "no model configured" in json.loads(caught.value.read())["error"]

    status, body = call(server.url, "PUT", "/admin/model", {"path": str(build_demo_export(tmp_path / "m"))})
    assert status == 200 and body["model"]["id"] == "edge-runtime-demo", body
    assert ready(server.url)["status"] == "ready"
