"""Triggered inspection (issue 16): trigger-to-verdict latency against the physical limit (the wait for the
next frame plus inference), and the parts per second a station sustains.

    .venv/bin/python -m benchmarks.station_bench [--models demo,meter] [--camera rtsp|synthetic] [--fps 25]
        [--triggers N] [--concurrency 1,4,16,64] [--duration S] [--no-snapshots] [--quick] [--json PATH]
    (or `python benchmarks/station_bench.py ...` from the repository root)

1. The camera: the RTSP test camera (tests/rtsp_server.py under /usr/bin/python3: 320x240 H.264 at --fps,
   a keyframe a second, every frame stamped with its wall time), or `synthetic://conveyor` (640x480, 10 fps)
   when gst-rtsp-server cannot run here (or with --camera synthetic). Camera settings: `decode: all`,
   `sample: false` (a station is the only user of its frames).
2. The runtime: `python -m edge_runtime serve` in its own process (loopback, model on the CPU, default
   inference workers, log level WARNING) with one camera and two stations on it: `one` (frames: 1) and
   `three` (frames: 3, min_interval_ms: 0), the product's default deadline (2000 ms), max_pending and
   events (JSONL sink, outbox, history, snapshots: off with --no-snapshots). Only one station is triggered
   at a time. Models: the built-in demo detector (edge_runtime.demo.model.build_demo_export, written to a
   temporary folder) and `meter`, the real Custom Vision export
   ../shared/customvision-models/onnx-converted-meter-compact (a classifier; skipped when absent).
3. Latency: sequential triggers (POST /stations/<id>/trigger, one at a time, aiohttp keep-alive), each
   after a think time of 0.1 s + uniform(0, one frame interval), so triggers land at random phases of the
   frame interval and the previous part's snapshot and publishing are done. Per trigger: the client's
   round trip and the verdict's `latency_ms`, and from the verdict's times (ms resolution): `wait` =
   first frame's captured_at - triggered_at, `span` = last frame's - first frame's captured_at, `tail` =
   decided_at - last frame's captured_at (delivery from the camera, colour conversion, inference, the loop).
   The physical limit, measured in the same run: the frame interval (median of consecutive frames'
   captured_at gaps per sequence step in the `three` verdicts; else frames read per second) and the
   per-frame inference time (the runtime's own edge_runtime_stage_seconds{source="camera",stage="total"},
   sum / count over the phase). Limit (average) = (frames - 1/2) x interval + inference (the next frame
   comes half an interval later on average); limit (worst) = frames x interval + inference. Ratios:
   p50 / the average limit; p95 and max / the worst limit. A reference: Predictor.predict_frame on a frame
   of the camera's size in this process, before the runtime starts (idle machine).
4. Throughput: closed-loop concurrency N (distinct part ids, each worker triggers its next part as soon as
   its previous one is answered) for --duration seconds per point, then the parts in flight finish. Parts/s
   = answers / (first trigger .. last answer). Checked: every trigger answered 200 once, with its own part
   id, distinct verdict ids; after the points, every answered part published exactly once in the JSONL
   sink (lost / doubled). Verdict kinds; no_verdict reasons with their detail. Compared with the frames the
   camera delivers and the frames predicted per second: parts waiting on the same frame share its
   prediction (Stations._predicted), so a station can answer more parts per second than it predicts frames.

CPU of the runtime, of the RTSP camera, of this client and of other processes is shown per phase (a warning
above 0.1 core of other processes). Progress goes to standard error; the report to standard output at the
end (the results as JSON with --json PATH). Every process started is stopped in `finally`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, as `python -m` would have
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np
import yaml

from benchmarks.camera_bench import Metrics, delta, parse_metrics, stream_modes, streaming
from benchmarks.harness.cli import add_quick_and_json, bench_parser, report_and_save
from benchmarks.harness.machine import CpuMeter, CpuUse, Machine, cpu_seconds, package_versions
from benchmarks.harness.processes import REPO, ServeProcess, exit_on_signals, serve_command
from benchmarks.harness.stats import NAN, percentiles, ratio
from benchmarks.harness.table import Col, Table, progress
from edge_runtime.app import predictor_options
from edge_runtime.demo.model import build_demo_export
from edge_runtime.engine import Predictor
from edge_runtime.settings import build_settings

METER_MODEL = Path("../shared/customvision-models/onnx-converted-meter-compact")  # from the repo root
DEMO_DEFECTS = ({"tag": "stain", "min_probability": 0.5}, {"tag": "glare", "min_probability": 0.5})
SYNTHETIC = "synthetic://conveyor"
SYNTHETIC_FPS = 10.0  # edge_runtime.sources.readers.ConveyorReader
SYNTHETIC_SIZE = (640, 480)
RTSP_SIZE = (320, 240)  # tests/rtsp_server.py
DELIVERY_SKIP_S = 1.0  # the delivery probe's first second (the open's backlog) is left out
CLOCK_WAIT_S = 20.0  # for the runtime's camera clock to turn to RTCP (the first sender report)
THINK_BASE_S = 0.1  # before every sequential trigger, plus uniform(0, one frame interval)
QUIET_CORES = 0.1
STATIONS = {"one": (1, 0.0), "three": (3, 0.0)}  # id -> (frames, min_interval_ms)
JSON_HEADERS = {"Content-Type": "application/json"}


# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Setup:
    date: datetime
    machine: Machine
    camera: str  # what the camera is
    camera_fps: float  # the stream's nominal rate
    frame_size: tuple[int, int]
    snapshots: bool
    deadline_ms: float
    triggers: int  # sequential triggers per station
    concurrency: tuple[int, ...]
    duration_s: float


@dataclass(frozen=True, slots=True)
class Inference:
    """Predictor.predict_frame on a frame of the camera's size in this process (no runtime, no HTTP)."""

    runs: int
    p50_ms: float
    mean_ms: float
    stages_ms: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ClockDelivery:
    """Frames read while the reader's clock was one source; p50/p95/max, ms."""

    frames: int
    arrival_ms: tuple[float, float, float]  # arrival - stamp: encode, RTP over TCP, demux, decode
    captured_ms: tuple[float, float, float]  # captured_at - stamp: the clock's error
    after_capture_ms: tuple[float, float, float]  # arrival - captured_at


@dataclass(frozen=True, slots=True)
class Delivery:
    """The runtime's reader (PyAvReader, as the camera is configured) on the RTSP test camera in this
    process, no runtime: for each frame the camera's own stamp (its wall time when the frame was pushed
    into the encoder, read from the pixels; ms), the reader's captured_at and the frame's arrival (read()
    returned). The first DELIVERY_SKIP_S after the open are left out (the open's backlog)."""

    seconds: float
    unreadable: int  # frames whose stamp did not decode
    by_clock: Mapping[str, ClockDelivery]  # rtcp, pts, arrival


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    station: str
    frames: int
    triggers: int
    kinds: Mapping[str, int]
    reasons: Mapping[str, int]  # "reason: detail" -> count, for no_verdict answers
    rtt_ms: tuple[float, float, float]  # p50, p95, max: the client's round trip
    latency_ms: tuple[float, float, float]  # the verdict's latency_ms
    wait_ms: tuple[float, float, float]  # trigger -> first frame captured
    span_ms: tuple[float, float, float]  # first -> last frame captured
    tail_ms: tuple[float, float, float]  # last frame captured -> decided
    http_ms: tuple[float, float, float]  # round trip - latency_ms
    interval_ms: float  # measured (see the docstring)
    interval_from: str
    inference_ms: float  # the runtime's per-frame predictor time over the phase (mean)
    predicted_per_part: float  # frames predicted / parts (frames, unless parts shared frames)
    limit_avg_ms: float
    limit_worst_ms: float
    read_fps: float
    cpu_runtime: float
    cpu_client: float
    cpu_camera: float
    cpu_other: float


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    station: str
    frames: int
    concurrency: int
    wall_s: float  # first trigger .. last answer
    sent: int
    ok: int  # 200 answers
    statuses: Mapping[str, int]  # every status (and exception name) -> count
    distinct_parts: int  # distinct part ids answered (200)
    wrong_part: int  # 200 answers naming another part id than the one sent
    distinct_verdicts: int  # distinct verdict ids
    parts_per_s: float
    kinds: Mapping[str, int]
    reasons: Mapping[str, int]
    rtt_ms: tuple[float, float, float]
    latency_ms: tuple[float, float, float]
    read_fps: float  # frames the camera delivered per second
    predicted_fps: float  # frames predicted per second (shared between parts)
    parts_per_frame: float  # part-frames judged / frames predicted (> 1: parts shared frames)
    cpu_runtime: float
    cpu_client: float
    cpu_camera: float
    cpu_other: float


@dataclass(frozen=True, slots=True)
class Published:
    answered: int  # distinct parts answered 200 in the throughput points
    published: int  # of those, published at least once (JSONL sink)
    lost: int
    doubled: int  # published more than once
    same_id: int  # published with the verdict id the caller was answered with
    waited_s: float


@dataclass(frozen=True, slots=True)
class ModelRun:
    name: str
    path: str
    task: str
    stream: str  # "decoder/decode/clock" of the camera in the runtime
    connect_s: float
    inference: Inference
    latency: tuple[LatencyPoint, ...]
    throughput: tuple[ThroughputPoint, ...]
    published: Published


@dataclass(frozen=True, slots=True)
class StationRun:
    setup: Setup
    delivery: Delivery | None  # RTSP camera only
    models: tuple[ModelRun, ...]


# ---------------------------------------------------------------------------------------------- camera


class Camera:
    """The RTSP test camera (a /usr/bin/python3 subprocess), or the synthetic conveyor."""

    def __init__(self, kind: str, fps: float, workdir: Path) -> None:
        self.kind = kind
        self._server: Any = None
        if kind == "rtsp":
            from tests.rtsp_fixtures import RtspServer

            self._server = RtspServer(workdir, fps=fps).start()
            self.url = str(self._server.url)
            self.fps = fps
            self.size = RTSP_SIZE
            self.describe = (
                f"RTSP test camera (tests/rtsp_server.py, gst-rtsp-server + x264enc, {RTSP_SIZE[0]}x"
                f"{RTSP_SIZE[1]} GRAY8, {fps:g} fps, a keyframe a second), loopback"
            )
        else:
            self.url = SYNTHETIC
            self.fps = SYNTHETIC_FPS
            self.size = SYNTHETIC_SIZE
            self.describe = f"{SYNTHETIC} ({SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]}, {SYNTHETIC_FPS:g} fps)"

    def cpu(self) -> float:
        return cpu_seconds(int(self._server.pid)) if self._server is not None else 0.0

    def stop(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server = None


def camera_kind(asked: str) -> tuple[str, str]:
    """("rtsp" | "synthetic", why) for --camera auto | rtsp | synthetic."""
    if asked == "synthetic":
        return "synthetic", "asked"
    from tests.rtsp_fixtures import gst_rtsp_unavailable

    reason = gst_rtsp_unavailable()
    if reason is None:
        return "rtsp", ""
    if asked == "rtsp":
        raise SystemExit(f"--camera rtsp: {reason}")
    return "synthetic", reason


def delivery_probe(url: str, seconds: float) -> Delivery:
    """See Delivery. Before any runtime connects (the test server's media is shared: alone here)."""
    from edge_runtime.sources.pyav_reader import PyAvReader
    from edge_runtime.sources.readers import Picture
    from tests.rtsp_fixtures import decode_stamp, offset_ms

    reader = PyAvReader(url, 5.0, 5.0)
    seen: dict[str, tuple[list[float], list[float], list[float]]] = {}
    unreadable = 0
    try:
        started = time.monotonic()
        while time.monotonic() < started + DELIVERY_SKIP_S + seconds:
            picture = reader.read()
            now = time.time()
            if picture is None:
                break
            if not isinstance(picture, Picture) or time.monotonic() < started + DELIVERY_SKIP_S:
                continue
            stamp = decode_stamp(picture.pixels())
            if stamp is None:
                unreadable += 1
                continue
            arrival, captured, after = seen.setdefault(reader.info.clock.value, ([], [], []))
            arrival.append(float(offset_ms(stamp, now)))
            captured.append(float(offset_ms(stamp, picture.captured_at)))
            after.append((now - picture.captured_at) * 1000)
    finally:
        reader.release()
    by_clock = {
        clock: ClockDelivery(len(a), p50_95_max(a), p50_95_max(c), p50_95_max(x))
        for clock, (a, c, x) in seen.items()
    }
    return Delivery(seconds, unreadable, by_clock)


# ---------------------------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    path: Path
    defects: tuple[Mapping[str, object], ...]


def models_for(names: Sequence[str], workdir: Path) -> list[Model]:
    out = []
    for name in names:
        if name == "demo":
            out.append(Model("demo", build_demo_export(workdir / "demo-model"), DEMO_DEFECTS))
        elif name == "meter":
            path = (REPO / METER_MODEL).resolve()
            if not path.is_dir():
                progress(f"meter model not found at {path}: skipped")
                continue
            labels = [x for x in (path / "labels.txt").read_text().split() if x]
            out.append(Model("meter", path, ({"tag": labels[-1], "min_probability": 0.5},)))
        else:
            raise SystemExit(f"unknown model {name!r} (demo, meter)")
    return out


def reference_inference(model: Path, size: tuple[int, int], runs: int) -> tuple[Inference, str]:
    """predict_frame on a camera-like frame (grey, a bright bar) with the server's predictor options."""
    settings = build_settings({"model": {"path": model, "device": "cpu"}})
    workers = settings.server.inference_workers or os.cpu_count() or 1
    predictor = Predictor.load(model, predictor_options(settings, workers))
    try:
        width, height = size
        frame = np.full((height, width, 3), 96, np.uint8)
        frame[:, width // 3 : width // 3 + 16] = 200
        for _ in range(5):
            predictor.predict_frame(frame)
        times, stages = [], Counter[str]()
        for _ in range(runs):
            t0 = time.perf_counter()
            result = predictor.predict_frame(frame)
            times.append((time.perf_counter() - t0) * 1000)
            for stage in ("decode", "preprocess", "inference", "postprocess"):
                stages[stage] += getattr(result.timings, stage) * 1000 / runs
        task = str(
            predictor.spec.task.value if hasattr(predictor.spec.task, "value") else predictor.spec.task
        )
    finally:
        predictor.close()
    return Inference(runs, statistics.median(times), statistics.fmean(times), dict(stages)), task


# ---------------------------------------------------------------------------------------------- runtime


def runtime_config(model: Model, camera: Camera, workdir: Path, snapshots: bool) -> dict[str, object]:
    stations = [
        {
            "id": sid,
            "cameras": ["cam"],
            "defects": [dict(d) for d in model.defects],
            "frames": frames,
            "min_interval_ms": interval,
        }
        for sid, (frames, interval) in STATIONS.items()
    ]
    return {
        "model": {"path": str(model.path), "device": "cpu"},
        "cameras": [
            {
                "id": "cam",
                "url": camera.url,
                "decode": "all",
                "sample": False,
                "open_timeout_s": 5,
                "stall_timeout_s": 5,
            }
        ],
        "stations": stations,
        "events": {
            "jsonl_path": str(workdir / "events.jsonl"),
            "snapshot_dir": str(workdir / "snapshots") if snapshots else None,
            "outbox_path": str(workdir / "outbox.sqlite3"),
            "history_path": str(workdir / "history.sqlite3"),
        },
    }


@dataclass(frozen=True, slots=True)
class Answer:
    part_id: str
    status: str  # "200", "503", or an exception's name
    rtt_ms: float
    body: Mapping[str, Any] | None  # the verdict (200 only)


async def trigger(session: aiohttp.ClientSession, base: str, station: str, part_id: str) -> Answer:
    data = json.dumps({"partId": part_id}).encode()
    t0 = time.perf_counter()
    try:
        async with session.post(f"{base}/stations/{station}/trigger", data=data, headers=JSON_HEADERS) as r:
            text = await r.text()
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(part_id, type(exc).__name__, (time.perf_counter() - t0) * 1000, None)
    rtt = (time.perf_counter() - t0) * 1000
    body = json.loads(text) if status == 200 else None
    return Answer(part_id, str(status), rtt, body)


async def scrape(session: aiohttp.ClientSession, base: str) -> Metrics:
    async with session.get(base + "/metrics") as response:
        return parse_metrics(await response.text())


def epoch(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


def kinds_and_reasons(answers: Sequence[Answer]) -> tuple[dict[str, int], dict[str, int]]:
    kinds, reasons = Counter[str](), Counter[str]()
    for a in answers:
        if a.body is None:
            continue
        kinds[str(a.body["verdict"])] += 1
        if a.body["verdict"] == "no_verdict":
            reasons[f"{a.body['reason']}: {str(a.body['detail'])[:80]}"] += 1
    return dict(kinds), dict(reasons)


def p50_95_max(values: Sequence[float]) -> tuple[float, float, float]:
    p50, p95 = percentiles(values, 50, 95)
    return p50, p95, max(values) if values else NAN


class Phase:
    """Runtime metrics and CPU over one phase."""

    def __init__(self, session: aiohttp.ClientSession, base: str, server_pid: int, camera: Camera) -> None:
        self._session, self._base = session, base
        self._meter = CpuMeter(runtime=lambda: cpu_seconds(server_pid), camera=camera.cpu)
        self.before: Metrics = {}
        self.after: Metrics = {}
        self.cpu: CpuUse | None = None

    async def __aenter__(self) -> Phase:
        self.before = await scrape(self._session, self._base)
        self._meter.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cpu = self._meter.stop()
        self.after = await scrape(self._session, self._base)

    def delta(self, name: str, **match: str) -> float:
        return delta(self.before, self.after, name, **match)

    @property
    def wall_s(self) -> float:
        assert self.cpu is not None
        return self.cpu.wall_s

    def cores(self) -> tuple[float, float, float, float]:
        """runtime, client (this process), camera, other."""
        assert self.cpu is not None
        c = self.cpu
        return c["runtime"], c.own, c["camera"], c.other("runtime", "camera")

    def inference_ms(self) -> float:
        count = self.delta("edge_runtime_stage_seconds_count", source="camera", stage="total")
        total = self.delta("edge_runtime_stage_seconds_sum", source="camera", stage="total")
        return ratio(total, count) * 1000

    def predicted(self) -> float:
        return self.delta("edge_runtime_predictions_total", source="camera")

    def read(self) -> float:
        return self.delta("edge_runtime_camera_frames_total", camera="cam")


async def first_verdict(session: aiohttp.ClientSession, base: str, station: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        a = await trigger(session, base, station, f"warm-{station}-{n}")
        if a.body is not None and a.body["verdict"] != "no_verdict":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no verdict from station {station} within {timeout} s: {a}")
        await asyncio.sleep(0.2)


async def latency_point(
    session: aiohttp.ClientSession,
    base: str,
    server_pid: int,
    camera: Camera,
    station: str,
    count: int,
    rng: random.Random,
) -> tuple[LatencyPoint, list[float]]:
    """Sequential triggers; also the consecutive frames' captured_at gaps per sequence step (ms)."""
    frames = STATIONS[station][0]
    interval_s = 1.0 / camera.fps
    answers: list[Answer] = []
    async with Phase(session, base, server_pid, camera) as phase:
        for i in range(count):
            await asyncio.sleep(THINK_BASE_S + rng.uniform(0.0, interval_s))
            answers.append(await trigger(session, base, station, f"lat-{station}-{i}"))
    waits, spans, tails, gaps, lat, http = [], [], [], [], [], []
    for a in answers:
        if a.body is None or a.body["verdict"] == "no_verdict":
            continue
        v = a.body
        shots = v["frames"]
        captured = [epoch(f["captured_at"]) for f in shots]
        triggered, decided = epoch(v["triggered_at"]), epoch(v["decided_at"])
        waits.append((captured[0] - triggered) * 1000)
        spans.append((captured[-1] - captured[0]) * 1000)
        tails.append((decided - captured[-1]) * 1000)
        lat.append(float(v["latency_ms"]))
        http.append(a.rtt_ms - float(v["latency_ms"]))
        for (s0, t0), (s1, t1) in zip(
            zip([f["sequence"] for f in shots], captured, strict=True),
            zip([f["sequence"] for f in shots[1:]], captured[1:], strict=True),
            strict=False,
        ):
            if s1 > s0:
                gaps.append((t1 - t0) * 1000 / (s1 - s0))
    kinds, reasons = kinds_and_reasons(answers)
    read = phase.read()
    read_fps = read / phase.wall_s
    inference = phase.inference_ms()
    cores = phase.cores()
    point = LatencyPoint(
        station=station,
        frames=frames,
        triggers=len(answers),
        kinds=kinds,
        reasons=reasons,
        rtt_ms=p50_95_max([a.rtt_ms for a in answers if a.body is not None]),
        latency_ms=p50_95_max(lat),
        wait_ms=p50_95_max(waits),
        span_ms=p50_95_max(spans),
        tail_ms=p50_95_max(tails),
        http_ms=p50_95_max(http),
        interval_ms=NAN,  # filled in by the caller (from every station's gaps)
        interval_from="",
        inference_ms=inference,
        predicted_per_part=ratio(phase.predicted(), len(answers)),
        limit_avg_ms=NAN,
        limit_worst_ms=NAN,
        read_fps=read_fps,
        cpu_runtime=cores[0],
        cpu_client=cores[1],
        cpu_camera=cores[2],
        cpu_other=cores[3],
    )
    return point, gaps


def with_limits(p: LatencyPoint, interval_ms: float, source: str) -> LatencyPoint:
    avg = (p.frames - 0.5) * interval_ms + p.inference_ms
    worst = p.frames * interval_ms + p.inference_ms
    return replace(p, interval_ms=interval_ms, interval_from=source, limit_avg_ms=avg, limit_worst_ms=worst)


async def throughput_point(
    session: aiohttp.ClientSession,
    base: str,
    server_pid: int,
    camera: Camera,
    station: str,
    concurrency: int,
    duration: float,
) -> tuple[ThroughputPoint, list[Answer]]:
    frames = STATIONS[station][0]
    answers: list[Answer] = []
    counter = iter(range(10**9))

    async with Phase(session, base, server_pid, camera) as phase:
        start = time.perf_counter()
        stop_at = start + duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                answers.append(
                    await trigger(session, base, station, f"tp-{station}-{concurrency}-{next(counter)}")
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ok = [a for a in answers if a.status == "200" and a.body is not None]
    kinds, reasons = kinds_and_reasons(ok)
    cores = phase.cores()
    predicted = phase.predicted()
    point = ThroughputPoint(
        station=station,
        frames=frames,
        concurrency=concurrency,
        wall_s=wall,
        sent=len(answers),
        ok=len(ok),
        statuses=dict(Counter(a.status for a in answers)),
        distinct_parts=len({a.body["part_id"] for a in ok if a.body is not None}),
        wrong_part=sum(1 for a in ok if a.body is not None and a.body["part_id"] != a.part_id),
        distinct_verdicts=len({a.body["id"] for a in ok if a.body is not None}),
        parts_per_s=len(ok) / wall,
        kinds=kinds,
        reasons=reasons,
        rtt_ms=p50_95_max([a.rtt_ms for a in ok]),
        latency_ms=p50_95_max([float(a.body["latency_ms"]) for a in ok if a.body is not None]),
        read_fps=phase.read() / phase.wall_s,
        predicted_fps=predicted / phase.wall_s,
        parts_per_frame=ratio(sum(len(a.body["frames"]) for a in ok if a.body is not None), predicted),
        cpu_runtime=cores[0],
        cpu_client=cores[1],
        cpu_camera=cores[2],
        cpu_other=cores[3],
    )
    return point, ok


async def published_check(jsonl: Path, answered: Mapping[str, str], timeout: float = 30.0) -> Published:
    """Every answered part (part id -> verdict id) in the JSONL sink exactly once, with that verdict id."""
    started = time.monotonic()
    while True:
        seen: dict[str, list[str]] = {}
        try:
            lines = jsonl.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            if not line.endswith("}"):
                continue
            record = json.loads(line)
            if record.get("kind") == "verdict" and record.get("part_id") in answered:
                seen.setdefault(record["part_id"], []).append(record["id"])
        lost = len(answered) - len(seen)
        if lost == 0 or time.monotonic() - started > timeout:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(0.5 if lost == 0 else 0)
    return Published(
        answered=len(answered),
        published=len(seen),
        lost=lost,
        doubled=sum(1 for ids in seen.values() if len(ids) > 1),
        same_id=sum(1 for part, ids in seen.items() if ids == [answered[part]]),
        waited_s=time.monotonic() - started,
    )


async def bench_runtime(
    args: argparse.Namespace, server: ServeProcess, camera: Camera, jsonl: Path
) -> tuple[str, float, list[LatencyPoint], list[ThroughputPoint], Published]:
    started = time.monotonic()
    rng = random.Random(16)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while "cam" not in streaming(await scrape(session, server.base)):
            if time.monotonic() - started > 60 or server.proc.poll() is not None:
                raise RuntimeError(f"the camera did not stream:\n{server.log()[-3000:]}")
            await asyncio.sleep(0.2)
        for station in STATIONS:
            await first_verdict(session, server.base, station)
        connect_s = time.monotonic() - started
        stream = stream_modes(await scrape(session, server.base)).get("cam", "?")
        clock_wait = time.monotonic() + (CLOCK_WAIT_S if camera.kind == "rtsp" else 0.0)
        while not stream.endswith("/rtcp") and time.monotonic() < clock_wait:
            await asyncio.sleep(0.5)  # a real camera's steady state: its clock from sender reports
            stream = stream_modes(await scrape(session, server.base)).get("cam", "?")
        progress(
            f"  camera streams ({stream}) and both stations judge, {connect_s:.1f} s after ready "
            f"(+{max(0.0, time.monotonic() - started - connect_s):.1f} s for the clock)"
        )
        for i in range(5):  # warm the connection and the loop
            await trigger(session, server.base, "one", f"warm-x-{i}")

        raw: list[LatencyPoint] = []
        gaps: list[float] = []
        for station in STATIONS:
            point, g = await latency_point(
                session, server.base, server.proc.pid, camera, station, args.triggers, rng
            )
            raw.append(point)
            gaps += g
        if gaps:
            interval_ms, source = (
                statistics.median(gaps),
                f"median of {len(gaps)} consecutive captured_at gaps",
            )
        else:
            read_fps = statistics.fmean(p.read_fps for p in raw)
            interval_ms, source = ratio(1000.0, read_fps), "frames read per second"
        latency = [with_limits(p, interval_ms, source) for p in raw]
        for p in latency:
            progress(latency_line(p))

        points: list[ThroughputPoint] = []
        answered: dict[str, str] = {}
        for station in STATIONS:
            for n in args.concurrency:
                tp, ok = await throughput_point(
                    session, server.base, server.proc.pid, camera, station, n, args.duration
                )
                points.append(tp)
                answered.update({a.part_id: str(a.body["id"]) for a in ok if a.body is not None})
                progress(throughput_line(tp))
                await asyncio.sleep(0.5)  # the last parts' publishing, before the next point
        published = await published_check(jsonl, answered)
        end = stream_modes(await scrape(session, server.base)).get("cam", "?")
        stream = stream if end == stream else f"{stream}, then {end}"
        progress(
            f"  published: {published.published} of {published.answered} answered parts, lost "
            f"{published.lost}, doubled {published.doubled}, with the answered id {published.same_id}"
        )
    return stream, connect_s, latency, points, published


def measure_model(args: argparse.Namespace, model: Model, camera: Camera) -> ModelRun:
    inference, task = reference_inference(model.path, camera.size, args.inference_runs)
    progress(
        f"{model.name}: {model.path} ({task}); in-process predict_frame {camera.size[0]}x{camera.size[1]}: "
        f"p50 {inference.p50_ms:.2f} ms, mean {inference.mean_ms:.2f} ms"
    )
    with tempfile.TemporaryDirectory(prefix="bench-station-") as tmp:
        workdir = Path(tmp)
        config = workdir / "config.yaml"
        config.write_text(
            yaml.safe_dump(runtime_config(model, camera, workdir, not args.no_snapshots), sort_keys=False)
        )
        with ServeProcess(lambda port: serve_command(model.path, port, ["--config", str(config)])) as server:
            server.wait_ready()
            stream, connect_s, latency, points, published = asyncio.run(
                bench_runtime(args, server, camera, workdir / "events.jsonl")
            )
    return ModelRun(
        model.name,
        str(model.path),
        task,
        stream,
        connect_s,
        inference,
        tuple(latency),
        tuple(points),
        published,
    )


def measure(args: argparse.Namespace) -> StationRun:
    machine = Machine.probe(package_versions("aiohttp", "av", "onnxruntime", "numpy"))
    kind, why = camera_kind(args.camera)
    with tempfile.TemporaryDirectory(prefix="bench-station-cam-") as tmp:
        workdir = Path(tmp)
        models = models_for(args.models, workdir)
        camera = Camera(kind, args.fps, workdir)
        try:
            setup = Setup(
                date=datetime.now(UTC),
                machine=machine,
                camera=camera.describe + (f" (RTSP not used: {why})" if why else ""),
                camera_fps=camera.fps,
                frame_size=camera.size,
                snapshots=not args.no_snapshots,
                deadline_ms=2000.0,
                triggers=args.triggers,
                concurrency=tuple(args.concurrency),
                duration_s=args.duration,
            )
            for line in setup_lines(setup):
                progress(line)
            delivery = None
            if kind == "rtsp":
                delivery = delivery_probe(camera.url, args.delivery_seconds)
                progress(delivery_line(delivery))
            runs = tuple(measure_model(args, m, camera) for m in models)
        finally:
            camera.stop()
    return StationRun(setup, delivery, runs)


# ---------------------------------------------------------------------------------------------- report


def fmt_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def delivery_line(d: Delivery) -> str:
    parts = [
        f"{clock} ({c.frames} frames): arrival - stamp {trio(c.arrival_ms)}, captured_at - stamp "
        f"{trio(c.captured_ms)}, arrival - captured_at {trio(c.after_capture_ms)}"
        for clock, c in d.by_clock.items()
    ]
    return (
        f"camera delivery (the runtime's reader alone, {d.seconds:g} s, {d.unreadable} stamps unreadable), "
        "ms p50/p95/max, by the reader's clock: " + "; ".join(parts)
    )


def latency_line(p: LatencyPoint) -> str:
    return (
        f"  latency {p.station} (frames {p.frames}): {p.triggers} triggers, rtt p50/p95/max "
        f"{p.rtt_ms[0]:.1f}/{p.rtt_ms[1]:.1f}/{p.rtt_ms[2]:.1f} ms, latency_ms {p.latency_ms[0]:.1f}/"
        f"{p.latency_ms[1]:.1f}/{p.latency_ms[2]:.1f}, interval {p.interval_ms:.1f} ms, inference "
        f"{p.inference_ms:.2f} ms, limit avg/worst {p.limit_avg_ms:.1f}/{p.limit_worst_ms:.1f} ms, "
        f"{fmt_counts(p.kinds)}"
    )


def throughput_line(p: ThroughputPoint) -> str:
    return (
        f"  throughput {p.station} N={p.concurrency}: {p.parts_per_s:.1f} parts/s ({p.ok}/{p.sent} 200), "
        f"rtt p95 {p.rtt_ms[1]:.1f} ms, predicted {p.predicted_fps:.1f} frames/s of {p.read_fps:.1f}, "
        f"{fmt_counts(p.kinds)}, runtime {p.cpu_runtime:.2f} cores, other {p.cpu_other:.2f}"
    )


def setup_lines(s: Setup) -> list[str]:
    return [
        f"date: {s.date.strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {s.machine.describe()}",
        f"camera: {s.camera}; decode: all, sample: false",
        f"stations: one (frames 1), three (frames 3, min_interval_ms 0); deadline {s.deadline_ms:g} ms; "
        f"snapshots {'on' if s.snapshots else 'off'}",
        f"latency: {s.triggers} sequential triggers per station, think {THINK_BASE_S:g} s + U(0, "
        f"{1000 / s.camera_fps:.0f} ms); throughput: closed loop N = "
        f"{', '.join(map(str, s.concurrency))}, {s.duration_s:g} s per point",
    ]


def trio(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.1f}/{t[1]:.1f}/{t[2]:.1f}"


def delivery_ms(d: Delivery | None) -> float:
    """The camera's delivery lag (arrival - stamp, p50) under the RTCP clock (else any); 0 without a probe
    (the synthetic camera stamps frames when they are read)."""
    if d is None or not d.by_clock:
        return 0.0
    c = d.by_clock.get("rtcp") or next(iter(d.by_clock.values()))
    return c.arrival_ms[0]


def report(run: StationRun) -> None:
    print("\n".join(setup_lines(run.setup)))
    if run.delivery is not None:
        print(delivery_line(run.delivery))
    noisy: list[float] = []
    delivery = delivery_ms(run.delivery)
    for m in run.models:
        print()
        print(
            f"model {m.name} ({m.task}): {m.path}; camera stream {m.stream}; in-process predict_frame "
            f"{run.setup.frame_size[0]}x{run.setup.frame_size[1]}: p50 {m.inference.p50_ms:.2f} ms "
            f"(" + ", ".join(f"{k} {v:.2f}" for k, v in m.inference.stages_ms.items()) + ")"
        )
        print("latency (sequential triggers), ms: p50/p95/max")
        table = Table(
            Col("station", 7),
            Col("n", 4),
            Col("rtt", 17),
            Col("latency_ms", 17),
            Col("wait", 15),
            Col("span", 15),
            Col("tail", 15),
            Col("http", 13),
            Col("interval", 8, ".1f"),
            Col("infer", 6, ".2f"),
            Col("lim avg", 7, ".1f"),
            Col("lim max", 7, ".1f"),
            Col("p50/avg", 7, ".2f"),
            Col("rtt/avg", 7, ".2f"),
            Col("+dlv", 6, ".1f"),
            Col("p50/+dlv", 8, ".2f"),
            Col("p95/max", 7, ".2f"),
            Col("max/max", 7, ".2f"),
            Col("kinds", 18),
        )
        for p in m.latency:
            table.row(
                p.station,
                p.triggers,
                trio(p.rtt_ms),
                trio(p.latency_ms),
                trio(p.wait_ms),
                trio(p.span_ms),
                trio(p.tail_ms),
                trio(p.http_ms),
                p.interval_ms,
                p.inference_ms,
                p.limit_avg_ms,
                p.limit_worst_ms,
                ratio(p.latency_ms[0], p.limit_avg_ms),
                ratio(p.rtt_ms[0], p.limit_avg_ms),
                p.limit_avg_ms + delivery,
                ratio(p.latency_ms[0], p.limit_avg_ms + delivery),
                ratio(p.latency_ms[1], p.limit_worst_ms),
                ratio(p.latency_ms[2], p.limit_worst_ms),
                fmt_counts(p.kinds),
            )
            noisy.append(p.cpu_other)
        table.print()
        for p in m.latency:
            if p.reasons:
                print(f"  {p.station} no_verdict: {fmt_counts(p.reasons)}")
        if m.latency:
            p = m.latency[0]
            print(
                f"  interval: {p.interval_from}; predicted frames per part: "
                + ", ".join(f"{q.station} {q.predicted_per_part:.2f}" for q in m.latency)
                + "; CPU (runtime/client/camera/other cores): "
                + ", ".join(
                    f"{q.station} {q.cpu_runtime:.2f}/{q.cpu_client:.2f}/{q.cpu_camera:.2f}/{q.cpu_other:.2f}"
                    for q in m.latency
                )
            )
        print("throughput (closed loop, distinct part ids)")
        table = Table(
            Col("station", 7),
            Col("N", 3),
            Col("parts/s", 7, ".1f"),
            Col("sent", 5),
            Col("200", 5),
            Col("ids", 5),
            Col("wrong", 5),
            Col("rtt p50", 7, ".1f"),
            Col("rtt p95", 7, ".1f"),
            Col("lat p95", 7, ".1f"),
            Col("cam fps", 7, ".1f"),
            Col("pred fps", 8, ".1f"),
            Col("parts/frame", 11, ".2f"),
            Col("x cam fps", 9, ".2f"),
            Col("runtime", 7, ".2f"),
            Col("client", 6, ".2f"),
            Col("camera", 6, ".2f"),
            Col("other", 5, ".2f"),
            Col("kinds", 24),
        )
        for t in m.throughput:
            table.row(
                t.station,
                t.concurrency,
                t.parts_per_s,
                t.sent,
                t.ok,
                t.distinct_parts,
                t.wrong_part,
                t.rtt_ms[0],
                t.rtt_ms[1],
                t.latency_ms[1],
                t.read_fps,
                t.predicted_fps,
                t.parts_per_frame,
                ratio(t.parts_per_s, t.read_fps),
                t.cpu_runtime,
                t.cpu_client,
                t.cpu_camera,
                t.cpu_other,
                fmt_counts(t.kinds),
            )
            noisy.append(t.cpu_other)
        table.print()
        for t in m.throughput:
            bad = {k: v for k, v in t.statuses.items() if k != "200"}
            if bad or t.distinct_parts != t.ok or t.wrong_part or t.distinct_verdicts != t.ok:
                print(
                    f"  {t.station} N={t.concurrency}: statuses {fmt_counts(t.statuses)}, distinct parts "
                    f"{t.distinct_parts}, distinct verdict ids {t.distinct_verdicts}, "
                    f"wrong part {t.wrong_part}"
                )
            if t.reasons:
                print(f"  {t.station} N={t.concurrency} no_verdict: {fmt_counts(t.reasons)}")
        pb = m.published
        print(
            f"published (JSONL sink): {pb.published} of {pb.answered} answered parts, lost {pb.lost}, "
            f"doubled {pb.doubled}, with the id they were answered with {pb.same_id} ({pb.waited_s:.1f} s)"
        )
    print()
    print(
        "rtt: the client's round trip; latency_ms: the verdict's (trigger arrival -> decided);\n"
        "wait: trigger -> first frame's captured_at; span: first -> last frame captured; tail: last frame\n"
        "captured -> decided (the camera's delivery, colour conversion, inference, the loop); http: rtt -\n"
        "latency_ms. Verdict times have ms resolution. infer: the runtime's per-frame predictor time over\n"
        "the phase (mean). lim avg = (frames - 1/2) x interval + infer; lim max = frames x interval +\n"
        "infer. parts/frame: part-frames judged per frame predicted (> 1: parts shared frames). x cam fps:\n"
        "parts/s / frames delivered per s. +dlv: lim avg + the camera's delivery lag (arrival - stamp, p50,\n"
        "from the delivery probe): what the runtime cannot go below with this camera.\n"
        "CPU in cores: the runtime process, this client, the camera server, other processes."
    )
    if noisy and max(noisy) > QUIET_CORES:
        print(f"WARNING: other processes used up to {max(noisy):.2f} cores during a measurement")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("station_bench", __doc__)
    parser.add_argument(
        "--models",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        help="of demo, meter (default demo,meter; --quick demo)",
    )
    parser.add_argument(
        "--camera",
        choices=("auto", "rtsp", "synthetic"),
        default="auto",
        help="the RTSP test camera, or synthetic://conveyor (default auto: RTSP when it can run)",
    )
    parser.add_argument("--fps", type=float, default=25.0, help="the RTSP camera's frame rate (default 25)")
    parser.add_argument(
        "--triggers", type=int, help="sequential triggers per station (default 200; --quick 20)"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: sorted({int(x) for x in s.split(",") if x.strip()}),
        help="closed-loop concurrencies (default 1,4,16,64; --quick 1,16)",
    )
    parser.add_argument("--duration", type=float, help="seconds per throughput point (default 10; --quick 2)")
    parser.add_argument(
        "--inference-runs", type=int, default=200, help="in-process predict_frame runs (default 200)"
    )
    parser.add_argument(
        "--delivery-seconds",
        type=float,
        help="seconds of the camera delivery probe, RTSP only (default 8; --quick 2)",
    )
    parser.add_argument(
        "--no-snapshots", action="store_true", help="events.snapshot_dir: null (default: snapshots on)"
    )
    add_quick_and_json(parser, "the demo model only, 20 triggers, N=1,16 for 2 s: to check that it runs")
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = {
        "models": ["demo"] if args.quick else ["demo", "meter"],
        "triggers": 20 if args.quick else 200,
        "concurrency": [1, 16] if args.quick else [1, 4, 16, 64],
        "duration": 2.0 if args.quick else 10.0,
        "delivery_seconds": 2.0 if args.quick else 8.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.inference_runs = min(args.inference_runs, 50)
    if args.triggers < 1 or args.duration <= 0 or not args.concurrency or min(args.concurrency) < 1:
        parser.error("--triggers, --duration and --concurrency must be positive")
    if args.fps <= 0 or not math.isfinite(args.fps):
        parser.error("--fps must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    return report_and_save(measure(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
