"""One IoT Hub module client per process (azure-iot-device 2.14, asyncio API), behind a small adapter.

Shared by the iothub sink (which needs a `HubOutput`) and the module twin and direct methods (which need
a `TwinChannel`); tests stand in for either with a fake. Inside IoT Edge it is created from the
environment the runtime sets (IOTEDGE_*; or EdgeHubConnectionString + EdgeModuleCACertificateFile from
the dev tools); elsewhere from hub.connection_string. The SDK reconnects by itself after a drop; the
first connection is retried here in the background, so a hub that is down never delays serving.
Connection changes are pushed (`watch_connection`): the SDK reports them on one of its handler threads,
which only ever hands over to the loop with call_soon_threadsafe. The connection string is a
credential: it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from azure.iot.device import Message, MethodResponse
from azure.iot.device.aio import IoTHubModuleClient

from edge_runtime.backoff import Backoff
from edge_runtime.errors import ConfigError
from edge_runtime.settings import HubSettings

log = logging.getLogger(__name__)


class HubOutput(Protocol):
    """What the IoT Hub sink needs: module outputs, and the connection state (pushed and read)."""

    @property
    def connected_once(self) -> asyncio.Event: ...

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    async def send_to_output(
        self, output: str, body: bytes, message_id: str, properties: Mapping[str, str]
    ) -> None: ...

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """`listener(connected)` on the loop at every change; returns the unsubscribe."""
        ...


class TwinChannel(Protocol):
    """What the twin agent and the direct methods need: the module twin and method calls."""

    @property
    def connected_once(self) -> asyncio.Event: ...

    @property
    def connected(self) -> bool: ...

    async def listen(
        self, on_desired_patch: Callable[[dict[str, Any]], None], on_method: Callable[[Any], None]
    ) -> None: ...

    async def get_twin(self) -> dict[str, Any]: ...

    async def patch_reported(self, patch: Mapping[str, Any]) -> None: ...

    async def respond(self, request: Any, status: int, payload: Any) -> None: ...


class HubClient:
    """Satisfies HubOutput and TwinChannel over one SDK module client."""

    CLOSE_TIMEOUT_S = 3.0

    def __init__(self, client: Any, retry: Backoff | None = None) -> None:
        self.sdk = client
        self._retry = retry if retry is not None else Backoff(1.0, 30.0)  # the first connect's retries
        self._connect_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: list[Callable[[bool], None]] = []
        self._was_connected = False
        self.connected_once = asyncio.Event()
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, hub: HubSettings) -> HubClient:
        if hub.connection_string is None:
            try:
                client = IoTHubModuleClient.create_from_edge_environment()
            except Exception as exc:  # the SDK raises OSError/ValueError/its own errors here
                raise ConfigError(f"hub: cannot use the IoT Edge environment: {exc}") from exc
            return cls(client, _connect_retry(hub))
        fields = dict(
            part.partition("=")[::2] for part in hub.connection_string.get_secret_value().split(";")
        )
        if not fields.get("ModuleId"):
            # A device string would connect as the device: its messages match no module-output route.
            raise ConfigError("hub.connection_string: needs ModuleId= (a module connection string)")
        kwargs: dict[str, Any] = {}
        if hub.ca_file is not None:
            try:
                kwargs["server_verification_cert"] = hub.ca_file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"hub.ca_file: cannot read {hub.ca_file}: {exc}") from exc
        try:
            client = IoTHubModuleClient.create_from_connection_string(
                hub.connection_string.get_secret_value(), **kwargs
            )
        except (ValueError, TypeError) as exc:
            # The SDK's message may quote the string: name the problem, never the secret.
            raise ConfigError("hub.connection_string: not a valid module connection string") from exc
        return cls(client, _connect_retry(hub))

    @property
    def connected(self) -> bool:
        return bool(self.sdk.connected)

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """`listener(connected)` on the loop at every change (the SDK's own reconnects included)."""
        self._watchers.append(listener)

        def unwatch() -> None:
            if listener in self._watchers:
                self._watchers.remove(listener)

        return unwatch

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Before connecting, so the first connection is reported too. Off the loop, like every handler.
        await asyncio.to_thread(setattr, self.sdk, "on_connection_state_change", self._state_changed)
        self._connect_task = asyncio.create_task(self._connect(), name="hub-connect")

    def _state_changed(self) -> None:
        """SDK handler thread, no arguments, at every connect and disconnect: hand over to the loop."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens any more
                loop.call_soon_threadsafe(self._check_connection)

    def _check_connection(self) -> None:
        """On the loop: read the state now (handler calls may arrive late or out of order), tell on change."""
        connected = self.connected
        if connected == self._was_connected:
            return
        self._was_connected = connected
        if connected:
            log.info("hub: connected")
        else:
            log.warning("hub: disconnected; the SDK reconnects by itself")
        for listener in list(self._watchers):
            try:
                listener(connected)
            except Exception:  # one listener must not keep the news from the others
                log.exception("hub: a connection listener failed")

    async def _connect(self) -> None:
        while True:
            try:
                await self.sdk.connect()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = self._retry.next_delay()
                log.warning("hub: cannot connect (%s); retrying in %.1f s", self.last_error, delay)
                await asyncio.sleep(delay)
                continue
            self._retry.reset()
            self.last_error = None
            self.connected_once.set()
            self._check_connection()  # pushed now, whenever the SDK's handler thread gets to it
            return

    async def send_to_output(
        self, output: str, body: bytes, message_id: str, properties: Mapping[str, str]
    ) -> None:
        message = Message(  # type: ignore[no-untyped-call]
            body, message_id=message_id, content_encoding="utf-8", content_type="application/json"
        )
        message.custom_properties = dict(properties)
        await self.sdk.send_message_to_output(message, output)

    async def listen(
        self, on_desired_patch: Callable[[dict[str, Any]], None], on_method: Callable[[Any], None]
    ) -> None:
        """Route the SDK's handler threads to the running loop: they never touch loop objects directly.

        Setting a handler makes the SDK subscribe and wait for it: done off the loop."""
        loop = asyncio.get_running_loop()

        def desired(patch: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(on_desired_patch, patch)

        def method(request: Any) -> None:
            loop.call_soon_threadsafe(on_method, request)

        await asyncio.to_thread(setattr, self.sdk, "on_twin_desired_properties_patch_received", desired)
        await asyncio.to_thread(setattr, self.sdk, "on_method_request_received", method)

    async def get_twin(self) -> dict[str, Any]:
        twin = await self.sdk.get_twin()
        return dict(twin)

    async def patch_reported(self, patch: Mapping[str, Any]) -> None:
        await self.sdk.patch_twin_reported_properties(dict(patch))

    async def respond(self, request: Any, status: int, payload: Any) -> None:
        response = MethodResponse.create_from_method_request(request, status, payload)
        await self.sdk.send_method_response(response)

    async def close(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        try:
            # A connect stuck in a silent TLS handshake holds shutdown() for a minute: bounded.
            async with asyncio.timeout(self.CLOSE_TIMEOUT_S):
                await self.sdk.shutdown()
        except TimeoutError:
            log.warning("hub: the SDK did not shut down within %.0f s; leaving it", self.CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.warning("hub: shutdown: %s", exc)


def _connect_retry(hub: HubSettings) -> Backoff:
    """1 s doubling up to hub.connect_retry_max_s, jittered: modules restarted together spread out."""
    return Backoff(1.0, hub.connect_retry_max_s)
