"""Stations change without a restart through the admin API (the module twin's local twin), over TCP:
one is added on a running camera, judges a part, is changed, is refused when it cannot work (its
camera would not decode every frame; a tag the model does not have), and is removed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from admin_client import admin_call

from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import build_demo_export
from edge_runtime.settings import build_settings

KEY = "stations-live-key"


def trigger(url: str, station: str, part: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/stations/{station}/trigger", data=json.dumps({"partId": part}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_station_is_added_changed_refused_and_removed_live(tmp_path: Path, start_server: Any) -> None:
    settings = build_settings(
        {
            "server": {"inference_workers": 2, "admin_key": KEY},
            "model": {"device": "cpu"},
            "cameras": [{**DEMO_CAMERA.model_dump(), "decode": "all", "sample": False, "rules": []}],
            "events": {
                "jsonl_path": tmp_path / "events.jsonl",
                "snapshot_dir": tmp_path / "snapshots",
                "outbox_path": tmp_path / "outbox.sqlite3",
                "history_path": tmp_path / "history.sqlite3",
            },
        }
    )
    server = start_server(build_demo_export(tmp_path / "model"), settings)
    url = server.url
    assert trigger(url, "belt", "p0")[0] == 404

    station = {"cameras": [DEMO_CAMERA.id], "defects": [{"tag": "stain"}], "frames": 2}
    status, body = admin_call(url, KEY, "PATCH", "/admin/desired", {"stations": {"belt": station}})
    assert status == 200, body
    assert "station belt added" in body["changes"]
    status, verdict = trigger(url, "belt", "p1")
    assert status == 200 and verdict["verdict"] in ("pass", "fail") and len(verdict["frames"]) == 2

    status, body = admin_call(url, KEY, "PATCH", "/admin/desired", {"stations": {"belt": {"frames": 3}}})
    assert status == 200 and "station belt changed" in body["changes"], body
    assert len(trigger(url, "belt", "p2")[1]["frames"]) == 3

    # refused, the running configuration stays: the camera would decode keyframes only; a tag the model lacks
    status, body = admin_call(
        url, KEY, "PATCH", "/admin/desired", {"cameras": {DEMO_CAMERA.id: {"decode": "auto"}}}
    )
    assert status == 400 and "decode: all" in body["error"], body
    # the twin's semantics: a rejected document is kept, and the next patch builds on it
    status, body = admin_call(
        url, KEY, "PATCH", "/admin/desired", {"cameras": {DEMO_CAMERA.id: {"decode": "all"}}}
    )
    assert status == 200, body
    status, body = admin_call(
        url, KEY, "PATCH", "/admin/desired", {"stations": {"belt": {"defects": [{"tag": "rust"}]}}}
    )
    assert status == 400 and "'rust' is not one of the model's labels" in body["error"], body
    assert len(trigger(url, "belt", "p3")[1]["frames"]) == 3

    status, body = admin_call(url, KEY, "PATCH", "/admin/desired", {"stations": {"belt": None}})
    assert status == 200 and "station belt removed" in body["changes"], body
    status, body = trigger(url, "belt", "p4")
    assert status == 404 and body["code"] == "UnknownStation"


def test_a_plain_text_trigger_is_the_bare_part_id(tmp_path: Path, start_server: Any) -> None:
    settings = build_settings(
        {
            "model": {"device": "cpu"},
            "cameras": [{**DEMO_CAMERA.model_dump(), "decode": "all", "sample": False, "rules": []}],
            "stations": {"belt": {"cameras": [DEMO_CAMERA.id], "defects": [{"tag": "stain"}]}},
            "events": {
                "jsonl_path": tmp_path / "events.jsonl",
                "snapshot_dir": None,
                "outbox_path": tmp_path / "outbox.sqlite3",
                "history_path": None,
            },
        }
    )
    server = start_server(build_demo_export(tmp_path / "model"), settings)

    def send(body: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{server.url}/stations/belt/trigger",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, verdict = send(b"  lot7-part-42\n")
    assert status == 200 and verdict["part_id"] == "lot7-part-42" and verdict["source"] == "http"
    assert send(b"\xff\xfe")[1]["code"] == "BadTrigger"
    assert send(b"")[1]["code"] == "BadTrigger"
