"""IoT Hub sink: each event becomes a module output message routed by edgeHub.

Message id = event id (consumers drop duplicates of an at-least-once delivery), JSON body in UTF-8,
custom properties `type` and the record's headers (an event's `camera`, `tag`, `kind`) for edgeHub
route conditions such as
`FROM /messages/modules/edgeRuntime/outputs/defects WHERE kind = 'started' INTO $upstream`.

The hub's connection changes pass through (`watch_connection`, the dispatcher's ConnectionWatch): when
the SDK reconnects, waiting messages go out at once instead of after the dispatcher's retry back-off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_runtime import metrics
from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.outbox import OutboxRecord
from edge_runtime.settings import DeliverySettings, IotHubSettings
from edge_runtime.status import SinkStatus

if TYPE_CHECKING:
    from edge_runtime.iotedge.hub import HubOutput


class IotHubSink:
    name = "iothub"

    def __init__(self, settings: IotHubSettings, hub: HubOutput) -> None:
        self.settings = settings
        self.delivery: DeliverySettings = settings
        self._hub = hub
        self._unwatch: Callable[[], None] | None = None

    async def start(self) -> None:
        """The shared HubClient connects in the background (started by its owner)."""
        self._show_connected(self._hub.connected)
        self._unwatch = self._hub.watch_connection(self._show_connected)

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """`listener(connected)` on the loop at every change of the hub's connection."""
        return self._hub.watch_connection(listener)

    def _show_connected(self, connected: bool) -> None:
        metrics.SINK_CONNECTED.labels(self.name).set(1 if connected else 0)

    async def publish(self, record: OutboxRecord) -> None:
        if not self._hub.connected_once.is_set():
            raise SinkUnavailableError(
                f"not connected to the hub yet ({self._hub.last_error or 'connecting'})"
            )
        properties = {**record.headers, "type": str(record.type)}
        payload = json.dumps(dict(record.body), separators=(",", ":")).encode()
        try:
            async with asyncio.timeout(self.settings.publish_timeout_s):
                await self._hub.send_to_output(self.settings.output, payload, record.id, properties)
        finally:
            self._show_connected(self._hub.connected)

    def status(self) -> SinkStatus:
        return SinkStatus(
            self.name, self._hub.connected, self._hub.last_error, ("output", self.settings.output)
        )

    async def close(self) -> None:
        """The HubClient is closed by its owner (the twin and methods share it)."""
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
