"""A fake IoT Hub / edgeHub for tests of the real azure-iot-device SDK: mosquitto with TLS plus an observer.

mosquitto (/usr/sbin/mosquitto) listens on two free loopback ports: a TLS one for the module client
(the SDK hard-codes 8883; `patch_connect` rewrites it to the test port) and a plain one for the
observer, a paho client subscribed to `devices/#` and `$iothub/#` that plays the hub:

- records every device-to-cloud / module output message (`messages`, `wait_for_messages`);
- answers every twin GET with the current desired and reported properties, and every reported patch
  with 204, merging the patch into `reported` with twin semantics (nested merge, null deletes);
- sends desired patches (`patch_desired`) and direct methods (`call_method`, blocks for the answer);
- can kill and restart mosquitto on the same ports (`stop_broker` / `start_broker`) for outage tests.

All methods are thread-safe. The blocking ones (`call_method`, `wait_for_*`, `start_broker`) must be
called through `asyncio.to_thread` from async tests: the SDK's asyncio client needs the loop running.

    with FakeHub(tmp_path) as hub:
        hub.patch_connect(monkeypatch)
        client = IoTHubModuleClient.create_from_connection_string(
            hub.connection_string, server_verification_cert=hub.ca_file.read_text())

Twin dicts follow IoT Hub: `desired` and `reported` both carry "$version" (reported starts at 1 and
goes up by one per accepted patch).
"""

from __future__ import annotations

import base64
import copy
import gc
import json
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from certs import make_tls_files
from processes import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
SDK_PORT = 8883

# paho-mqtt 1.6.1 opens a loopback wake-up socket pair in every loop_start() and never closes the
# previous one; azure-iot-device 2.14 calls loop_start() on every (re)connect attempt and leaves the
# last pair open at shutdown. Each is finalised with "ResourceWarning: unclosed <socket.socket ...>",
# an error under filterwarnings=error. Test modules using the SDK: pytest.mark.filterwarnings(SDK_SOCKET_LEAK)
# (loopback TCP sockets only), and collect_sdk_garbage() at teardown so none is finalised in a later test.
SDK_SOCKET_LEAK_MESSAGE = (
    r"unclosed <socket\.socket fd=\d+, family=2, type=1, proto=0, laddr=\('127\.0\.0\.1'"
)
SDK_SOCKET_LEAK = f"ignore:{SDK_SOCKET_LEAK_MESSAGE}:ResourceWarning"


@dataclass(frozen=True)
class HubMessage:
    """One message a module sent (to an output, or plain device-to-cloud when `output` is None)."""

    output: str | None
    message_id: str | None
    content_type: str | None
    content_encoding: str | None
    properties: dict[str, str] = field(hash=False)  # custom properties only (no "$." system ones)
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Twin semantics, in place: nested objects merge, None deletes a key, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        elif isinstance(value, dict):
            target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def collect_sdk_garbage() -> None:
    """Finalise the SDK's leaked sockets now (ignoring just their warning), not in a later test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SDK_SOCKET_LEAK_MESSAGE, ResourceWarning)
        gc.collect()


def _query_params(topic: str) -> dict[str, str]:
    """`...?$rid=1&$version=2` -> {"$rid": "1", "$version": "2"}."""
    _, _, query = topic.partition("?")
    return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


class FakeHub:
    def __init__(
        self,
        directory: Path,
        device_id: str = "dev1",
        module_id: str = "edgeRuntime",
        desired: dict[str, Any] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.device_id = device_id
        self.module_id = module_id
        self.tls_port = free_port()
        self.plain_port = free_port()
        while self.plain_port == self.tls_port:
            self.plain_port = free_port()
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.shared_access_key = key
        self.connection_string = (
            f"HostName=myhub.azure-devices.net;DeviceId={device_id};ModuleId={module_id};"
            f"SharedAccessKey={key};GatewayHostName=localhost"
        )
        self.ca_file: Path = self.directory / "tls" / "ca.pem"
        self._events_prefix = f"devices/{device_id}/modules/{module_id}/messages/events"
        self._cond = threading.Condition()
        self._desired: dict[str, Any] = copy.deepcopy(desired or {})
        self._desired.setdefault("$version", 1)
        self._reported: dict[str, Any] = {"$version": 1}
        self._messages: list[HubMessage] = []
        self._method_responses: dict[str, tuple[int, bytes]] = {}
        self._broker: subprocess.Popen[bytes] | None = None
        self._observer: mqtt.Client | None = None
        self._ready = threading.Event()  # observer subscribed: the SDK may connect
        self._starting = False
        self._observer_lost = threading.Event()
        self._config: Path | None = None
        self._log: Any = None

    # ---------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> FakeHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        tls = make_tls_files(self.directory / "tls")
        self.ca_file = tls.ca
        self._config = self.directory / "mosquitto.conf"
        self._config.write_text(
            "user root\n"
            "per_listener_settings false\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"listener {self.plain_port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\n"
        )
        self._log = open(self.directory / "mosquitto.log", "ab")  # noqa: SIM115 (closed in stop)
        self.start_broker()

    def stop(self) -> None:
        self.stop_broker()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop_broker(self) -> None:
        """Kill mosquitto (SIGKILL: connections drop as in a crash), then the observer.

        A message mosquitto acknowledged to the module must still reach `messages()` (edgeHub stores a
        message before acknowledging it). So the observer is killed last, after reading what mosquitto
        had forwarded, and it subscribes with QoS 0: with no unread PUBACKs of the observer in its
        socket, the dying mosquitto closes that connection with FIN, not with a reset that would
        discard what the observer had not read yet."""
        self._ready.clear()
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.kill()
            broker.wait(10)
        observer, self._observer = self._observer, None
        if observer is not None:
            self._observer_lost.wait(5)  # it has read everything up to the EOF
            observer.disconnect()
            observer.loop_stop()
            observer.reinitialise()  # paho 1.6 leaves loop_start's wake-up socket pair open otherwise

    def start_broker(self) -> None:
        """Start mosquitto on the same ports; returns once the observer is subscribed.

        Until then the patched connect holds the SDK back, so nothing it sends can slip past the
        observer (a message mosquitto accepts with no subscriber is gone)."""
        if self._broker is not None:
            raise RuntimeError("the broker is already running")
        assert self._config is not None, "start() first"
        self._starting = True
        try:
            self._broker = subprocess.Popen(
                [MOSQUITTO, "-c", str(self._config)], stdout=self._log, stderr=subprocess.STDOUT
            )
            deadline = time.monotonic() + 10
            while not (self._listening(self.plain_port) and self._listening(self.tls_port)):
                if self._broker.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self._broker.returncode}; see mosquitto.log")
                if time.monotonic() > deadline:
                    raise TimeoutError("mosquitto did not start listening within 10 s")
                time.sleep(0.02)
            self._observer = self._connect_observer()
            self._ready.set()
        except BaseException:
            self._starting = False
            self.stop_broker()
            raise
        self._starting = False

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _connect_observer(self) -> mqtt.Client:
        subscribed = threading.Event()
        client = mqtt.Client(client_id=f"fakehub-{uuid.uuid4().hex[:8]}", clean_session=True)
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: subscribed.set()
        lost = self._observer_lost = threading.Event()
        client.on_disconnect = lambda *_: lost.set()
        client.connect("127.0.0.1", self.plain_port, keepalive=30)
        client.loop_start()
        result, _ = client.subscribe([("devices/#", 0), ("$iothub/#", 0)])  # QoS 0: see stop_broker
        if result != mqtt.MQTT_ERR_SUCCESS or not subscribed.wait(10):
            client.loop_stop()
            raise RuntimeError(f"fake hub observer could not subscribe (rc={result})")
        return client

    # ------------------------------------------------------------------------------------ SDK plumbing

    def patch_connect(self, monkeypatch: Any) -> None:
        """Send the SDK's connections to port 8883 to the TLS test port (pytest's monkeypatch)."""
        hub = self

        def rewrite(port: int) -> int:
            if port != SDK_PORT:
                return port
            if hub._starting:  # the broker is coming up: wait for the observer
                hub._ready.wait(10)
            return hub.tls_port

        original_connect = mqtt.Client.connect
        original_connect_async = mqtt.Client.connect_async

        def connect(self: mqtt.Client, host: str, port: int = 1883, *args: Any, **kwargs: Any) -> int:
            return int(original_connect(self, host, rewrite(port), *args, **kwargs))

        def connect_async(self: mqtt.Client, host: str, port: int = 1883, *args: Any, **kwargs: Any) -> Any:
            return original_connect_async(self, host, rewrite(port), *args, **kwargs)

        monkeypatch.setattr(mqtt.Client, "connect", connect)
        monkeypatch.setattr(mqtt.Client, "connect_async", connect_async)

    def edge_env(self) -> dict[str, str]:
        """The variables the IoT Edge dev tools set (the SDK's fallback without IOTEDGE_*)."""
        return {
            "EdgeHubConnectionString": self.connection_string,
            "EdgeModuleCACertificateFile": str(self.ca_file),
        }

    # ------------------------------------------------------------------------------------------- twin

    @property
    def desired(self) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._desired)

    @property
    def reported(self) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._reported)

    def patch_desired(self, patch: dict[str, Any]) -> None:
        """Merge `patch` into desired (bumping "$version") and send it to the module."""
        patch = {k: v for k, v in patch.items() if k != "$version"}
        with self._cond:
            merge_patch(self._desired, patch)
            version = int(self._desired["$version"]) + 1
            self._desired["$version"] = version
        body = json.dumps({**patch, "$version": version})
        self._publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", body)

    def wait_for_reported(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        """Block until predicate(reported) holds; returns that reported dict (a copy)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._reported), timeout):
                raise TimeoutError(f"reported properties never matched within {timeout} s: {self._reported}")
            return copy.deepcopy(self._reported)

    # ---------------------------------------------------------------------------------------- methods

    def call_method(self, name: str, payload: Any, timeout: float = 10) -> tuple[int, Any]:
        """Invoke a direct method; returns (status, JSON-decoded response payload, or raw text)."""
        rid = uuid.uuid4().hex
        self._publish(f"$iothub/methods/POST/{name}/?$rid={rid}", json.dumps(payload))
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self._method_responses, timeout):
                raise TimeoutError(f"no answer to method {name!r} within {timeout} s")
            status, raw = self._method_responses.pop(rid)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    # --------------------------------------------------------------------------------------- messages

    def messages(self, output: str | None = None) -> list[HubMessage]:
        """Every message received so far (in arrival order), optionally only one output's."""
        with self._cond:
            return [m for m in self._messages if output is None or m.output == output]

    def wait_for_messages(
        self, count: int, output: str | None = None, timeout: float = 10
    ) -> list[HubMessage]:
        """Block until at least `count` messages (of `output`, if given) arrived; returns all of them."""

        def matching() -> list[HubMessage]:
            return [m for m in self._messages if output is None or m.output == output]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"{len(matching())} of {count} message(s) arrived within {timeout} s")
            return matching()

    # -------------------------------------------------------------------------------------- internals

    def _publish(self, topic: str, payload: str | bytes) -> None:
        observer = self._observer
        if observer is None:
            raise RuntimeError("the fake hub's broker is down")
        info = observer.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            raise RuntimeError(f"fake hub could not publish to {topic}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        try:
            if topic.startswith(self._events_prefix + "/") or topic == self._events_prefix:
                self._record(topic, msg.payload)
            elif topic.startswith("$iothub/twin/GET/"):
                rid = _query_params(topic).get("$rid", "")
                with self._cond:
                    twin = json.dumps({"desired": self._desired, "reported": self._reported})
                client.publish(f"$iothub/twin/res/200/?$rid={rid}", twin, qos=1)
            elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
                rid = _query_params(topic).get("$rid", "")
                patch = json.loads(msg.payload)
                with self._cond:
                    merge_patch(self._reported, {k: v for k, v in patch.items() if k != "$version"})
                    version = int(self._reported["$version"]) + 1
                    self._reported["$version"] = version
                    self._cond.notify_all()
                client.publish(f"$iothub/twin/res/204/?$rid={rid}&$version={version}", b"", qos=1)
            elif topic.startswith("$iothub/methods/res/"):
                status = int(topic.split("/")[3])
                rid = _query_params(topic).get("$rid", "")
                with self._cond:
                    self._method_responses[rid] = (status, bytes(msg.payload))
                    self._cond.notify_all()
            # Anything else is the hub's own traffic echoed back ($iothub/twin/res, methods/POST, ...).
        except Exception as exc:  # a bad message must not kill the observer thread; make it visible
            print(f"fakehub: cannot handle {topic}: {exc!r}")

    def _record(self, topic: str, payload: bytes) -> None:
        rest = topic[len(self._events_prefix) :].lstrip("/")
        pairs = urllib.parse.parse_qsl(rest, keep_blank_values=True)
        system = {k: v for k, v in pairs if k.startswith("$.")}
        custom = {k: v for k, v in pairs if not k.startswith("$.")}
        message = HubMessage(
            output=system.get("$.on"),
            message_id=system.get("$.mid"),
            content_type=system.get("$.ct"),
            content_encoding=system.get("$.ce"),
            properties=custom,
            body=bytes(payload),
        )
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
