"""Delivery benchmark: the cost of durable store-and-forward to MQTT, against raw paho on the same broker.

    .venv/bin/python -m benchmarks.delivery_bench [--events N] [--raw N] [--dir DIR] [--quick] [--json PATH]

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

Progress goes to standard error as each phase ends; the report goes to standard output at the end (and the
results, every sample included, as JSON to --json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from benchmarks.harness.cli import add_quick_and_json, bench_parser, report_and_save
from benchmarks.harness.machine import CpuMeter, CpuUse, Machine, cpu_seconds, filesystem_of, package_versions
from benchmarks.harness.processes import (
    MOSQUITTO,
    Broker,
    exit_on_signals,
    mosquitto_available,
    mosquitto_version,
)
from benchmarks.harness.stats import NAN, drift, mean2, nearest_rank, ratio
from benchmarks.harness.table import progress
from edge_runtime.domain import BoundingBox, Event, EventKind
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits, default_retry, event_headers
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.outbox import SCHEMA, MessageType, Outbox, OutboxRecord
from edge_runtime.settings import MqttSettings
from edge_runtime.sinks.mqtt import MqttSink

PREFIX = "bench"
SINK = "mqtt"
RAW_WINDOW = 20  # paho 1.6's default max_inflight_messages
PACED_EVENTS = 200
WARMUP_EVENTS = 50
FSYNC_SAMPLES = 500

Samples = tuple[float, ...]  # durations in seconds, in the order measured


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


# ---------------------------------------------------------------------------------------------- floors


@dataclass(frozen=True, slots=True)
class Floors:
    """What a durable commit cannot go below on this disk, and what every Outbox call pays besides sqlite."""

    fdatasync: Samples  # 4 KiB pwrite + fdatasync
    commit_full: Samples  # one INSERT commit on this thread, WAL, synchronous=FULL
    commit_normal: Samples  # the same, synchronous=NORMAL (the WAL is not synced on commit)
    handoff: Samples  # a no-op on a one-thread executor and back


def fsync_floor(directory: Path, samples: int) -> Samples:
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
    return tuple(times)


def sqlite_commits(directory: Path, samples: int) -> dict[str, Samples]:
    """One INSERT (autocommit) into the outbox schema on this thread, WAL, synchronous FULL and NORMAL
    (NORMAL does not sync the WAL on commit): the share of the disk in a commit, without thread handoffs."""
    body = json.dumps(make_event(0).to_dict(), separators=(",", ":"))
    out: dict[str, Samples] = {}
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
            out[mode] = tuple(times)
        finally:
            db.close()
    return out


async def thread_handoff(samples: int) -> Samples:
    """A no-op on a one-thread executor and back: what every Outbox call pays besides sqlite."""
    loop = asyncio.get_running_loop()
    times = []
    with ThreadPoolExecutor(1) as pool:
        for _ in range(samples):
            start = time.perf_counter()
            await loop.run_in_executor(pool, int)
            times.append(time.perf_counter() - start)
    return tuple(times)


async def floors(directory: Path) -> Floors:
    fdatasync = await asyncio.to_thread(fsync_floor, directory, FSYNC_SAMPLES)
    direct = await asyncio.to_thread(sqlite_commits, directory, FSYNC_SAMPLES)
    return Floors(fdatasync, direct["FULL"], direct["NORMAL"], await thread_handoff(FSYNC_SAMPLES))


# ------------------------------------------------------------------------------------------ subscriber


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

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, _granted: object) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
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


def cpu_meter(broker: Broker, subscriber: Subscriber) -> CpuMeter:
    """Cores used: this process (CpuUse.own), the subscriber's network thread (part of this process, not
    of the runtime), the broker."""
    pid, broker_pid = os.getpid(), broker.proc.pid if broker.proc else 0

    def subscriber_cpu() -> float:
        tid = subscriber.thread_id
        return NAN if tid is None else cpu_seconds(pid, tid)

    return CpuMeter(subscriber=subscriber_cpu, broker=lambda: cpu_seconds(broker_pid))


# ------------------------------------------------------------------------------------------- raw paho


@dataclass(frozen=True, slots=True)
class Raw:
    sequential_per_s: float
    rtt: Samples  # publish -> PUBACK, one in flight
    window_per_s: float


def _contains(acked: set[int], mid: int) -> Callable[[], bool]:
    return lambda: mid in acked


def raw_paho(port: int, count: int, payload: bytes) -> Raw:
    """QoS 1 publish + PUBACK with paho alone: one in flight (timed each), then RAW_WINDOW in flight."""
    acked: set[int] = set()
    cond = threading.Condition()

    def on_publish(_client: mqtt.Client, _userdata: object, mid: int) -> None:
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
        rtt: list[float] = []
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
    return Raw(sequential, tuple(rtt), window)


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


async def until_connected(sink: MqttSink, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not sink.status().connected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"sink not connected within {timeout} s: {sink.status()}")
        await asyncio.sleep(0.002)


class Runtime:
    """What the runtime builds for one MQTT sink: an outbox file, the sink, the dispatcher between them."""

    def __init__(self, outbox_path: Path, port: int) -> None:
        self.outbox = Outbox(outbox_path)
        self.sink = MqttSink(mqtt_settings(port))
        self.dispatcher = Dispatcher(self.outbox, [self.sink], OutboxLimits(max_events=1_000_000))

    async def start(self) -> Runtime:
        await self.outbox.open()
        await self.dispatcher.start()
        return self

    async def connected(self, timeout: float) -> None:
        await until_connected(self.sink, timeout)

    async def close(self) -> None:
        await self.dispatcher.close(drain_timeout=5.0)
        await self.outbox.close()


@dataclass(frozen=True, slots=True)
class SinkAlone:
    per_s: float
    rtt: Samples  # one MqttSink.publish(record) each


async def sink_alone(port: int, count: int) -> SinkAlone:
    sink = MqttSink(mqtt_settings(port))
    await sink.start()
    try:
        await until_connected(sink, 10)
        records = []
        for i in range(count + WARMUP_EVENTS):
            event = make_event(i)
            records.append(
                OutboxRecord(
                    seq=i,
                    sink=SINK,
                    type=MessageType.EVENT,
                    id=event.id,
                    created=time.time(),
                    attempts=0,
                    body=event.to_dict(),
                    headers=event_headers(event),  # as Dispatcher.publish stores them
                )
            )
        for record in records[:WARMUP_EVENTS]:
            await sink.publish(record)
        rtt = []
        t0 = time.perf_counter()
        for record in records[WARMUP_EVENTS:]:
            start = time.perf_counter()
            await sink.publish(record)
            rtt.append(time.perf_counter() - start)
        return SinkAlone(count / (time.perf_counter() - t0), tuple(rtt))
    finally:
        await sink.close()


@dataclass(frozen=True, slots=True)
class OutboxAlone:
    cycles_per_s: float
    put: Samples
    peek: Samples
    ack: Samples


async def outbox_alone(path: Path, count: int) -> OutboxAlone:
    outbox = Outbox(path)
    await outbox.open()
    try:
        events = [make_event(i) for i in range(count + WARMUP_EVENTS)]
        puts: list[float] = []
        peeks: list[float] = []
        acks: list[float] = []
        t0 = 0.0
        for i, event in enumerate(events):
            if i == WARMUP_EVENTS:
                puts, peeks, acks = [], [], []
                t0 = time.perf_counter()
            body, headers = event.to_dict(), event_headers(event)  # what Dispatcher.publish stores
            a = time.perf_counter()
            await outbox.put([SINK], MessageType.EVENT, event.id, body, 1_000_000, headers)
            b = time.perf_counter()
            (record,) = await outbox.peek(SINK, 1)
            c = time.perf_counter()
            await outbox.ack(record.seq)
            d = time.perf_counter()
            puts.append(b - a)
            peeks.append(c - b)
            acks.append(d - c)
        return OutboxAlone(count / (time.perf_counter() - t0), tuple(puts), tuple(peeks), tuple(acks))
    finally:
        await outbox.close()


@dataclass(frozen=True, slots=True)
class EndToEnd:
    paced_latency: Samples  # publish() call -> arrival at the subscriber, one event at a time
    paced_publish: Samples  # the publish() call
    burst_per_s: float
    burst_publish_per_s: float  # how fast the producer could store (publish() back to back)
    burst_latency: Samples
    burst_publish: Samples
    lost: int
    cores: CpuUse  # during the burst; see cpu_meter


async def end_to_end(path: Path, broker: Broker, subscriber: Subscriber, count: int) -> EndToEnd:
    meter = cpu_meter(broker, subscriber)
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
            tuple(arrivals[e.id] - starts[e.id] for e in paced),
            tuple(paced_publish),
            len(burst) / (last - t0),
            len(burst) / (stored - t0),
            tuple(arrivals[e.id] - starts[e.id] for e in burst),
            tuple(burst_publish),
            sum(1 for e in events if e.id not in arrivals),
            cores,
        )
    finally:
        await runtime.close()


def _at_least(subscriber: Subscriber, n: int) -> Callable[[], bool]:
    return lambda: _events(subscriber) >= n


def _events(subscriber: Subscriber) -> int:
    return subscriber.events  # read under the subscriber's lock (Subscriber.wait)


@dataclass(frozen=True, slots=True)
class Drain:
    store_s: float
    reconnect_s: float  # broker listening -> sink connected
    first_s: float  # broker listening -> first event at the subscriber
    last_s: float  # broker listening -> last event at the subscriber
    per_s: float  # events / (last - first)
    empty_s: float  # broker listening -> the outbox is empty (every PUBACK acked on disk)
    cores: CpuUse  # from the first arrival to the last; see cpu_meter


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
        meter = cpu_meter(broker, subscriber)
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


# ------------------------------------------------------------------------------------------------ run


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    date: datetime
    machine: Machine
    events: int  # per burst and backlog
    raw_messages: int  # raw paho messages one in flight (3x that with RAW_WINDOW in flight)
    payload_bytes: int  # one event's JSON
    retry_max_s: float  # the dispatcher's longest retry back-off (its default)
    floors: Floors
    raw_before: Raw
    sink: SinkAlone
    outbox: OutboxAlone
    end_to_end: EndToEnd
    raw_after: Raw
    drain: Drain
    total_s: float

    @property
    def raw_sequential_per_s(self) -> float:
        return mean2(self.raw_before.sequential_per_s, self.raw_after.sequential_per_s)

    @property
    def raw_window_per_s(self) -> float:
        return mean2(self.raw_before.window_per_s, self.raw_after.window_per_s)

    @property
    def raw_rtt_p50(self) -> float:
        return nearest_rank(self.raw_before.rtt + self.raw_after.rtt, 0.5)

    @property
    def raw_drift(self) -> float:
        return drift(self.raw_before.sequential_per_s, self.raw_after.sequential_per_s)


async def bench(
    args: argparse.Namespace, work: Path, date: datetime, machine: Machine, payload: bytes
) -> DeliveryRun:
    count = args.events
    raw_count = args.raw or count
    floor = await floors(work)
    broker = Broker(work / "broker")
    subscriber = Subscriber(broker.port)
    broker.start()
    try:
        subscriber.start()
        raw_before = await asyncio.to_thread(raw_paho, broker.port, raw_count, payload)
        progress(raw_line("before", raw_before))
        alone = await sink_alone(broker.port, raw_count)
        progress(sink_line(alone))
        box = await outbox_alone(work / "alone.sqlite3", count)
        progress(outbox_line(box))
        e2e = await end_to_end(work / "e2e.sqlite3", broker, subscriber, count)
        progress(end_to_end_line(e2e))
        raw_after = await asyncio.to_thread(raw_paho, broker.port, raw_count, payload)
        progress(raw_line("after", raw_after))
        drain = await backlog_drain(work / "drain.sqlite3", broker, subscriber, count)
        progress(drain_line(drain))
    finally:
        subscriber.stop()
        broker.stop()
    return DeliveryRun(
        date,
        machine,
        count,
        raw_count,
        len(payload),
        default_retry().maximum,
        floor,
        raw_before,
        alone,
        box,
        e2e,
        raw_after,
        drain,
        NAN,  # measure() times the whole run
    )


def measure(args: argparse.Namespace) -> DeliveryRun:
    base = args.dir.resolve() if args.dir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC)
    payload = json.dumps(make_event(0).to_dict(), separators=(",", ":")).encode()
    with tempfile.TemporaryDirectory(prefix="delivery-bench-", dir=base) as tmp:
        work = Path(tmp)
        versions = {"sqlite": sqlite3.sqlite_version, **package_versions("paho-mqtt")}
        versions["mosquitto"] = mosquitto_version()
        machine = Machine.probe(versions, notes=[f"outbox dir {work} on {filesystem_of(work)}"])
        for line in header_lines(date, machine, len(payload)):
            progress(line)
        start = time.perf_counter()
        run = asyncio.run(bench(args, work, date, machine, payload))
    return replace(run, total_s=time.perf_counter() - start)


# -------------------------------------------------------------------------------------------- report


def ms(values: Sequence[float]) -> str:
    return f"p50 {nearest_rank(values, 0.5) * 1000:6.3f} ms  p95 {nearest_rank(values, 0.95) * 1000:6.3f} ms"


def fmt_cores(cores: CpuUse, nproc: int) -> str:
    return (
        f"this process {cores.own:.2f} (of which the subscriber {cores['subscriber']:.2f}), "
        f"broker {cores['broker']:.2f} (of {nproc})"
    )


def header_lines(date: datetime, machine: Machine, payload_bytes: int) -> list[str]:
    return [
        f"date: {date.strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {machine.describe()}",
        f"event payload: {payload_bytes} bytes of JSON; QoS 1; the subscriber takes {PREFIX}/# at QoS 1",
    ]


def raw_line(when: str, raw: Raw) -> str:
    return (
        f"raw paho {f'({when})':<10}{raw.sequential_per_s:6.0f} msg/s, 1 in flight "
        f"({ms(raw.rtt)}); {raw.window_per_s:6.0f} msg/s, {RAW_WINDOW} in flight"
    )


def sink_line(alone: SinkAlone) -> str:
    return f"MqttSink alone     {alone.per_s:6.0f} msg/s, 1 in flight ({ms(alone.rtt)})"


def outbox_line(box: OutboxAlone) -> str:
    return f"outbox alone       {box.cycles_per_s:6.0f} put+peek+ack/s (put {ms(box.put)})"


def end_to_end_line(e2e: EndToEnd) -> str:
    return f"end to end, burst  {e2e.burst_per_s:6.0f} events/s, lost {e2e.lost}"


def drain_line(drain: Drain) -> str:
    return f"backlog drain      {drain.per_s:6.0f} events/s"


def report(run: DeliveryRun) -> None:
    raw_seq, raw_win, raw_rtt = run.raw_sequential_per_s, run.raw_window_per_s, run.raw_rtt_p50
    alone, box, e2e, drain, floor = run.sink, run.outbox, run.end_to_end, run.drain, run.floors
    nproc = run.machine.nproc
    lines = header_lines(run.date, run.machine, run.payload_bytes)
    lines += [raw_line("before", run.raw_before), sink_line(alone), outbox_line(box), end_to_end_line(e2e)]
    lines += [raw_line("after", run.raw_after), drain_line(drain)]
    print("\n".join(lines))

    paced_p50 = nearest_rank(e2e.paced_latency, 0.5)
    publish_p50 = nearest_rank(e2e.paced_publish, 0.5)
    print()
    print(
        f"1. raw limit: paho QoS 1 publish + PUBACK, {run.raw_messages} msgs "
        f"(mean of before/after, drift {run.raw_drift:.0%})"
    )
    print(f"   1 in flight        {raw_seq:6.0f} msg/s   publish -> PUBACK p50 {raw_rtt * 1000:.3f} ms")
    print(f"   {RAW_WINDOW} in flight       {raw_win:6.0f} msg/s")
    print(
        f"   MqttSink.publish   {alone.per_s:6.0f} msg/s   {ms(alone.rtt)}   "
        f"= {ratio(alone.per_s, raw_seq):.2f} x raw"
    )
    print("2. end to end: Dispatcher.publish -> outbox -> MqttSink -> broker -> subscriber")
    print(
        f"   burst of {run.events}: {e2e.burst_per_s:6.0f} events/s = "
        f"{ratio(e2e.burst_per_s, raw_seq):.2f} x raw 1 in flight, "
        f"{ratio(e2e.burst_per_s, raw_win):.2f} x raw {RAW_WINDOW} in flight, "
        f"{ratio(e2e.burst_per_s, alone.per_s):.2f} x sink alone"
    )
    print(f"     latency (publish() call -> arrival)  {ms(e2e.burst_latency)}")
    print(
        f"     publish()                            {ms(e2e.burst_publish)}   "
        f"(the producer stored {e2e.burst_publish_per_s:.0f}/s)"
    )
    print(f"     cores: {fmt_cores(e2e.cores, nproc)}")
    print(f"   paced, one event at a time ({len(e2e.paced_latency)}):")
    print(
        f"     latency (publish() call -> arrival)  {ms(e2e.paced_latency)}   "
        f"p50 = {ratio(paced_p50, raw_rtt):.1f} x raw publish -> PUBACK"
    )
    print(f"     publish()                            {ms(e2e.paced_publish)}")
    print(f"   lost: {e2e.lost}")
    print("3. outbox alone (sqlite WAL, synchronous=FULL, one private thread)")
    print(
        f"   {box.cycles_per_s:6.0f} put+peek+ack cycles/s "
        f"= {ratio(box.cycles_per_s, e2e.burst_per_s):.2f} x end to end"
    )
    print(f"   put   {ms(box.put)}")
    print(f"   peek  {ms(box.peek)}")
    print(f"   ack   {ms(box.ack)}")
    print(f"   floors: 4 KiB pwrite + fdatasync      {ms(floor.fdatasync)}")
    print(f"           INSERT commit, FULL, direct   {ms(floor.commit_full)}")
    print(f"           INSERT commit, NORMAL, direct {ms(floor.commit_normal)}")
    print(f"           thread handoff (no-op)        {ms(floor.handoff)}")
    print(
        f"   publish() paced p50 = {ratio(publish_p50, nearest_rank(floor.fdatasync, 0.5)):.1f} x "
        f"fdatasync p50, {ratio(publish_p50, nearest_rank(floor.commit_full, 0.5)):.1f} x a direct "
        "FULL commit"
    )
    print(
        f"4. backlog drain: {run.events} events stored with the broker down ({drain.store_s:.2f} s), "
        "then started"
    )
    print(
        f"   from broker start: sink connected {drain.reconnect_s:.2f} s, first event {drain.first_s:.2f} s, "
        f"last {drain.last_s:.2f} s, outbox empty {drain.empty_s:.2f} s"
    )
    print(
        f"   drain {drain.per_s:6.0f} events/s (first -> last arrival) = {ratio(drain.per_s, raw_seq):.2f} x "
        f"raw 1 in flight, {ratio(drain.per_s, e2e.burst_per_s):.2f} x end-to-end burst"
    )
    print(f"   cores: {fmt_cores(drain.cores, nproc)}")
    print(
        f"   waiting before the first event: {ratio(drain.first_s, drain.last_s):.0%} of the time to drain "
        f"(paho reconnect_min_s=1, dispatcher retry back-off up to {run.retry_max_s:g} s)"
    )
    print(f"\ntotal {run.total_s:.1f} s")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("delivery_bench", __doc__)
    parser.add_argument(
        "--events", type=int, help="events per burst / backlog (default 2000; --quick 200; at least 100)"
    )
    parser.add_argument(
        "--raw", type=int, default=0, help="raw paho messages one in flight (default --events)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the outbox files go (default: $TMPDIR)")
    add_quick_and_json(parser, "--events 200: every phase, short, to check that it runs")
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 200 if args.quick else 2000
    if args.events < 100:
        parser.error("--events: at least 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    # The drain phase makes the sink log `cannot connect` and `will retry` warnings on purpose.
    logging.getLogger("edge_runtime").setLevel(logging.ERROR)
    if not mosquitto_available():
        raise SystemExit(f"mosquitto not found ({MOSQUITTO})")
    return report_and_save(measure(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
