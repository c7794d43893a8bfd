"""HubClient around a stand-in for the SDK client: connection changes reported on an SDK thread reach the
listeners on the loop, once per change; the first connection is retried with its Backoff. The real SDK
is in tests/integration/test_iothub_sink.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from waiting import eventually

from edge_runtime.backoff import Backoff
from edge_runtime.iotedge.hub import HubClient, HubOutput, TwinChannel


class SdkClient:
    """The part of IoTHubModuleClient that HubClient drives for its connection: `connect()`,
    `connected`, `shutdown()`, and `on_connection_state_change`, called with no arguments on a thread of
    its own at every change (as the SDK's client-event handler pool does)."""

    def __init__(self, failures: int = 0) -> None:
        self.connected = False
        self.on_connection_state_change: Callable[[], None] | None = None
        self.failures = failures
        self.connects = 0
        self.shut_down = False

    async def connect(self) -> None:
        self.connects += 1
        if self.connects <= self.failures:
            raise ConnectionRefusedError("no edgeHub")
        self.change(True)

    def change(self, connected: bool) -> None:
        self.connected = connected
        self.report()

    def report(self) -> None:
        handler = self.on_connection_state_change
        if handler is not None:
            threading.Thread(target=handler, name="sdk-handler").start()

    async def shutdown(self) -> None:
        self.shut_down = True
        self.change(False)


def quick() -> Backoff:
    return Backoff(0.01, 0.02, jitter=0.0)


def test_hub_client_is_both_a_hub_output_and_a_twin_channel() -> None:
    output: HubOutput = HubClient(SdkClient())
    channel: TwinChannel = HubClient(SdkClient())
    assert callable(output.watch_connection) and callable(channel.listen)


async def test_connection_changes_reach_the_listeners_on_the_loop_once_each() -> None:
    sdk = SdkClient()
    hub = HubClient(sdk, quick())
    seen: list[tuple[bool, bool]] = []  # (connected, called on the loop's thread)
    loop_thread = threading.get_ident()
    unwatch = hub.watch_connection(lambda up: seen.append((up, threading.get_ident() == loop_thread)))
    await hub.start()
    try:
        await eventually(lambda: len(seen) == 1)
        assert seen == [(True, True)] and hub.connected and hub.connected_once.is_set()
        sdk.change(False)  # a drop: the SDK reconnects by itself
        await eventually(lambda: len(seen) == 2)
        for _ in range(3):  # late or repeated reports of the same state change nothing
            sdk.report()
        await asyncio.sleep(0.05)
        sdk.change(True)
        await eventually(lambda: len(seen) == 3)
        assert seen == [(True, True), (False, True), (True, True)]
        unwatch()
        sdk.change(False)
        await asyncio.sleep(0.05)
        assert len(seen) == 3, "unsubscribed"
    finally:
        await hub.close()
    assert sdk.shut_down


async def test_a_listener_that_raises_does_not_silence_the_others(caplog: pytest.LogCaptureFixture) -> None:
    sdk = SdkClient()
    hub = HubClient(sdk, quick())
    seen: list[bool] = []

    def broken(connected: bool) -> None:
        raise RuntimeError("listener bug")

    hub.watch_connection(broken)
    hub.watch_connection(seen.append)
    await hub.start()
    try:
        await eventually(lambda: seen == [True])
    finally:
        await hub.close()
    assert any("connection listener failed" in r.getMessage() for r in caplog.records)


async def test_the_first_connection_is_retried_with_its_backoff() -> None:
    sdk = SdkClient(failures=3)
    retry = quick()
    hub = HubClient(sdk, retry)
    await hub.start()
    try:
        await eventually(lambda: sdk.connects >= 2)
        assert hub.last_error == "ConnectionRefusedError: no edgeHub"
        assert not hub.connected_once.is_set()
        await eventually(hub.connected_once.is_set)
        assert sdk.connects == 4
        assert hub.last_error is None
        assert retry.upcoming == retry.initial, "reset after the connection"
    finally:
        await hub.close()
