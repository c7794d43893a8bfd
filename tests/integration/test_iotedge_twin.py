"""The runtime as an IoT Edge module: the real azure-iot-device SDK against mosquitto + TLS as edgeHub.

The whole app runs over real TCP with the demo model and the synthetic conveyor (stain during 2-5 s,
glare during 7-9 s of every 12 s cycle). The fake hub holds the twin: a desired patch must change the
rules the next events are decided by; a bad patch must be rejected whole and reported; the direct
methods must answer.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fakehub import SDK_SOCKET_LEAK, FakeHub, HubMessage, collect_sdk_garbage

from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import build_demo_export
from edge_runtime.settings import build_settings

pytestmark = [pytest.mark.filterwarnings(SDK_SOCKET_LEAK), pytest.mark.slow]

CAMERA = DEMO_CAMERA.id
FAST_RULE = {"min_probability": 0.5, "k": 1, "n": 1, "clear_after": 2, "cooldown_s": 0}


@pytest.fixture
def module(tmp_path: Path, start_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    desired = {"cameras": {CAMERA: {"fps": 5, "rules": {"*": FAST_RULE}}}}
    with FakeHub(tmp_path / "hub", desired=desired) as hub:
        hub.patch_connect(monkeypatch)
        settings = build_settings(
            {
                "server": {"inference_workers": 2},
                "model": {"device": "cpu"},
                "cameras": [DEMO_CAMERA.model_dump()],
                "hub": {"connection_string": hub.connection_string, "ca_file": hub.ca_file},
                "sinks": {"iothub": {"output": "defects", "publish_timeout_s": 5}},
                "events": {
                    "jsonl_path": tmp_path / "events.jsonl",
                    "snapshot_dir": tmp_path / "snapshots",
                    "outbox_path": tmp_path / "outbox.sqlite3",
                },
            }
        )
        server = start_server(build_demo_export(tmp_path / "model"), settings)
        # the twin was read and its desired version applied
        hub.wait_for_reported(lambda r: r.get("config", {}).get("desired_version") == 1, timeout=20)
        yield {"hub": hub, "server": server}
        start_server.stop_all()
    collect_sdk_garbage()


def events(hub: FakeHub) -> list[dict[str, Any]]:
    return [m.json() for m in hub.messages("defects") if m.properties.get("type") == "event"]


def captured(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["captured_at"]).timestamp()


def wait_for_event(hub: FakeHub, match: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events(hub):
            if match(event):
                return event
        time.sleep(0.1)
    raise TimeoutError(
        f"no matching event within {timeout} s; got {[(e['tag'], e['kind']) for e in events(hub)]}"
    )


def test_desired_patch_changes_the_rules_of_the_next_events(module: dict[str, Any]) -> None:
    hub: FakeHub = module["hub"]
    # with the twin's rule, both defects raise events (and each message carries the routing properties)
    glare = wait_for_event(hub, lambda e: e["tag"] == "glare" and e["kind"] == "started", timeout=30)
    message: HubMessage = next(m for m in hub.messages("defects") if m.message_id == glare["id"])
    assert message.properties == {"type": "event", "camera": CAMERA, "tag": "glare", "kind": "started"}
    assert glare["probability"] < 0.99  # the demo's glare peaks around 0.96

    hub.patch_desired({"cameras": {CAMERA: {"rules": {"glare": {**FAST_RULE, "min_probability": 0.99}}}}})
    reported = hub.wait_for_reported(
        lambda r: r.get("config", {}).get("desired_version") == 2 and r["config"]["status"] == "applied",
        timeout=10,
    )
    assert f"camera {CAMERA} changed" in reported["config"]["changes"]
    applied_at = time.time()

    # the next cycle: stain still raises an event, glare (below the new threshold) no longer does
    stain = wait_for_event(
        hub, lambda e: e["tag"] == "stain" and e["kind"] == "started" and captured(e) > applied_at, timeout=20
    )
    glare_window_end = captured(stain) + 8.0  # glare runs 5-7 s after the stain starts
    time.sleep(max(0.0, glare_window_end - time.time()))
    # (the glare episode open at the patch may still end: episodes carry over, only new starts are judged)
    late_glare = [
        e for e in events(hub) if e["tag"] == "glare" and e["kind"] == "started" and captured(e) > applied_at
    ]
    assert late_glare == []


def test_bad_patch_is_rejected_whole_and_reported(module: dict[str, Any]) -> None:
    hub: FakeHub = module["hub"]
    hub.patch_desired({"cameras": {CAMERA: {"fps": -1}, "extra": {"url": "synthetic://conveyor"}}})
    reported = hub.wait_for_reported(lambda r: r.get("config", {}).get("desired_version") == 2, timeout=10)
    assert reported["config"]["status"] == "rejected"
    assert "fps" in reported["config"]["error"]
    status, body = hub.call_method("getStatus", {})
    assert status == 200
    assert set(body["cameras"]) == {CAMERA}  # the valid half ("extra") was not applied either
    assert body["cameras"][CAMERA]["state"] == "streaming"
    assert body["config"]["status"] == "rejected"

    # a section the twin may not change is refused with a reason
    hub.patch_desired({"server": {"port": 1}})
    reported = hub.wait_for_reported(lambda r: r["config"]["desired_version"] == 3, timeout=10)
    assert reported["config"]["status"] == "rejected" and "server" in reported["config"]["error"]

    # a good patch after bad ones applies (the desired document now holds all three patches merged:
    # the twin keeps the bad keys, so they are removed again with null)
    hub.patch_desired({"server": None, "cameras": {CAMERA: {"fps": 4}, "extra": None}})
    reported = hub.wait_for_reported(lambda r: r["config"]["desired_version"] == 4, timeout=10)
    assert reported["config"]["status"] == "applied", reported["config"]


def test_direct_methods(module: dict[str, Any]) -> None:
    hub: FakeHub = module["hub"]
    server = module["server"]
    status, body = hub.call_method("getStatus", {})
    assert status == 200
    assert body["model"]["id"] == "edge-runtime-demo" and body["model"]["status"] == "ready"
    assert body["model"]["device"] == "cpu"
    assert body["sinks"]["iothub"]["connected"] is True
    reported = hub.reported
    assert reported["model"]["sha1"] == body["model"]["sha1"]
    assert reported["cameras"][CAMERA]["state"] in {"connecting", "streaming"}

    status, body = hub.call_method("captureSnapshot", {"camera": CAMERA})
    assert status == 200, body
    with urllib.request.urlopen(server.url + body["path"], timeout=10) as response:
        jpeg = response.read()
    assert jpeg[:3] == b"\xff\xd8\xff"

    status, body = hub.call_method("captureSnapshot", {"camera": "nope"})
    assert status == 404 and body["cameras"] == [CAMERA]
    status, body = hub.call_method("captureSnapshot", {})
    assert status == 400

    status, body = hub.call_method("reloadModel", {})
    assert status == 200 and body["model"]["status"] == "ready"

    status, body = hub.call_method("selfDestruct", {})
    assert status == 404 and "getStatus" in body["methods"]
    assert json.dumps(body)  # JSON all the way


def test_desired_model_that_fails_is_reported_while_the_old_one_serves(
    module: dict[str, Any], tmp_path: Path
) -> None:
    hub: FakeHub = module["hub"]
    missing = str(tmp_path / "missing-model")
    hub.patch_desired({"model": {"path": missing}})
    reported = hub.wait_for_reported(
        lambda r: (
            r.get("config", {}).get("desired_version") == 2
            and r.get("model", {}).get("status") == "failed"
            and r["model"].get("configured") == str(tmp_path / "model")
        ),
        timeout=20,
    )
    assert reported["config"]["status"] == "applied"  # the document was fine; the model did not load
    assert reported["model"]["source"] == missing and missing in reported["model"]["error"]
    assert reported["model"]["id"] == "edge-runtime-demo"  # the old model serves
    # reloadModel reloads the serving model, not the failed one
    status, body = hub.call_method("reloadModel", {})
    assert status == 200, body
    assert body["model"]["status"] == "ready" and body["model"]["source"] == str(tmp_path / "model")
