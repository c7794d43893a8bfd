"""The IoT Hub sink end to end: outbox -> Dispatcher -> IotHubSink -> HubClient -> the real azure-iot-device
SDK -> MQTT over TLS -> mosquitto playing edgeHub (tests/fakehub.py), observed from the hub's side."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from factories import make_event
from fakehub import SDK_SOCKET_LEAK, FakeHub, HubMessage, collect_sdk_garbage

from edge_runtime.backoff import Backoff
from edge_runtime.domain import Event, EventKind
from edge_runtime.errors import ConfigError
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits, default_retry
from edge_runtime.events.outbox import Outbox
from edge_runtime.iotedge.hub import HubClient
from edge_runtime.settings import HubSettings, IotHubSettings
from edge_runtime.sinks.iothub import IotHubSink

pytestmark = [
    pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="needs mosquitto"),
    pytest.mark.filterwarnings(SDK_SOCKET_LEAK),  # paho 1.6 + SDK: see fakehub.SDK_SOCKET_LEAK
]

# The SDK's own reconnect interval after a dropped connection (connection_retry_interval default).
SDK_RETRY_S = 10.0


def fake_hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Body of the `fake_hub` fixture, reusable by other test modules."""
    with FakeHub(tmp_path / "hub") as hub:
        hub.patch_connect(monkeypatch)
        yield hub
    collect_sdk_garbage()


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from fake_hub_fixture(tmp_path, monkeypatch)


def use_edge_environment(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the dev-tools variables: any IOTEDGE_* would make the SDK use the workload API instead."""
    for name in [n for n in os.environ if n.startswith("IOTEDGE_")]:
        monkeypatch.delenv(name)
    for name, value in hub.edge_env().items():
        monkeypatch.setenv(name, value)


@dataclass
class Running:
    hub: HubClient
    dispatcher: Dispatcher

    async def backlog(self) -> int:
        return (await self.dispatcher.backlog())["iothub"]

    async def wait_drained(self, timeout: float = 10) -> None:
        """Acks follow the hub's receipt by a moment: poll the outbox until it is empty."""
        async with asyncio.timeout(timeout):
            while await self.backlog():
                await asyncio.sleep(0.05)


@asynccontextmanager
async def running_sink(
    settings: HubSettings,
    tmp_path: Path,
    output: str = "defects",
    publish_timeout_s: float = 10.0,
    retry: Callable[[], Backoff] = default_retry,
) -> AsyncIterator[Running]:
    """HubClient + IotHubSink behind a Dispatcher and a sqlite outbox, wired as app.py does."""
    hub = HubClient.from_settings(settings)
    await hub.start()
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    sink = IotHubSink(IotHubSettings(output=output, publish_timeout_s=publish_timeout_s), hub)
    dispatcher = Dispatcher(outbox, [sink], OutboxLimits(), retry=retry)
    await dispatcher.start()
    try:
        yield Running(hub, dispatcher)
    finally:
        await dispatcher.close(drain_timeout=0)
        await outbox.close()
        await hub.close()


def check_message(message: HubMessage, event: Event, output: str) -> None:
    assert message.output == output
    assert message.message_id == event.id
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.properties == {
        "type": "event",
        "camera": event.camera,
        "tag": event.tag,
        "kind": event.kind.value,
    }
    assert message.json() == event.to_dict()


# ----------------------------------------------------------------------------------- the fixture itself


async def test_fakehub_speaks_twin_and_methods_with_the_sdk(fake_hub: FakeHub) -> None:
    """The twin / method half of FakeHub (used by the module-twin tests) against the bare SDK client."""
    from azure.iot.device import MethodResponse
    from azure.iot.device.aio import IoTHubModuleClient

    client = IoTHubModuleClient.create_from_connection_string(
        fake_hub.connection_string, server_verification_cert=fake_hub.ca_file.read_text()
    )
    patches: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_patch(patch: dict[str, object]) -> None:  # runs on an SDK thread: hand over thread-safely
        # The SDK GETs the twin on its own after connecting and, when the response reaches it (a race: it
        # subscribes to the responses only on the first get_twin), hands the whole desired section up as a
        # patch ({"$version": 1} here). Only the real patches matter for this test.
        if patch.get("$version") != 1:
            loop.call_soon_threadsafe(patches.put_nowait, patch)

    async def on_method(request: Any) -> None:
        response = {"method": request.name, "echo": request.payload}
        await client.send_method_response(MethodResponse.create_from_method_request(request, 201, response))

    client.on_twin_desired_properties_patch_received = on_patch
    client.on_method_request_received = on_method
    try:
        await client.connect()
        assert await client.get_twin() == {"desired": {"$version": 1}, "reported": {"$version": 1}}
        await client.patch_twin_reported_properties({"state": {"a": 1, "b": {"c": 2}}, "gone": 1})
        await client.patch_twin_reported_properties({"state": {"b": None, "d": 3}, "gone": None})
        reported = await asyncio.to_thread(fake_hub.wait_for_reported, lambda r: r["$version"] == 3)
        assert reported == {"state": {"a": 1, "d": 3}, "$version": 3}
        assert (await client.get_twin())["reported"] == reported

        await asyncio.to_thread(fake_hub.patch_desired, {"threshold": 0.7, "nested": {"x": 1}})
        await asyncio.to_thread(fake_hub.patch_desired, {"nested": {"x": None, "y": 2}})
        async with asyncio.timeout(10):
            assert await patches.get() == {"threshold": 0.7, "nested": {"x": 1}, "$version": 2}
            assert await patches.get() == {"nested": {"x": None, "y": 2}, "$version": 3}
        assert fake_hub.desired == {"threshold": 0.7, "nested": {"y": 2}, "$version": 3}

        status, payload = await asyncio.to_thread(fake_hub.call_method, "restartCamera", {"camera": "cam1"})
        assert (status, payload) == (201, {"method": "restartCamera", "echo": {"camera": "cam1"}})
    finally:
        await client.shutdown()


# ------------------------------------------------------------------------------------------ properties


@pytest.mark.parametrize("path", ["connection_string", "edge_environment"])
async def test_output_message_carries_system_and_route_properties(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "connection_string":
        settings = HubSettings(connection_string=fake_hub.connection_string, ca_file=fake_hub.ca_file)
        output = "defects"
    else:
        use_edge_environment(fake_hub, monkeypatch)
        settings = HubSettings()
        output = "quality-alerts_2"
    events = [
        make_event(0),
        make_event(1, camera="line 2/cam&b", tag="dent=deep", kind=EventKind.ENDED),  # needs URL-encoding
    ]
    async with running_sink(settings, tmp_path, output=output) as running:
        for event in events:
            await running.dispatcher.publish(event)
        messages = await asyncio.to_thread(fake_hub.wait_for_messages, 2, None, 15)
        await running.wait_drained()
        assert running.hub.connected_once.is_set()
        assert running.hub.connected
    assert len(messages) == 2, messages
    by_id = {m.message_id: m for m in messages}
    for event in events:
        check_message(by_id[event.id], event, output)
    assert fake_hub.messages(output) == messages
    assert fake_hub.messages("other") == []


# ---------------------------------------------------------------------------------- outage and recovery


@pytest.mark.slow
async def test_broker_outage_loses_nothing(fake_hub: FakeHub, tmp_path: Path) -> None:
    settings = HubSettings(connection_string=fake_hub.connection_string, ca_file=fake_hub.ca_file)
    events = [make_event(i) for i in range(20)]
    async with running_sink(settings, tmp_path, publish_timeout_s=2.0) as running:
        async with asyncio.timeout(15):
            await running.hub.connected_once.wait()
        for event in events[:10]:
            await running.dispatcher.publish(event)
        await asyncio.to_thread(fake_hub.wait_for_messages, 3, "defects", 15)
        await asyncio.to_thread(fake_hub.stop_broker)  # mid-stream: some of the first ten are in flight
        for event in events[10:]:
            await running.dispatcher.publish(event)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        assert await running.backlog() > 0  # the down hub holds them back in the outbox
        await asyncio.to_thread(fake_hub.start_broker)
        # SDK reconnect (every SDK_RETRY_S) + dispatcher backoff (<= 5 s) + a margin.
        deadline = time.monotonic() + SDK_RETRY_S + 15
        want = {e.id for e in events}
        while {m.message_id for m in fake_hub.messages("defects")} < want:
            assert time.monotonic() < deadline, (
                f"missing: {want - {m.message_id for m in fake_hub.messages()}}"
            )
            await asyncio.sleep(0.1)
        await running.wait_drained()
    received = fake_hub.messages("defects")
    assert {m.message_id for m in received} == want  # duplicates allowed (at-least-once), nothing else
    by_id = {e.id: e for e in events}
    for message in received:
        check_message(message, by_id[message.message_id], "defects")


@pytest.mark.slow
async def test_hub_down_at_start_events_wait_in_outbox(
    fake_hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_hub.stop_broker()
    settings = HubSettings(connection_string=fake_hub.connection_string, ca_file=fake_hub.ca_file)
    events = [make_event(i) for i in range(5)]
    async with running_sink(settings, tmp_path, publish_timeout_s=2.0) as running:  # start() must not raise
        for event in events:
            await running.dispatcher.publish(event)
        await asyncio.sleep(1.5)
        assert not running.hub.connected_once.is_set()
        assert running.hub.last_error
        assert await running.backlog() == 5
        assert running.dispatcher.sinks[0].status().connected is False
        await asyncio.to_thread(fake_hub.start_broker)
        # HubClient retries its first connect after about 1, 2, 4 s (+-20 %): the next try is < 5 s away.
        messages = await asyncio.to_thread(fake_hub.wait_for_messages, 5, "defects", 15)
        await running.wait_drained()
        assert running.hub.last_error is None
    assert {m.message_id for m in messages} == {e.id for e in events}
    assert fake_hub.shared_access_key not in caplog.text


@pytest.mark.slow
async def test_the_sdks_reconnect_ends_the_dispatchers_retry_wait(fake_hub: FakeHub, tmp_path: Path) -> None:
    """The SDK reports connection changes on its own threads; HubClient hands them to the loop, and the
    iothub sink passes them to the dispatcher: the event stored during an outage goes out as soon as
    the SDK has reconnected, not after the dispatcher's (here: one minute) retry back-off."""
    settings = HubSettings(connection_string=fake_hub.connection_string, ca_file=fake_hub.ca_file)
    seen: list[tuple[bool, bool, float]] = []  # (connected, on the loop's thread, when)
    loop_thread = threading.get_ident()

    def note(connected: bool) -> None:
        seen.append((connected, threading.get_ident() == loop_thread, time.monotonic()))

    def minute() -> Backoff:
        return Backoff(60.0, 60.0, jitter=0.0)

    async with running_sink(settings, tmp_path, publish_timeout_s=1.0, retry=minute) as running:
        running.hub.watch_connection(note)
        async with asyncio.timeout(15):
            await running.hub.connected_once.wait()
        await asyncio.to_thread(fake_hub.stop_broker)
        async with asyncio.timeout(10):
            while not seen:  # the drop is pushed, not found by polling
                await asyncio.sleep(0.02)
        assert seen[0][:2] == (False, True) and not running.hub.connected
        event = make_event(0)
        await running.dispatcher.publish(event)
        await asyncio.sleep(1.5)  # the send failed (no hub, 1 s timeout): a minute's back-off begins
        assert await running.backlog() == 1
        await asyncio.to_thread(fake_hub.start_broker)
        async with asyncio.timeout(SDK_RETRY_S + 10):
            while len(seen) < 2:
                await asyncio.sleep(0.02)
            await running.wait_drained(timeout=SDK_RETRY_S + 10)  # acked: sent again by the dispatcher
        drained_after = time.monotonic() - seen[1][2]
        assert seen[1][:2] == (True, True) and running.hub.connected
        assert drained_after < 5.0, f"delivered {drained_after:.1f} s after the reconnect"
    assert {m.message_id for m in fake_hub.messages("defects")} == {event.id}


# ------------------------------------------------------------------------------ bad connection strings

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
GOOD = f"HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=edgeRuntime;SharedAccessKey={KEY}"


@pytest.mark.parametrize(
    "connection_string",
    [
        pytest.param(GOOD + ";GatewayHostName", id="pair-without-equals"),
        pytest.param(GOOD + ";Bogus=1", id="unknown-key"),
        pytest.param(GOOD.replace("HostName=myhub.azure-devices.net;", ""), id="no-host"),
        pytest.param(f"SharedAccessKey={KEY}", id="key-only"),
        pytest.param(GOOD.replace(KEY, KEY[:-2]), id="key-not-base64"),
        pytest.param(GOOD + ";HostName=other", id="duplicate-key"),
        pytest.param(f"not a connection string {KEY}", id="garbage"),
        # A device string would connect as the device (devices/dev1/messages/events): no module-output
        # route would ever match its messages.
        pytest.param(GOOD.replace("ModuleId=edgeRuntime;", ""), id="device-string-without-module-id"),
        pytest.param(GOOD.replace("ModuleId=edgeRuntime", "ModuleId="), id="empty-module-id"),
    ],
)
def test_malformed_connection_string_is_a_config_error_without_the_key(connection_string: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        HubClient.from_settings(HubSettings(connection_string=connection_string))
    assert "hub.connection_string" in str(excinfo.value)
    secret = KEY if KEY in connection_string else KEY[:-4]
    assert secret not in str(excinfo.value)
    assert secret not in "".join(traceback.format_exception(excinfo.value))  # nor in a logged traceback
