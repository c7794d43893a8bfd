"""MQTT sink (paho-mqtt 1.6, the version azure-iot-device pins): events with QoS 1, retained status.

Topics (prefix = sinks.mqtt.topic_prefix):
    <prefix>/<camera>/events     one event JSON per message
    <prefix>/stations/<station>/verdicts   one part's verdict JSON per message
    <prefix>/<camera>/snapshot   the event's JPEG (publish_snapshots: true), sent right after the event
    <prefix>/<camera>/status     retained camera state JSON; emptied when the camera is removed
    <prefix>/status              retained "online" / "offline" (the Last Will says offline on a crash)
    <prefix>/summary             periodic summary (summary_interval_s > 0)

paho's network thread owns the socket and reconnects by itself; its callbacks only hand results to
the event loop with call_soon_threadsafe. A publish returns when the broker's PUBACK arrives, so the
outbox deletes only what the broker holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

from edge_runtime import metrics
from edge_runtime.errors import ConfigError, SinkUnavailableError
from edge_runtime.events.dispatcher import failure_reason
from edge_runtime.events.outbox import OutboxRecord
from edge_runtime.settings import MQTT_RECONNECT_FLOOR_S, DeliverySettings, MqttSettings
from edge_runtime.status import CameraState, CameraStatus, SinkStatus, StatusBoard

log = logging.getLogger(__name__)
T = TypeVar("T")


class _SupervisedClient(mqtt.Client):  # type: ignore[misc]
    """paho 1.6 lets some errors escape its network thread and die with it (an SSL alert that arrives
    after the handshake, read in loop_read): keep that thread alive, report the error, reconnect."""

    on_loop_error: Callable[[BaseException], None] | None = None

    def _thread_main(self) -> None:
        while not self._thread_terminate:
            try:
                self.loop_forever(retry_first_connection=True)
            except Exception as exc:
                if self.on_loop_error is not None:
                    self.on_loop_error(exc)
                time.sleep(self._reconnect_min_delay)
                self.connect_async(self._host, self._port, self._keepalive)  # start over: reconnect
                continue
            return


SnapshotReader = Callable[[str], bytes | None]


class MqttSink:
    name = "mqtt"
    CLOSE_TIMEOUT_S = 2.0

    def __init__(
        self,
        settings: MqttSettings,
        board: StatusBoard | None = None,
        read_snapshot: SnapshotReader | None = None,
    ) -> None:
        """`board`: camera states to mirror as retained status messages (pushed, never polled)."""
        self.settings = settings
        self.delivery: DeliverySettings = settings
        self._board = board
        self._read_snapshot = read_snapshot
        self._prefix = settings.topic_prefix.rstrip("/")
        self._client = self._build_client(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._last_error: str | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._camera_payloads: dict[str, bytes] = {}
        self._camera_states: dict[str, tuple[CameraState, str | None]] = {}
        self._status_task: asyncio.Task[None] | None = None
        self._watchers: list[Callable[[bool], None]] = []
        self._status_watchers: list[Callable[[SinkStatus], None]] = []
        self._refused: str | None = None  # touched by paho's thread only

    # ---- construction: every configuration problem surfaces here, before the server starts ----
    def _build_client(self, s: MqttSettings) -> mqtt.Client:
        self.client_id = s.client_id or f"edge-runtime-{socket.gethostname()}"
        client = _SupervisedClient(client_id=self.client_id, clean_session=True)
        client.on_loop_error = self._on_loop_error
        connect_as_configured(client, s)
        client.will_set(self._topic("status"), b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _topic(self, *parts: str) -> str:
        return "/".join((self._prefix, *parts))

    # ---- lifecycle ----
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        metrics.SINK_CONNECTED.labels(self.name).set(0)
        s = self.settings
        # connect_async + loop_start: the first attempt happens on paho's thread, so a broker that is
        # down at start costs nothing here; paho retries with its reconnect delay.
        self._client.connect_async(s.host, s.effective_port, keepalive=s.keepalive_s)
        self._client.loop_start()
        log.info("mqtt: connecting to %s:%d as %s", s.host, s.effective_port, self.client_id)
        if self._board is not None:
            self._status_task = asyncio.create_task(
                self._mirror_cameras(self._board), name="mqtt-camera-status"
            )

    async def close(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            await asyncio.gather(self._status_task, return_exceptions=True)
        if self._connected:
            # A clean goodbye: say offline ourselves (the broker only sends the Will on a crash).
            try:
                await self._publish(
                    self._topic("status"), b"offline", retain=True, timeout=self.CLOSE_TIMEOUT_S
                )
            except SinkUnavailableError as exc:
                log.warning("mqtt: could not publish offline status: %s", exc)
        self._client.disconnect()
        # paho's thread may sit in a TLS handshake for up to keepalive_s: never let it hold up
        # the shutdown (it is a daemon thread; the process may exit without it).
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        await asyncio.to_thread(stopper.join, self.CLOSE_TIMEOUT_S)
        if stopper.is_alive():
            log.warning("mqtt: network thread did not stop within %.0f s; leaving it", self.CLOSE_TIMEOUT_S)
        metrics.SINK_CONNECTED.labels(self.name).set(0)

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """`listener(connected)` on the loop at every change: the dispatcher's cue to deliver at once."""
        return _subscribe(self._watchers, listener)

    def watch_status(self, listener: Callable[[SinkStatus], None]) -> Callable[[], None]:
        """`listener(status)` on the loop at every change of connection or error (the status board)."""
        return _subscribe(self._status_watchers, listener)

    @property
    def broker(self) -> str:
        return f"{self.settings.host}:{self.settings.effective_port}"

    def status(self) -> SinkStatus:
        return SinkStatus(self.name, self._connected, self._last_error, ("broker", self.broker))

    # ---- delivery ----
    async def publish(self, record: OutboxRecord) -> None:
        body = json.dumps(dict(record.body), separators=(",", ":")).encode()
        timeout = self.settings.publish_timeout_s
        if record.type == "summary":
            await self._publish(self._topic("summary"), body, timeout=timeout)
            return
        camera = _camera_of(record)
        if (getattr(record, "headers", None) or {}).get("kind") == "verdict":
            await self._publish(self._topic("stations", camera, "verdicts"), body, timeout=timeout)
            return
        await self._publish(self._topic(camera, "events"), body, timeout=timeout)
        if self.settings.publish_snapshots and record.body.get("snapshot") and self._read_snapshot:
            jpeg = await asyncio.to_thread(self._read_snapshot, record.id)
            if jpeg is not None:
                await self._publish(self._topic(camera, "snapshot"), jpeg, timeout=timeout)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        if not self._connected:
            raise SinkUnavailableError(
                f"not connected to {self.settings.host}:{self.settings.effective_port}"
            )
        qos = self.settings.qos
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SinkUnavailableError(f"publish refused: {mqtt.error_string(info.rc)}")
        # on_publish reaches the loop through call_soon_threadsafe, so it cannot run before this line.
        future = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise SinkUnavailableError(f"no PUBACK from {self.broker} within {timeout:g} s") from None
        finally:
            self._acks.pop(info.mid, None)

    # ---- paho thread -> loop ----
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: int) -> None:
        # A refusal is followed by a disconnect: keep its reason (e.g. "not authorised") for that one.
        self._refused = None if rc == 0 else mqtt.connack_string(rc)
        self._call(self._connected_changed, rc == 0, self._refused)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` block: the exception is the reason.
        exc = sys.exc_info()[1]
        reason = "unknown error" if exc is None else failure_reason(exc)
        self._call(self._connected_changed, False, f"cannot connect: {reason}")

    def _on_loop_error(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._call(self._connected_changed, False, f"connection failed: {reason}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, rc: int) -> None:
        lost = None if rc == 0 else f"connection lost ({mqtt.error_string(rc)})"
        self._call(self._connected_changed, False, self._refused or lost)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int) -> None:
        self._call(self._acked, mid)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    # ---- loop side ----
    def _acked(self, mid: int) -> None:
        future = self._acks.get(mid)
        if future is not None and not future.done():
            future.set_result(None)

    def _connected_changed(self, connected: bool, error: str | None) -> None:
        was, was_error = self._connected, self._last_error
        self._connected = connected
        metrics.SINK_CONNECTED.labels(self.name).set(1 if connected else 0)
        repeated = error is not None and error == self._last_error
        if error:
            self._last_error = error
        if connected:
            self._last_error = None
            log.info("mqtt: connected to %s:%d", self.settings.host, self.settings.effective_port)
            self._client.publish(self._topic("status"), b"online", qos=1, retain=True)
            for camera, payload in self._camera_payloads.items():  # the broker may have lost them
                self._client.publish(self._topic(camera, "status"), payload, qos=1, retain=True)
        else:
            if error:
                # Once per distinct reason: a broker down for hours must not flood the log.
                log.log(
                    logging.DEBUG if repeated else logging.WARNING,
                    "mqtt: %s: %s",
                    self.broker,
                    error,
                )
            elif was:
                log.info("mqtt: disconnected from %s", self.broker)
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(SinkUnavailableError("connection lost before PUBACK"))
        if connected != was:
            for listener in list(self._watchers):
                listener(connected)
        if connected != was or self._last_error != was_error:
            status = self.status()
            for status_listener in list(self._status_watchers):
                status_listener(status)

    async def _mirror_cameras(self, board: StatusBoard) -> None:
        async for snapshot in board.changes():
            cameras = snapshot.cameras()
            for camera, status in cameras.items():
                state = (status.state, status.last_error)
                if self._camera_states.get(camera) != state:  # counters alone do not change the message
                    self._camera_states[camera] = state
                    payload = _camera_payload(status)
                    self._camera_payloads[camera] = payload
                    if self._connected:
                        self._client.publish(self._topic(camera, "status"), payload, qos=1, retain=True)
            for camera in set(self._camera_payloads) - set(cameras):
                del self._camera_payloads[camera]
                del self._camera_states[camera]
                if self._connected:  # an empty retained message removes the retained status
                    self._client.publish(self._topic(camera, "status"), b"", qos=1, retain=True)


def _subscribe(listeners: list[T], listener: T) -> Callable[[], None]:
    listeners.append(listener)

    def unsubscribe() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return unsubscribe


def connect_as_configured(client: mqtt.Client, s: MqttSettings) -> None:
    """Credentials, TLS and reconnect delays from sinks.mqtt (the sink's client and the MQTT trigger
    listener's); a file that cannot be used is a ConfigError naming the setting."""
    if s.username is not None:
        client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
    if s.tls is not None:
        for field in ("ca_file", "cert_file", "key_file"):
            _check_readable(f"sinks.mqtt.tls.{field}", getattr(s.tls, field))
        if (s.tls.cert_file is None) != (s.tls.key_file is None):
            raise ConfigError("sinks.mqtt.tls: cert_file and key_file go together")
        try:
            client.tls_set(
                ca_certs=_str(s.tls.ca_file), certfile=_str(s.tls.cert_file), keyfile=_str(s.tls.key_file)
            )
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ConfigError(f"sinks.mqtt.tls: cannot use the certificate files: {exc}") from exc
        client.tls_insecure_set(s.tls.insecure)
    # Floats, floored: paho waits min(delay * 2, max_delay), so a max_delay of 0 (int(0.5) once)
    # made it reconnect in a busy loop. Settings validation enforces the same floor.
    min_delay = max(MQTT_RECONNECT_FLOOR_S, s.reconnect_min_s)
    client.reconnect_delay_set(min_delay=min_delay, max_delay=max(min_delay, s.reconnect_max_s))


def _camera_of(record: OutboxRecord) -> str:
    headers = getattr(record, "headers", None) or {}  # rows stored before headers existed: the body
    return str(headers.get("camera") or record.body.get("camera", "unknown"))


def _camera_payload(status: CameraStatus) -> bytes:
    """State and error only (not counters), so the retained message changes when the state does."""
    body = {
        "camera": status.camera,
        "state": status.state.value,
        "last_error": status.last_error,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _check_readable(setting: str, path: Path | None) -> None:
    if path is None:
        return
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
