"""Part triggers over MQTT: `<topic_prefix>/stations/<station>/trigger`, QoS 1, on sinks.mqtt's broker.

    payload: {"partId": "4711", "plcTime": ..., "metadata": {...}}  (or the bare part id as text)
    answer:  the verdict, through the durable delivery: <topic_prefix>/stations/<station>/verdicts

A client of its own (client id `<sink client id>-triggers`) with a persistent session
(clean_session false, subscription at QoS 1): triggers sent while the runtime is down or reconnecting
are kept by the broker and arrive when it is back. A trigger that cannot be taken (unknown station,
no part id, the runtime stopping) is logged and counted (edge_runtime_station_triggers_total
{outcome="rejected"}), and answered on `<prefix>/stations/<station>/rejected` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime import metrics
from edge_runtime.settings import MqttSettings
from edge_runtime.sinks.mqtt import connect_as_configured
from edge_runtime.stations.triggers import BadTrigger, NotAccepting, UnknownStation, parse_trigger
from edge_runtime.stations.verdict import Trigger, Verdict

log = logging.getLogger(__name__)
MAX_PAYLOAD = 16 * 1024

Submit = Callable[[Trigger], "asyncio.Future[Verdict]"]


class MqttTriggers:
    def __init__(self, settings: MqttSettings, submit: Submit) -> None:
        self._settings = settings
        self._submit = submit
        self._prefix = settings.topic_prefix.rstrip("/")
        base = settings.client_id or f"edge-runtime-{socket.gethostname()}"
        self.client_id = f"{base}-triggers"
        self.topic = f"{self._prefix}/stations/+/trigger"
        self._client = mqtt.Client(client_id=self.client_id, clean_session=False)
        connect_as_configured(self._client, settings)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self.subscribed = asyncio.Event()

    async def __aenter__(self) -> MqttTriggers:
        self._loop = asyncio.get_running_loop()
        s = self._settings
        self._client.connect_async(s.host, s.effective_port, keepalive=s.keepalive_s)
        self._client.loop_start()
        log.info("part triggers: subscribing to %s on %s:%d", self.topic, s.host, s.effective_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # ---- paho's thread --------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: int) -> None:
        if rc == 0:
            client.subscribe(self.topic, qos=1)
            self._call(self.subscribed.set)
        else:
            log.warning("part triggers: broker refused the connection (%s)", mqtt.connack_string(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._call(self._take, message.topic, bytes(message.payload), time.time())

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: we are stopping
                self._loop.call_soon_threadsafe(fn, *args)

    # ---- the loop -----------------------------------------------------------------------------------------
    def _take(self, topic: str, payload: bytes, received_at: float) -> None:
        station = topic.split("/")[-2]
        try:
            if len(payload) > MAX_PAYLOAD:
                raise BadTrigger(f"payload over {MAX_PAYLOAD} bytes")
            self._submit(parse_trigger(station, _decoded(payload), "mqtt", received_at))
        except (BadTrigger, UnknownStation, NotAccepting) as exc:
            label = "unknown" if isinstance(exc, UnknownStation) else station  # bounded label values
            metrics.STATION_TRIGGERS.labels(label, "mqtt", "rejected").inc()
            log.warning("part trigger on %s refused: %s", topic[:200], exc)
            body = json.dumps({"error": str(exc), "topic": topic}).encode()
            self._client.publish(f"{self._prefix}/stations/{station}/rejected", body, qos=1)


def _decoded(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTrigger("payload is not UTF-8") from None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except ValueError as exc:
            raise BadTrigger(f"payload is not JSON: {exc}") from None
    return stripped  # a bare part id
