"""Fakes for the runtime's protocols, one of each, each a complete implementation (no `type: ignore`):

    FakeClock   a clock (`() -> float`) for Outbox, Dispatcher, TokenBucket, Backoff users
    FakeSink    events.dispatcher.Sink + ConnectionWatch: records, fails, holds and reconnects on demand
    FakeHub     iotedge.hub.HubOutput + TwinChannel: module outputs, the twin and direct methods

The real parts have real tests beside these (tests/integration: mosquitto, the SDK against fakehub.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from fakehub import merge_patch

from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.outbox import MessageType, OutboxRecord
from edge_runtime.settings import DeliverySettings
from edge_runtime.status import SinkStatus

Listener = Callable[[bool], None]


def _subscribe(listeners: list[Listener], listener: Listener) -> Callable[[], None]:
    listeners.append(listener)

    def unsubscribe() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return unsubscribe


class FakeClock:
    """A clock that stands still until a test moves it (`now`, `advance`)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSink:
    """A sink that confirms a message by returning from publish and records it.

    What makes it fail: `down` fails every attempt; `fail_times` fails the first n attempts; `refuse`
    fails chosen message ids. `gate` (set) holds publish before it decides (a confirmation that has
    not arrived yet); `delay` is how long a delivery takes. `reconnect()` brings it back up and tells
    the dispatcher, as the MQTT sink does on a CONNACK."""

    def __init__(
        self,
        name: str,
        delivery: DeliverySettings | None = None,
        *,
        fail_times: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.delivery = delivery or DeliverySettings()
        self.down = False
        self.fail_times = fail_times
        self.refuse: set[str] = set()
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.attempts: list[str] = []  # message ids, one per publish call
        self.attempted_at: list[float] = []  # time.monotonic() of each publish call
        self.received: list[OutboxRecord] = []
        self.times: list[float] = []  # time.monotonic() of each confirmation
        self.started = False
        self.closed = False
        self.listeners: list[Listener] = []

    async def start(self) -> None:
        self.started = True

    async def publish(self, record: OutboxRecord) -> None:
        self.attempts.append(record.id)
        self.attempted_at.append(time.monotonic())
        await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down or len(self.attempts) <= self.fail_times or record.id in self.refuse:
            raise SinkUnavailableError(f"{self.name} is down")
        self.received.append(record)
        self.times.append(time.monotonic())

    def status(self) -> SinkStatus:
        return SinkStatus(self.name, not self.down)

    def watch_connection(self, listener: Listener) -> Callable[[], None]:
        return _subscribe(self.listeners, listener)

    def reconnect(self) -> None:
        self.down = False
        for listener in list(self.listeners):
            listener(True)

    async def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[str]:
        """Ids of the events it confirmed, in order."""
        return [r.id for r in self.received if r.type is MessageType.EVENT]

    @property
    def summaries(self) -> list[Mapping[str, Any]]:
        return [r.body for r in self.received if r.type is MessageType.SUMMARY]


class FakeHub:
    """Both roles of the one hub client.

    HubOutput: `sent` records module output messages; `hang` never confirms one. `up()` connects (the
    first time sets `connected_once`); setting `connected` tells the watchers of a change.
    TwinChannel: `desired` is the twin's desired section; `reported` the reported patches accepted, in
    order (`twin_reported()` merges them); `responses` the direct-method answers. `twin_errors`,
    `report_errors` and `respond_errors` make that many calls fail first; `on_patch` / `on_method` are
    the agent's handlers once it listens."""

    def __init__(self, desired: dict[str, Any] | None = None, connected: bool = False) -> None:
        self.connected_once = asyncio.Event()
        self._connected = connected
        self.last_error: str | None = None
        self.listeners: list[Listener] = []
        self.sent: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.hang = False
        self.desired = desired if desired is not None else {"$version": 1}
        self.twin_reads = 0
        self.twin_errors = 0
        self.report_attempts = 0
        self.report_errors = 0
        self.reported: list[dict[str, Any]] = []
        self.responses: list[tuple[str, int, Any]] = []
        self.respond_errors = 0
        self.on_patch: Callable[[dict[str, Any]], None] | None = None
        self.on_method: Callable[[Any], None] | None = None

    # ---- connection (both roles) -------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        for listener in list(self.listeners):
            listener(connected)

    def up(self) -> None:
        self.connected_once.set()
        self.connected = True

    def down(self) -> None:
        self.connected = False

    def watch_connection(self, listener: Listener) -> Callable[[], None]:
        return _subscribe(self.listeners, listener)

    # ---- HubOutput ---------------------------------------------------------------------------
    async def send_to_output(
        self, output: str, body: bytes, message_id: str, properties: Mapping[str, str]
    ) -> None:
        if self.hang:
            await asyncio.Event().wait()
        self.sent.append((output, body, message_id, dict(properties)))

    # ---- TwinChannel -------------------------------------------------------------------------
    async def listen(
        self, on_desired_patch: Callable[[dict[str, Any]], None], on_method: Callable[[Any], None]
    ) -> None:
        self.on_patch, self.on_method = on_desired_patch, on_method

    async def get_twin(self) -> dict[str, Any]:
        self.twin_reads += 1
        if self.twin_errors:
            self.twin_errors -= 1
            raise ConnectionError("hub dropped")
        return {"desired": dict(self.desired), "reported": {}}

    async def patch_reported(self, patch: Mapping[str, Any]) -> None:
        self.report_attempts += 1
        if self.report_errors:
            self.report_errors -= 1
            raise ConnectionError("hub dropped")
        self.reported.append(dict(patch))

    async def respond(self, request: Any, status: int, payload: Any) -> None:
        if self.respond_errors:
            self.respond_errors -= 1
            raise ConnectionError("cannot answer")
        self.responses.append((request.name, status, payload))

    def twin_reported(self) -> dict[str, Any]:
        """The reported section as the hub holds it: every accepted patch merged in order."""
        merged: dict[str, Any] = {}
        for patch in self.reported:
            merge_patch(merged, patch)
        return merged
