"""Support for the MQTT sink tests (tests/integration/test_mqtt_*.py): brokers, observers, the
in-process runtime (Outbox + Dispatcher + MqttSink, wired as Delivery does), the `serve` process with
MQTT configured by environment, and the event and settings factories they assert on.

Fixtures are taken by name in each test file (`brokers = mqtt_runtime.brokers`)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import factories
import pytest
from mosquitto import Broker, Observer, Received, free_port
from PIL import Image

from edge_runtime.domain import BoundingBox, Event, EventKind
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits
from edge_runtime.events.outbox import Outbox
from edge_runtime.settings import MqttSettings
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.status import CameraState, CameraStatus, StatusBoard

REPO = Path(__file__).resolve().parents[1]
PREFIX = "it"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """brokers(**Broker kwargs) -> a started broker; all are killed at teardown."""
    started: list[Broker] = []

    def start(**kwargs: Any) -> Broker:
        broker = Broker(tmp_path / f"broker{len(started)}", **kwargs)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def observers() -> Iterator[Callable[..., Observer]]:
    """observers(broker, topics, **Observer kwargs) -> a connected, subscribed observer."""
    made: list[Observer] = []

    def start(broker: Broker, topics: list[str], **kwargs: Any) -> Observer:
        observer = Observer(broker, topics, **kwargs)
        made.append(observer)
        return observer.start()

    yield start
    for observer in made:
        observer.close()


def camera_status(camera: str, state: CameraState, error: str | None = None) -> CameraStatus:
    return CameraStatus(camera, "synthetic://belt", state, 0, 0, 0, 0, None, error)


class Runtime:
    """What events_ctx builds: an outbox file, one MQTT sink, the dispatcher between them."""

    def __init__(
        self,
        outbox_path: Path,
        settings: MqttSettings,
        board: StatusBoard | None = None,
        read_snapshot: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.outbox = Outbox(outbox_path)
        self.sink = MqttSink(settings, board, read_snapshot)
        self.dispatcher = Dispatcher(self.outbox, [self.sink], OutboxLimits(10_000, 3600.0))
        self.closed = False

    async def start(self) -> Runtime:
        await self.outbox.open()
        await self.dispatcher.start()
        return self

    async def backlog(self) -> int:
        return (await self.dispatcher.backlog())["mqtt"]

    async def close(self, drain_timeout: float = 0.5) -> None:
        if not self.closed:
            self.closed = True
            await self.dispatcher.close(drain_timeout)
            await self.outbox.close()


@pytest.fixture
async def runtimes() -> AsyncIterator[Callable[..., Runtime]]:
    """runtimes(outbox_path, settings, ...) -> a Runtime (not started); all are closed at teardown."""
    made: list[Runtime] = []

    def make(*args: Any, **kwargs: Any) -> Runtime:
        runtime = Runtime(*args, **kwargs)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close(drain_timeout=0)


def mqtt_settings(port: int, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"edge-it-{os.urandom(3).hex()}",
        "topic_prefix": PREFIX,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        "publish_timeout_s": 2,
        **overrides,
    }
    return MqttSettings(**values)


def make_event(
    camera: str = "cam-1",
    kind: EventKind = EventKind.STARTED,
    boxes: tuple[BoundingBox, ...] = (),
    snapshot: bool = False,
    captured_at: float | None = None,
) -> Event:
    """factories.make_event with the values these tests assert on the wire, captured now by default."""
    event = factories.make_event(
        camera=camera,
        kind=kind,
        roi="full",
        tag="stain",
        probability=0.87654321,
        boxes=boxes,
        captured_at=time.time() if captured_at is None else captured_at,
        model_id="model-under-test",
        model_sha1="0123456789abcdef0123456789abcdef01234567",
    )
    return dataclasses.replace(event, snapshot=f"/snapshots/{event.id}.jpg" if snapshot else None)


def jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (40 + seed, 120, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def events_of(observer: Observer) -> list[Received]:
    return [m for m in observer.received() if m.topic.endswith("/events")]


def event_ids(observer: Observer) -> list[str]:
    return [json.loads(m.payload)["id"] for m in events_of(observer)]


# The whole runtime: `python -m edge_runtime serve` (built-in demo camera, MQTT configured by env)


class ServeProcess:
    def __init__(self, tmp_path: Path, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.jsonl = tmp_path / "events.jsonl"
        self.snapshot_dir = tmp_path / "snapshots"
        self.log_path = tmp_path / f"serve-{self.port}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
        child_env.update(
            {
                "TMPDIR": str(tmp_path),  # the built-in demo model is written under the temp dir
                "EDGE_RUNTIME_EVENTS__JSONL_PATH": str(self.jsonl),
                "EDGE_RUNTIME_EVENTS__SNAPSHOT_DIR": str(self.snapshot_dir),
                "EDGE_RUNTIME_EVENTS__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
                **env,
            }
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_runtime",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *args,
                ],
                cwd=REPO,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.log}"
                try:
                    async with session.get(self.base + "/health/ready") as response:
                        if response.status == 200:
                            body: dict[str, Any] = json.loads(await response.text())
                            return body
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready within {timeout} s:\n{self.log}")

    def events(self) -> list[dict[str, Any]]:
        """What the JSONL sink wrote: every event the runtime produced, whatever MQTT did."""
        try:
            lines = self.jsonl.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.endswith("}")]

    async def wait(self, timeout: float) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(env: Mapping[str, str], args: Sequence[str] = ()) -> ServeProcess:
        process = ServeProcess(tmp_path, env, args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def mqtt_env(port: int, client_id: str = "edge-it-serve", **extra: str) -> dict[str, str]:
    env = {
        "EDGE_RUNTIME_SINKS__MQTT__HOST": "127.0.0.1",
        "EDGE_RUNTIME_SINKS__MQTT__PORT": str(port),
        "EDGE_RUNTIME_SINKS__MQTT__CLIENT_ID": client_id,
        "EDGE_RUNTIME_SINKS__MQTT__TOPIC_PREFIX": PREFIX,
        "EDGE_RUNTIME_SINKS__MQTT__RECONNECT_MIN_S": "1",
        "EDGE_RUNTIME_SINKS__MQTT__RECONNECT_MAX_S": "1",
        "EDGE_RUNTIME_SINKS__MQTT__PUBLISH_TIMEOUT_S": "2",
    }
    env.update({f"EDGE_RUNTIME_SINKS__MQTT__{k.upper()}": v for k, v in extra.items()})
    return env
