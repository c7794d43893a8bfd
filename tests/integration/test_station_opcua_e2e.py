"""The whole path a PLC takes, end to end: the real runtime (demo model, synthetic camera, a station)
with its OPC UA server, and a real asyncua client that browses to the station, calls Inspect(partId),
reads the result and the counters, and sees a part triggered over HTTP arrive in its subscription."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from edge_runtime.app_keys import OPCUA
from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import build_demo_export
from edge_runtime.settings import build_settings

NS = "urn:edge-runtime:stations"
USER, PASSWORD = "line3-plc", "plc-password-0123"


class Changes:
    """asyncua subscription handler: the Verdict values as they are pushed."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.values.put_nowait(value)


def http_trigger(url: str, part: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/stations/station-1/trigger", data=json.dumps({"partId": part}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


async def test_a_plc_calls_inspect_reads_the_result_and_subscribes(tmp_path: Path, start_server: Any) -> None:
    settings = build_settings(
        {
            "model": {"device": "cpu"},
            "cameras": [{**DEMO_CAMERA.model_dump(), "decode": "all", "sample": False, "rules": []}],
            "stations": [{"id": "station-1", "cameras": [DEMO_CAMERA.id], "defects": [{"tag": "stain"}]}],
            "opcua": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": 0,
                "pki_dir": tmp_path / "opcua",
                "users": {USER: PASSWORD},
                # the channel's security is tested in test_opcua_server.py; this test is the data path
                "allow_unencrypted": True,
            },
            "events": {
                "jsonl_path": tmp_path / "events.jsonl",
                "snapshot_dir": tmp_path / "snapshots",
                "outbox_path": tmp_path / "outbox.sqlite3",
                "history_path": tmp_path / "history.sqlite3",
            },
        }
    )
    server = start_server(build_demo_export(tmp_path / "model"), settings)
    endpoint = server.app[OPCUA].endpoint
    assert endpoint is not None and endpoint.startswith("opc.tcp://127.0.0.1:")

    client = Client(endpoint, timeout=10)
    client.set_user(USER)
    client.set_password(PASSWORD)
    async with client:
        idx = await client.get_namespace_index(NS)
        station = await client.nodes.objects.get_child(
            [f"{idx}:EdgeRuntime", f"{idx}:Stations", f"{idx}:station-1"]
        )
        assert (await station.get_child(f"{idx}:Health/{idx}:ModelReady")).nodeid.Identifier.endswith(
            "ModelReady"
        )

        # Inspect(partId) answers with the verdict: the same one the sinks get
        method = await station.get_child(f"{idx}:Inspect")
        verdict, reason, result = await station.call_method(
            method, ua.Variant("plc-1", ua.VariantType.String)
        )
        published = json.loads(result)
        assert verdict in ("pass", "fail") and reason == ""
        assert published["part_id"] == "plc-1" and published["source"] == "opcua"
        assert published["frames"] and published["model"]["id"] == "edge-runtime-demo"

        last = client.get_node(f"ns={idx};s=Stations/station-1/LastResult/PartId")
        assert await last.read_value() == "plc-1"
        parts = client.get_node(f"ns={idx};s=Stations/station-1/Counters/Parts")
        assert await parts.read_value() == 1
        assert await client.get_node(f"ns={idx};s=Stations/station-1/Health/ModelReady").read_value() is True
        camera_state = await client.get_node(f"ns={idx};s=Stations/station-1/Health/CameraState").read_value()
        assert camera_state == f"{DEMO_CAMERA.id}=streaming"

        # A repeat of the part id is the same verdict, not a new part.
        again = await station.call_method(method, "plc-1")
        assert json.loads(again[2])["id"] == published["id"]
        assert await parts.read_value() == 1

        # A part triggered elsewhere (HTTP) reaches the PLC's subscription.
        changes = Changes()
        subscription = await client.create_subscription(50, changes)
        await subscription.subscribe_data_change(
            client.get_node(f"ns={idx};s=Stations/station-1/LastResult/ResultJson")
        )
        first = await asyncio.wait_for(changes.values.get(), 5)  # the current value
        assert json.loads(first)["part_id"] == "plc-1"
        started = time.monotonic()
        answered = await asyncio.to_thread(http_trigger, server.url, "http-2")
        pushed = json.loads(await asyncio.wait_for(changes.values.get(), 5))
        assert pushed["id"] == answered["id"] and pushed["source"] == "http"
        assert time.monotonic() - started < 5
        assert await parts.read_value() == 2
        await subscription.delete()

        with pytest.raises(ua.UaStatusCodeError):
            await station.call_method(method, "bad\npart")
