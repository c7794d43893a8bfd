"""Delivery benchmark: the cost of durable store-and-forward to MQTT, against raw paho on the same broker.

    .venv/bin/python benchmarks/delivery_bench.py [--events N] [--dir DIR]

Starts its own mosquitto (`persistence false`, anonymous, loopback, a free port; killed at the end) and one
paho subscriber to `bench/#` (QoS 1) that stays connected through every phase, then measures in one run:

1. Raw limit: paho QoS 1 publish + PUBACK, one in flight (what the sink does), and 20 in flight (paho's
   default window: the broker's ceiling). Measured before and after the runtime phases; `drift` shows how
   much the two differ, the ratios use their mean.
2. Sink alone: `MqttSink.publish(record)` back to back (asyncio + paho thread handoff, no outbox).
3. Outbox alone: put + peek + ack cycles on an sqlite file (WAL, synchronous=FULL), the time of each step,
   and the disk's floor: a 4 KiB pwrite + fdatasync in the same directory.
4. End to end: `Dispatcher.publish(event)` -> Outbox -> delivery loop -> MqttSink -> broker -> subscriber.
   Paced (publish one, wait for its arrival) for the unloaded latency; then a burst of N back-to-back
   publishes for throughput and latency under load (publish() call to arrival at the subscriber).
5. Backlog drain: the broker is killed, N events are stored while it is down, the broker is started again;
   time to reconnect, to the first and the last arrival, and the drain rate.

Every number is measured in this run; the ratios are what to compare between machines. All traffic is on
loopback; the outbox files live in a temporary directory (under --dir when given) and are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_runtime.domain import BoundingBox, Event, EventKind  # noqa: E402
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits  # noqa: E402
from edge_runtime.events.ids import new_event_id  # noqa: E402
from edge_runtime.events.outbox import SCHEMA, Outbox, OutboxRecord  # noqa: E402
from edge_runtime.settings import MqttSettings  # noqa: E402
from edge_runtime.sinks.mqtt import MqttSink  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PREFIX = "bench"
SINK = "mqtt"
RAW_WINDOW = 20  # paho 1.6's default max_inflight_messages
PACED_EVENTS = 200
WARMUP_EVENTS = 50
FSYNC_SAMPLES = 500


# ---------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(values: Sequence[float]) -> str:
    return f"p50 {pct(values, 0.5) * 1000:6.3f} ms  p95 {pct(values, 0.95) * 1000:6.3f} ms"


def make_event(index: int) -> Event:
    event_id = new_event_id()
    return Event(
        id=event_id,
        kind=EventKind.STARTED if index % 2 == 0 else EventKind.ENDED,
        camera="cam-1",
        roi="full",
        tag="stain",
        probability=0.87654321,
        boxes=(BoundingBox(0.1, 0.2, 0.3, 0.25),),
        captured_at=time.time(),
        model_id="model-under-test",
        model_sha1="0123456789abcdef0123456789abcdef01234567",
        snapshot=f"/snapshots/{event_id}.jpg",
    )


def machine(directory: Path) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc={os.cpu_count()}, CPU {cpu}, Python {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, "
        f"paho-mqtt {importlib.metadata.version('paho-mqtt')}, {mosquitto_version()}, "
        f"outbox dir {directory} on {fs_of(directory)}"
    )


def mosquitto_version() -> str:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "mosquitto ?"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "mosquitto ?"


def fs_of(directory: Path) -> str:
    """The device and filesystem type of the mount holding `directory` (from /proc/mounts)."""
    best = ("?", "?", "")
    try:
        target = str(directory.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[2]):
                best = (device, fstype, mount)
    except OSError:
        pass
    device, fstype, _ = best
    rotational = ""
    name = Path(device).name
    try:
        flag = Path(f"/sys/class/block/{name}/queue/rotational").read_text().strip()
        rotational = f", queue/rotational={flag}"
    except OSError:
        pass
    return f"{device} ({fstype}{rotational})"


def fsync_floor(directory: Path, samples: int) -> list[float]:
    """4 KiB pwrite + fdatasync, the least a durable sqlite commit pays."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    times = []
    try:
        block = os.urandom(4096)
        for i in range(samples):
            start = time.perf_counter()
            os.pwrite(fd, block, (i % 64) * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return times


def sqlite_commits(directory: Path, samples: int) -> dict[str, list[float]]:
    """One INSERT (autocommit) into the outbox schema on this thread, WAL, synchronous FULL and NORMAL
    (NORMAL does not sync the WAL on commit): the share of the disk in a commit, without thread handoffs."""
    body = json.dumps(make_event(0).to_dict(), separators=(",", ":"))
    out: dict[str, list[float]] = {}
    for mode in ("FULL", "NORMAL"):
        path = directory / f"direct-{mode}.sqlite3"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={mode}")
            db.executescript(SCHEMA)
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                db.execute(
                    "INSERT INTO outbox (sink, type, id, created, body) VALUES (?, ?, ?, ?, ?)",
                    (SINK, "event", new_event_id(), time.time(), body),
                )
                times.append(time.perf_counter() - start)
            out[mode] = times
        finally:
            db.close()
    return out


async def thread_handoff(samples: int) -> list[float]:
    """A no-op on a one-thread executor and back: what every Outbox call pays besides sqlite."""
    loop = asyncio.get_running_loop()
    times = []
    with ThreadPoolExecutor(1) as pool:
        for _ in range(samples):
            start = time.perf_counter()
            await loop.run_in_executor(pool, int)
            times.append(time.perf_counter() - start)
    return times


class CpuMeter:
    """Cores used between start() and stop() (from /proc): this process, the subscriber's network thread
    (part of this process, not of the runtime), the broker."""

    def __init__(self, broker_pid: int, subscriber: Subscriber) -> None:
        self.broker_pid = broker_pid
        self.subscriber = subscriber
        self._t = self._own = self._sub = self._broker = 0.0

    def _sub_cpu(self) -> float:
        tid = self.subscriber.thread_id
        return float("nan") if tid is None else proc_cpu(f"{os.getpid()}/task/{tid}")

    def start(self) -> None:
        self._t, self._own = time.perf_counter(), time.process_time()
        self._sub, self._broker = self._sub_cpu(), proc_cpu(str(self.broker_pid))

    def stop(self) -> tuple[float, float, float]:
        wall = time.perf_counter() - self._t
        return (
            (time.process_time() - self._own) / wall,
            (self._sub_cpu() - self._sub) / wall,
            (proc_cpu(str(self.broker_pid)) - self._broker) / wall,
        )


def fmt_cores(cores: tuple[float, float, float]) -> str:
    own, sub, broker = cores
    return (
        f"this process {own:.2f} (of which the subscriber {sub:.2f}), "
        f"broker {broker:.2f} (of {os.cpu_count()})"
    )


def proc_cpu(pid: str) -> float:
    """utime + stime of /proc/<pid>/stat (or <pid>/task/<tid>) in seconds; NaN where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------- broker, client


class Broker:
    """mosquitto on a loopback port; output to a log file, never a pipe; SIGKILL to stop."""

    def __init__(self, directory: Path, port: int) -> None:
        self.port = port
        self.log_path = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        directory.mkdir(parents=True, exist_ok=True)
        lines = ["user root", f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto not listening on {self.port} within {timeout} s") from None
                time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A paho subscriber to bench/# (QoS 1) on its own thread; keeps (arrival perf_counter, payload)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: list[tuple[float, str, bytes]] = []
        self.events = 0  # messages on <prefix>/<camera>/events, guarded by _cond
        self._cond = threading.Condition()
        self._subscribed = False
        self._waiters: list[tuple[Callable[[], bool], asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.client: mqtt.Client | None = None
        self.thread_id: int | None = None  # native id of paho's network thread, for its CPU time

    def start(self) -> None:
        """Connect and subscribe, blocking until the SUBACK."""
        client = mqtt.Client(client_id=f"bench-sub-{os.urandom(3).hex()}", clean_session=True)
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._subscribed = False
        self.thread_id = None
        client.connect("127.0.0.1", self.port, keepalive=60)
        client.subscribe(f"{PREFIX}/#", qos=1)
        client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, 10):
                raise RuntimeError("subscriber: no SUBACK within 10 s")
        self.client = client

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, granted: object) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        at = time.perf_counter()
        if self.thread_id is None:
            self.thread_id = threading.get_native_id()
        with self._cond:
            self.arrivals.append((at, msg.topic, bytes(msg.payload)))
            if msg.topic.endswith("/events"):
                self.events += 1
            self._cond.notify_all()
            for waiter in list(self._waiters):
                condition, loop, future = waiter
                if condition():
                    self._waiters.remove(waiter)
                    loop.call_soon_threadsafe(_resolve, future)

    def clear(self) -> None:
        with self._cond:
            self.arrivals.clear()
            self.events = 0

    def wait_sync(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(condition, timeout):
                raise RuntimeError(f"subscriber: no {what} within {timeout} s")

    async def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait on the event loop; `condition` runs under the subscriber's lock."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if condition():
                return
            self._waiters.append((condition, loop, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise RuntimeError(f"subscriber: no {what} within {timeout} s") from None

    def event_arrivals(self) -> dict[str, float]:
        """Event id -> first arrival time, for the messages on <prefix>/<camera>/events."""
        with self._cond:
            arrivals = list(self.arrivals)
        out: dict[str, float] = {}
        for at, topic, payload in arrivals:
            if topic.endswith("/events"):
                out.setdefault(json.loads(payload)["id"], at)
        return out


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# ------------------------------------------------------------------------------------------- raw paho


@dataclass
class Raw:
    sequential_per_s: float
    rtt: list[float]
    window_per_s: float


def _contains(acked: set[int], mid: int) -> Callable[[], bool]:
    return lambda: mid in acked


def raw_paho(port: int, count: int, payload: bytes) -> Raw:
    """QoS 1 publish + PUBACK with paho alone: one in flight (timed each), then RAW_WINDOW in flight."""
    acked: set[int] = set()
    cond = threading.Condition()

    def on_publish(client: mqtt.Client, userdata: object, mid: int) -> None:
        with cond:
            acked.add(mid)
            cond.notify_all()

    client = mqtt.Client(client_id=f"bench-raw-{os.urandom(3).hex()}", clean_session=True)
    client.on_publish = on_publish
    client.max_inflight_messages_set(RAW_WINDOW)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    try:
        topic = f"{PREFIX}/raw/events-raw"
        for _ in range(min(200, count)):  # warm-up
            mid = client.publish(topic, payload, qos=1).mid
            with cond:
                cond.wait_for(_contains(acked, mid), 10)
        rtt = []
        t0 = time.perf_counter()
        for _ in range(count):
            start = time.perf_counter()
            mid = client.publish(topic, payload, qos=1).mid
            with cond:
                if not cond.wait_for(_contains(acked, mid), 10):
                    raise RuntimeError("raw paho: no PUBACK within 10 s")
            rtt.append(time.perf_counter() - start)
        sequential = count / (time.perf_counter() - t0)

        window_count = count * 3
        with cond:
            acked.clear()
        t0 = time.perf_counter()
        mids = [client.publish(topic, payload, qos=1).mid for _ in range(window_count)]
        wanted = set(mids)
        with cond:
            if not cond.wait_for(lambda: wanted <= acked, 60):
                raise RuntimeError("raw paho: PUBACKs missing after 60 s")
        window = window_count / (time.perf_counter() - t0)
    finally:
        client.disconnect()
        client.loop_stop()
    return Raw(sequential, rtt, window)


# ------------------------------------------------------------------------------------- the runtime


def mqtt_settings(port: int) -> MqttSettings:
    return MqttSettings(
        host="127.0.0.1",
        port=port,
        client_id=f"bench-sink-{os.urandom(3).hex()}",
        topic_prefix=PREFIX,
        reconnect_min_s=1,
        reconnect_max_s=1,
        publish_timeout_s=10,
    )


class Runtime:
    """What events_ctx builds: an outbox file, one MQTT sink, the dispatcher between them."""

    def __init__(self, outbox_path: Path, port: int) -> None:
        self.outbox = Outbox(outbox_path)
        self.sink = MqttSink(mqtt_settings(port))
        self.dispatcher = Dispatcher(self.outbox, [self.sink], OutboxLimits(max_events=1_000_000))

    async def start(self) -> Runtime:
        await self.outbox.open()
        await self.dispatcher.start()
        return self

    async def connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.sink.status()["connected"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink not connected within {timeout} s: {self.sink.status()}")
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        await self.dispatcher.close(drain_timeout=5.0)
        await self.outbox.close()


@dataclass
class SinkAlone:
    per_s: float
    rtt: list[float]


async def sink_alone(port: int, count: int) -> SinkAlone:
    sink = MqttSink(mqtt_settings(port))
    await sink.start()
    try:
        deadline = time.monotonic() + 10
        while not sink.status()["connected"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink not connected: {sink.status()}")
            await asyncio.sleep(0.002)
        records = []
        for i in range(count + WARMUP_EVENTS):
            event = make_event(i)
            records.append(OutboxRecord(i, SINK, "event", event.id, time.time(), 0, event.to_dict()))
        for record in records[:WARMUP_EVENTS]:
            await sink.publish(record)
        rtt = []
        t0 = time.perf_counter()
        for record in records[WARMUP_EVENTS:]:
            start = time.perf_counter()
            await sink.publish(record)
            rtt.append(time.perf_counter() - start)
        return SinkAlone(count / (time.perf_counter() - t0), rtt)
    finally:
        await sink.close()


@dataclass
class OutboxAlone:
    cycles_per_s: float
    put: list[float]
    peek: list[float]
    ack: list[float]


async def outbox_alone(path: Path, count: int) -> OutboxAlone:
    outbox = Outbox(path)
    await outbox.open()
    try:
        bodies = [make_event(i).to_dict() for i in range(count + WARMUP_EVENTS)]
        puts: list[float] = []
        peeks: list[float] = []
        acks: list[float] = []
        t0 = 0.0
        for i, body in enumerate(bodies):
            if i == WARMUP_EVENTS:
                puts, peeks, acks = [], [], []
                t0 = time.perf_counter()
            a = time.perf_counter()
            await outbox.put([SINK], "event", str(body["id"]), body, 1_000_000)
            b = time.perf_counter()
            (record,) = await outbox.peek(SINK, 1)
            c = time.perf_counter()
            await outbox.ack(record.seq)
            d = time.perf_counter()
            puts.append(b - a)
            peeks.append(c - b)
            acks.append(d - c)
        return OutboxAlone(count / (time.perf_counter() - t0), puts, peeks, acks)
    finally:
        await outbox.close()


@dataclass
class EndToEnd:
    paced_latency: list[float]
    paced_publish: list[float]
    burst_per_s: float
    burst_publish_per_s: float  # how fast the producer could store (publish() back to back)
    burst_latency: list[float]
    burst_publish: list[float]
    lost: int
    cores: tuple[float, float, float]  # see CpuMeter; during the burst


async def end_to_end(path: Path, broker: Broker, subscriber: Subscriber, count: int) -> EndToEnd:
    assert broker.proc is not None
    meter = CpuMeter(broker.proc.pid, subscriber)
    runtime = await Runtime(path, broker.port).start()
    try:
        await runtime.connected(10)
        subscriber.clear()
        events = [make_event(i) for i in range(WARMUP_EVENTS + PACED_EVENTS + count)]
        warmup = events[:WARMUP_EVENTS]
        paced = events[WARMUP_EVENTS : WARMUP_EVENTS + PACED_EVENTS]
        burst = events[WARMUP_EVENTS + PACED_EVENTS :]
        for event in warmup:
            await runtime.dispatcher.publish(event)
        await subscriber.wait(lambda: _events(subscriber) >= len(warmup), 30, "warm-up events")

        starts: dict[str, float] = {}
        paced_publish = []
        for n, event in enumerate(paced, start=len(warmup) + 1):
            starts[event.id] = time.perf_counter()
            await runtime.dispatcher.publish(event)
            paced_publish.append(time.perf_counter() - starts[event.id])
            await subscriber.wait(_at_least(subscriber, n), 10, "paced event")

        burst_publish = []
        meter.start()
        t0 = time.perf_counter()
        for event in burst:
            start = starts[event.id] = time.perf_counter()
            await runtime.dispatcher.publish(event)
            burst_publish.append(time.perf_counter() - start)
        stored = time.perf_counter()
        total = len(events)
        await subscriber.wait(lambda: _events(subscriber) >= total, 30 + count / 20, "burst events")
        cores = meter.stop()
        arrivals = subscriber.event_arrivals()
        last = max(arrivals[e.id] for e in burst)
        return EndToEnd(
            [arrivals[e.id] - starts[e.id] for e in paced],
            paced_publish,
            len(burst) / (last - t0),
            len(burst) / (stored - t0),
            [arrivals[e.id] - starts[e.id] for e in burst],
            burst_publish,
            sum(1 for e in events if e.id not in arrivals),
            cores,
        )
    finally:
        await runtime.close()


def _at_least(subscriber: Subscriber, n: int) -> Callable[[], bool]:
    return lambda: _events(subscriber) >= n


def _events(subscriber: Subscriber) -> int:
    return subscriber.events  # read under the subscriber's lock (Subscriber.wait)


@dataclass
class Drain:
    store_s: float
    reconnect_s: float  # broker listening -> sink connected
    first_s: float  # broker listening -> first event at the subscriber
    last_s: float  # broker listening -> last event at the subscriber
    per_s: float  # events / (last - first)
    empty_s: float  # broker listening -> the outbox is empty (every PUBACK acked on disk)
    cores: tuple[float, float, float]  # see CpuMeter; from the first arrival to the last


async def backlog_drain(path: Path, broker: Broker, subscriber: Subscriber, count: int) -> Drain:
    subscriber.stop()
    broker.stop()
    runtime = await Runtime(path, broker.port).start()
    try:
        events = [make_event(i) for i in range(count)]
        t0 = time.perf_counter()
        for event in events:
            await runtime.dispatcher.publish(event)
        store_s = time.perf_counter() - t0
        assert (await runtime.dispatcher.backlog())[SINK] == count
        # Blocking on purpose: the event loop (and so the delivery loop) cannot send anything before the
        # subscriber has its SUBACK, whenever paho's thread reconnects.
        subscriber.clear()
        broker.start()
        up = time.perf_counter()
        subscriber.start()
        meter = CpuMeter(broker.proc.pid if broker.proc else 0, subscriber)
        await runtime.connected(30)
        reconnect_s = time.perf_counter() - up
        await subscriber.wait(lambda: _events(subscriber) >= 1, 60, "the first drained event")
        meter.start()
        await subscriber.wait(lambda: _events(subscriber) >= count, 60 + count / 20, "drained events")
        cores = meter.stop()
        deadline = time.monotonic() + 30
        while (await runtime.dispatcher.backlog())[SINK]:
            if time.monotonic() > deadline:
                raise RuntimeError("outbox not empty 30 s after every event arrived")
            await asyncio.sleep(0.005)
        empty_s = time.perf_counter() - up
        arrivals = subscriber.event_arrivals()
        times = [arrivals[e.id] for e in events]
        first, last = min(times), max(times)
        return Drain(store_s, reconnect_s, first - up, last - up, count / (last - first), empty_s, cores)
    finally:
        await runtime.close()


# ------------------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000, help="events per burst / backlog (default 2000)")
    parser.add_argument(
        "--raw", type=int, default=0, help="raw paho messages one in flight (default --events)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the outbox files go (default: $TMPDIR)")
    return parser.parse_args()


async def bench(args: argparse.Namespace, work: Path) -> None:
    count = args.events
    raw_count = args.raw or count
    payload = json.dumps(make_event(0).to_dict(), separators=(",", ":")).encode()
    print(f"event payload: {len(payload)} bytes of JSON; QoS 1; the subscriber takes {PREFIX}/# at QoS 1")

    floor = await asyncio.to_thread(fsync_floor, work, FSYNC_SAMPLES)
    direct = await asyncio.to_thread(sqlite_commits, work, FSYNC_SAMPLES)
    handoff = await thread_handoff(FSYNC_SAMPLES)
    broker = Broker(work / "broker", free_port())
    subscriber = Subscriber(broker.port)
    broker.start()
    try:
        subscriber.start()
        raw_before = await asyncio.to_thread(raw_paho, broker.port, raw_count, payload)
        print(f"raw paho (before)  {fmt_raw(raw_before)}", flush=True)
        alone = await sink_alone(broker.port, raw_count)
        print(f"MqttSink alone     {alone.per_s:6.0f} msg/s, 1 in flight ({ms(alone.rtt)})", flush=True)
        box = await outbox_alone(work / "alone.sqlite3", count)
        print(f"outbox alone       {box.cycles_per_s:6.0f} put+peek+ack/s (put {ms(box.put)})", flush=True)
        e2e = await end_to_end(work / "e2e.sqlite3", broker, subscriber, count)
        print(f"end to end, burst  {e2e.burst_per_s:6.0f} events/s, lost {e2e.lost}", flush=True)
        raw_after = await asyncio.to_thread(raw_paho, broker.port, raw_count, payload)
        print(f"raw paho (after)   {fmt_raw(raw_after)}", flush=True)
        drain = await backlog_drain(work / "drain.sqlite3", broker, subscriber, count)
        print(f"backlog drain      {drain.per_s:6.0f} events/s", flush=True)
    finally:
        subscriber.stop()
        broker.stop()

    raw_seq = (raw_before.sequential_per_s + raw_after.sequential_per_s) / 2
    raw_win = (raw_before.window_per_s + raw_after.window_per_s) / 2
    raw_rtt = pct(raw_before.rtt + raw_after.rtt, 0.5)
    drift = abs(raw_before.sequential_per_s - raw_after.sequential_per_s) / raw_seq
    paced_p50 = pct(e2e.paced_latency, 0.5)

    print()
    print(
        f"1. raw limit: paho QoS 1 publish + PUBACK, {raw_count} msgs "
        f"(mean of before/after, drift {drift:.0%})"
    )
    print(f"   1 in flight        {raw_seq:6.0f} msg/s   publish -> PUBACK p50 {raw_rtt * 1000:.3f} ms")
    print(f"   {RAW_WINDOW} in flight       {raw_win:6.0f} msg/s")
    print(
        f"   MqttSink.publish   {alone.per_s:6.0f} msg/s   {ms(alone.rtt)}   "
        f"= {alone.per_s / raw_seq:.2f} x raw"
    )
    print("2. end to end: Dispatcher.publish -> outbox -> MqttSink -> broker -> subscriber")
    print(
        f"   burst of {count}: {e2e.burst_per_s:6.0f} events/s = {e2e.burst_per_s / raw_seq:.2f} x raw "
        f"1 in flight, {e2e.burst_per_s / raw_win:.2f} x raw {RAW_WINDOW} in flight, "
        f"{e2e.burst_per_s / alone.per_s:.2f} x sink alone"
    )
    print(f"     latency (publish() call -> arrival)  {ms(e2e.burst_latency)}")
    print(
        f"     publish()                            {ms(e2e.burst_publish)}   "
        f"(the producer stored {e2e.burst_publish_per_s:.0f}/s)"
    )
    print(f"     cores: {fmt_cores(e2e.cores)}")
    print(f"   paced, one event at a time ({PACED_EVENTS}):")
    print(
        f"     latency (publish() call -> arrival)  {ms(e2e.paced_latency)}   "
        f"p50 = {paced_p50 / raw_rtt:.1f} x raw publish -> PUBACK"
    )
    print(f"     publish()                            {ms(e2e.paced_publish)}")
    print(f"   lost: {e2e.lost}")
    print("3. outbox alone (sqlite WAL, synchronous=FULL, one private thread)")
    print(
        f"   {box.cycles_per_s:6.0f} put+peek+ack cycles/s "
        f"= {box.cycles_per_s / e2e.burst_per_s:.2f} x end to end"
    )
    print(f"   put   {ms(box.put)}")
    print(f"   peek  {ms(box.peek)}")
    print(f"   ack   {ms(box.ack)}")
    print(f"   floors: 4 KiB pwrite + fdatasync      {ms(floor)}")
    print(f"           INSERT commit, FULL, direct   {ms(direct['FULL'])}")
    print(f"           INSERT commit, NORMAL, direct {ms(direct['NORMAL'])}")
    print(f"           thread handoff (no-op)        {ms(handoff)}")
    print(
        f"   publish() paced p50 = {pct(e2e.paced_publish, 0.5) / pct(floor, 0.5):.1f} x fdatasync p50, "
        f"{pct(e2e.paced_publish, 0.5) / pct(direct['FULL'], 0.5):.1f} x a direct FULL commit"
    )
    print(
        f"4. backlog drain: {count} events stored with the broker down ({drain.store_s:.2f} s), then started"
    )
    print(
        f"   from broker start: sink connected {drain.reconnect_s:.2f} s, first event {drain.first_s:.2f} s, "
        f"last {drain.last_s:.2f} s, outbox empty {drain.empty_s:.2f} s"
    )
    print(
        f"   drain {drain.per_s:6.0f} events/s (first -> last arrival) = {drain.per_s / raw_seq:.2f} x raw "
        f"1 in flight, {drain.per_s / e2e.burst_per_s:.2f} x end-to-end burst"
    )
    print(f"   cores: {fmt_cores(drain.cores)}")
    print(
        f"   waiting before the first event: {drain.first_s / drain.last_s:.0%} of the time to drain "
        f"(paho reconnect_min_s=1, dispatcher retry back-off up to {Dispatcher.RETRY_MAX_S:g} s)"
    )


def fmt_raw(raw: Raw) -> str:
    return (
        f"{raw.sequential_per_s:6.0f} msg/s, 1 in flight ({ms(raw.rtt)}); "
        f"{raw.window_per_s:6.0f} msg/s, {RAW_WINDOW} in flight"
    )


def main() -> int:
    args = parse_args()
    # The drain phase makes the sink log `cannot connect` and `will retry` warnings on purpose.
    logging.getLogger("edge_runtime").setLevel(logging.ERROR)
    if args.events < 100:
        raise SystemExit("--events: at least 100")
    if not (Path(MOSQUITTO).is_file() and os.access(MOSQUITTO, os.X_OK)):
        raise SystemExit(f"mosquitto not found ({MOSQUITTO})")
    base = args.dir.resolve() if args.dir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    print(f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    with tempfile.TemporaryDirectory(prefix="delivery-bench-", dir=base) as tmp:
        work = Path(tmp)
        print(f"machine: {machine(work)}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        start = time.perf_counter()
        asyncio.run(bench(args, work))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
