"""Settings -> the configured sinks. Every configuration error surfaces here, naming the setting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from edge_runtime.events.dispatcher import Sink
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.settings import Settings
from edge_runtime.sinks.iothub import IotHubSink
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sinks.mqtt import MqttSink

if TYPE_CHECKING:
    from edge_runtime.iotedge.hub import HubClient


def build_sinks(
    settings: Settings,
    camera_statuses: Callable[[], Mapping[str, Mapping[str, object]]],
    snapshots: SnapshotStore | None,
    hub: HubClient | None,
) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.events.jsonl_path is not None:
        sinks.append(JsonlSink(settings.events.jsonl_path))
    if settings.sinks.mqtt is not None:
        reader = None if snapshots is None else snapshots.read
        sinks.append(MqttSink(settings.sinks.mqtt, camera_statuses, reader))
    if settings.sinks.iothub is not None:
        if hub is None:
            raise AssertionError("settings validation guarantees a hub for sinks.iothub")
        sinks.append(IotHubSink(settings.sinks.iothub, hub))
    return sinks
