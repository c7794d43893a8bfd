"""Settings -> the configured sinks. Every configuration error surfaces here, naming the setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.events.dispatcher import Sink
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.settings import EventSettings, SinkSettings
from edge_runtime.sinks.iothub import IotHubSink
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.status import StatusBoard

if TYPE_CHECKING:
    from edge_runtime.iotedge.hub import HubClient


def build_sinks(
    events: EventSettings,
    settings: SinkSettings,
    snapshots: SnapshotStore | None,
    hub: HubClient | None,
    board: StatusBoard | None = None,
) -> list[Sink]:
    """`board`: where the MQTT sink finds camera states to mirror (none when only checking)."""
    sinks: list[Sink] = []
    if events.jsonl_path is not None:
        sinks.append(JsonlSink(events.jsonl_path))
    if settings.mqtt is not None:
        reader = None if snapshots is None else snapshots.read
        sinks.append(MqttSink(settings.mqtt, board, reader))
    if settings.iothub is not None:
        if hub is None:
            raise AssertionError("settings validation guarantees a hub for sinks.iothub")
        sinks.append(IotHubSink(settings.iothub, hub))
    return sinks
