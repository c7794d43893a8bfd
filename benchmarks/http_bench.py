"""HTTP benchmark: `POST /image` through the real server against the in-process limit and the container.

    .venv/bin/python -m benchmarks.http_bench [--model PATH] [--duration S] [--concurrency 1,4,16]
        [--repeat N] [--quick] [--json PATH]

1. Makes two JPEGs in memory (640x480 and 1920x1080, quality 90) from one of the model's test photos.
2. In-process limit: Predictor.predict_bytes (decode + preprocess + inference + postprocess) in as many
   threads as the server's inference executor, with the same predictor options, no HTTP; measured
   before and after each size's HTTP runs (this machine's speed drifts) and averaged.
3. Real server: `python -m edge_runtime serve` as a separate process on a free loopback port; an aiohttp
   keep-alive client (closed loop) at each concurrency, for a fixed duration after a warm-up.
4. Added latency at concurrency 1: rounds of one in-process prediction, one request with a minimal
   blocking client and one with aiohttp's, so that all see the same machine.
5. Client overhead: the same client against the trivial `GET /`, and its CPU time per request.
6. HTTP floor: the same server with a predictor that answers at once (benchmarks/null_server.py).

The client runs on the same cores as the server, so every HTTP number includes its cost; the tables show
how much CPU it took, and how much other processes took (a warning is printed above 0.1 core). Only
loopback traffic; server processes are always terminated.

Progress goes to standard error as each point is measured; the report goes to standard output at the end
(and the results as JSON to --json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image, ImageOps

from benchmarks.harness.cli import add_quick_and_json, bench_parser, model_folder, report_and_save
from benchmarks.harness.machine import CpuMeter, Machine, cpu_seconds, package_versions
from benchmarks.harness.processes import ServeProcess, exit_on_signals, serve_command
from benchmarks.harness.stats import NAN, drift, mean2, percentiles, ratio
from benchmarks.harness.table import Col, Table, progress
from edge_runtime.app import predictor_options
from edge_runtime.domain import StageTimings
from edge_runtime.engine import Predictor
from edge_runtime.settings import build_settings

DEFAULT_MODEL = Path("../shared/customvision-models/onnx-converted-meter-compact")  # from the repo root
SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080)}
# The exported container (Flask + TFLite) on these 2-core machines, concurrency 1
# (shared/notes/customvision-export-formats.md §8).
CONTAINER_RPS = {"640x480": 89.0, "1920x1080": 38.0}
TARGET_VS_INPROC = 0.8  # at concurrency 4
TARGET_VS_CONTAINER = 3.0  # at concurrency 4
TARGET_ADDED_P50_MS = 1.0  # HTTP p50 at concurrency 1 minus in-process per-image p50 at 1 worker
TARGET_CONCURRENCY = 4
QUIET_CORES = 0.1  # other processes using more than this during a measurement: flagged (see --repeat)
STAGES = ("decode", "preprocess", "inference", "postprocess")
GRAIN_SIGMA = 2.0  # mild sensor-like noise: an upscaled photo alone is smoother than a camera frame
NULL_PREDICTOR_MARKER = "null predictor in place"  # benchmarks/null_server.py says so in its log


# ---------------------------------------------------------------------------------------------- images


def source_photo(model: Path, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    for name in ("test-cat.jpg", "test-dog.jpg"):
        if (model / name).is_file():
            return model / name
    photos = sorted(model.glob("test-*.jpg"))
    if not photos:
        raise SystemExit(f"no test-*.jpg photo in {model}; pass --image")
    return photos[0]


def make_jpeg(photo: Path, size: tuple[int, int]) -> bytes:
    """Cover-resize the photo to `size`, add fixed-seed grain, save as a baseline JPEG at quality 90."""
    with Image.open(photo) as src:
        image = ImageOps.fit(src.convert("RGB"), size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image).astype(np.float32)
    pixels += np.random.default_rng(0).normal(0.0, GRAIN_SIGMA, pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ in-process


@dataclass(frozen=True, slots=True)
class InProcess:
    workers: int
    images_per_s: float
    p50_ms: float  # per-image wall time (what a request at concurrency 1 would see)
    cpu_cores: float  # this process's CPU seconds / wall seconds
    other_cores: float  # the rest of the machine (other processes) during the window
    stages_ms: Mapping[str, float]  # mean per stage, from the Predictor's own timings
    drift: float = 0.0  # |before - after| / mean images/s, when measured on both sides of the HTTP runs


def merge_inprocess(a: InProcess, b: InProcess) -> InProcess:
    """The mean of the measurements before and after the HTTP runs: the machine's speed drifts."""
    return InProcess(
        a.workers,
        mean2(a.images_per_s, b.images_per_s),
        mean2(a.p50_ms, b.p50_ms),
        mean2(a.cpu_cores, b.cpu_cores),
        max(a.other_cores, b.other_cores),
        {st: mean2(a.stages_ms.get(st, 0.0), b.stages_ms.get(st, 0.0)) for st in STAGES},
        drift(a.images_per_s, b.images_per_s),
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """The in-process limit of one image size: 1 worker and the server's worker count, measured before
    and after the size's HTTP points, and the mean of the two (what the ratios use)."""

    before: tuple[InProcess, InProcess]
    after: tuple[InProcess, InProcess]
    one: InProcess
    many: InProcess

    @classmethod
    def of(cls, before: tuple[InProcess, InProcess], after: tuple[InProcess, InProcess]) -> Limit:
        return cls(before, after, merge_inprocess(before[0], after[0]), merge_inprocess(before[1], after[1]))


def run_inprocess(
    predictor: Predictor, data: bytes, workers: int, duration: float, warmup: float
) -> InProcess:
    stop = threading.Event()
    done: list[list[tuple[float, float, StageTimings]]] = [[] for _ in range(workers)]

    def loop(out: list[tuple[float, float, StageTimings]]) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            result = predictor.predict_bytes(data)
            out.append((start, time.perf_counter(), result.timings))

    threads = [threading.Thread(target=loop, args=(d,), daemon=True) for d in done]
    for t in threads:
        t.start()
    time.sleep(warmup)
    meter = CpuMeter().start()
    time.sleep(duration)
    cpu = meter.stop()
    stop.set()
    for t in threads:
        t.join()
    finished = [x for d in done for x in d if cpu.started <= x[1] <= cpu.ended]
    whole = [x for x in finished if x[0] >= cpu.started]
    return InProcess(
        workers,
        len(finished) / cpu.wall_s,
        statistics.median(e - s for s, e, _ in whole) * 1000 if whole else NAN,
        cpu.own,
        cpu.other(),
        {st: statistics.fmean(getattr(tm, st) for *_, tm in whole) * 1000 for st in STAGES} if whole else {},
    )


def best_inprocess(
    predictor: Predictor, data: bytes, workers: int, duration: float, warmup: float, repeat: int
) -> InProcess:
    """run_inprocess up to `repeat` times; keep the run least disturbed by other processes."""
    best: InProcess | None = None
    for _ in range(repeat):
        r = run_inprocess(predictor, data, workers, duration, warmup)
        if best is None or r.other_cores < best.other_cores:
            best = r
        if r.other_cores < QUIET_CORES:
            break
    assert best is not None
    return best


# ------------------------------------------------------------------------------- the server's metrics


_STAGE_LINE = re.compile(
    r'^edge_runtime_stage_seconds_(sum|count)\{source="http",stage="(\w+)"\} (\S+)$', re.M
)


async def server_stage_totals(session: aiohttp.ClientSession, base: str) -> dict[tuple[str, str], float]:
    """(stage, "sum" | "count") -> value of the server's own per-stage histograms (source http)."""
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    return {(m[2], m[1]): float(m[3]) for m in _STAGE_LINE.finditer(text)}


def stage_means_ms(
    before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float]
) -> dict[str, float]:
    count = after.get(("total", "count"), 0.0) - before.get(("total", "count"), 0.0)
    if count <= 0:
        return {}
    return {st: (after.get((st, "sum"), 0.0) - before.get((st, "sum"), 0.0)) / count * 1000 for st in STAGES}


# ------------------------------------------------------------------------------------------ the client


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests_per_s: float  # 200 answers completed in the window, per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok: int
    errors: Mapping[str, int] = field(default_factory=dict)  # status code or exception name -> count
    client_cores: float = 0.0  # this process's CPU seconds / wall seconds
    server_cores: float = 0.0
    loop_cores: float = 0.0  # the server's main thread (event loop, HTTP, JSON, metrics)
    other_cores: float = 0.0  # everything else on the machine
    server_stages_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def client_cpu_us_per_req(self) -> float:
        return ratio(self.client_cores, self.requests_per_s) * 1e6

    @property
    def server_cpu_ms_per_req(self) -> float:
        return ratio(self.server_cores, self.requests_per_s) * 1e3

    @property
    def loop_cpu_ms_per_req(self) -> float:
        return ratio(self.loop_cores, self.requests_per_s) * 1e3


async def generate_load(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None,
    concurrency: int,
    duration: float,
    warmup: float,
    server_pid: int,
) -> LoadResult:
    """`concurrency` closed-loop workers on one keep-alive session; each sends its next request as soon as
    it has the answer. Counts answers completed inside the window after the warm-up."""
    headers = {"Content-Type": "application/octet-stream"} if body is not None else None
    samples: list[tuple[float, float, str]] = []  # (start, end, status), perf_counter seconds
    stop_at = time.perf_counter() + warmup + duration

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                async with session.request(method, url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            samples.append((start, time.perf_counter(), status))

    meter = CpuMeter(
        server=lambda: cpu_seconds(server_pid),
        loop=lambda: cpu_seconds(server_pid, tid=server_pid),  # the main thread: the event loop
    )
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        meter.start()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu = meter.stop()
        await asyncio.gather(*tasks)
    finally:  # interrupted: stop the workers before the session closes under them
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    in_window = [(s, e, st) for s, e, st in samples if cpu.started <= e <= cpu.ended]
    good = [(s, e) for s, e, st in in_window if st == "200"]
    p50, p95, p99 = percentiles([(e - s) * 1000 for s, e in good if s >= cpu.started], 50, 95, 99)
    return LoadResult(
        requests_per_s=len(good) / cpu.wall_s,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        ok=len(good),
        errors=dict(Counter(st for *_, st in in_window if st != "200")),
        client_cores=cpu.own,
        server_cores=cpu["server"],
        loop_cores=cpu["loop"],
        other_cores=cpu.other("server"),
    )


async def least_disturbed_load(
    session: aiohttp.ClientSession,
    server: ServeProcess,
    method: str,
    path: str,
    body: bytes | None,
    concurrency: int,
    duration: float,
    warmup: float,
    repeat: int,
) -> LoadResult:
    """generate_load `repeat` times; keep the run least disturbed by other processes on the machine."""
    best: LoadResult | None = None
    for _ in range(repeat):
        before = await server_stage_totals(session, server.base)
        r = await generate_load(
            session, method, server.base + path, body, concurrency, duration, warmup, server.pid
        )
        r = replace(
            r, server_stages_ms=stage_means_ms(before, await server_stage_totals(session, server.base))
        )
        if best is None or r.other_cores < best.other_cores:
            best = r
        if r.other_cores < QUIET_CORES:
            break
    assert best is not None
    return best


class RawClient:
    """A minimal blocking HTTP/1.1 keep-alive client (one socket, pre-built request): a few tens of
    microseconds of CPU per request where aiohttp's client takes about half a millisecond here, so
    that what it measures is the server's share."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self) -> float:
        start = time.perf_counter()
        self.sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"POST answered {lines[0]!r}")
        length = next(
            int(v) for k, _, v in (ln.partition(b":") for ln in lines) if k.lower() == b"content-length"
        )
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            rest += chunk
        return time.perf_counter() - start

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True, slots=True)
class Paired:
    rounds: int
    inproc_p50_ms: float
    raw_p50_ms: float  # RawClient
    aiohttp_p50_ms: float  # the load generator's client
    raw_diff_ms: float  # median over rounds of (minimal-client request - in-process prediction)
    other_cores: float
    inproc_stages_ms: Mapping[str, float]  # means
    server_stages_ms: Mapping[str, float]

    @property
    def added_ms(self) -> float:
        return self.raw_p50_ms - self.inproc_p50_ms

    @property
    def added_aiohttp_ms(self) -> float:
        return self.aiohttp_p50_ms - self.inproc_p50_ms


async def paired_latency(
    session: aiohttp.ClientSession, server: ServeProcess, predictor: Predictor, data: bytes, duration: float
) -> Paired:
    """Rounds of: one in-process prediction (on a worker thread, as in the server), one request with the
    minimal client, one with aiohttp's; concurrency 1. The three see the same machine, whose speed
    drifts by 10 % or more within seconds here; comparing runs made seconds apart does not work."""
    inproc: list[tuple[float, StageTimings]] = []
    raw: list[float] = []
    http: list[float] = []
    headers = {"Content-Type": "application/octet-stream"}
    client = RawClient(server.port, "/image", data)

    def predict_then_raw() -> tuple[float, StageTimings, float]:
        start = time.perf_counter()
        timings = predictor.predict_bytes(data).timings
        return time.perf_counter() - start, timings, client.post()

    before = await server_stage_totals(session, server.base)
    meter = CpuMeter(server=lambda: cpu_seconds(server.pid)).start()
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < duration or len(http) < 5:
            took, timings, raw_took = await asyncio.to_thread(predict_then_raw)
            inproc.append((took, timings))
            raw.append(raw_took)
            start = time.perf_counter()
            async with session.post(server.base + "/image", data=data, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"POST /image answered {resp.status}")
            http.append(time.perf_counter() - start)
    finally:
        client.close()
    cpu = meter.stop()
    return Paired(
        len(http),
        statistics.median(t for t, _ in inproc) * 1000,
        statistics.median(raw) * 1000,
        statistics.median(http) * 1000,
        statistics.median(r - t for r, (t, _) in zip(raw, inproc, strict=True)) * 1000,
        cpu.other("server"),
        {st: statistics.fmean(getattr(tm, st) for _, tm in inproc) * 1000 for st in STAGES},
        stage_means_ms(before, await server_stage_totals(session, server.base)),
    )


def raw_p50_ms(port: int, data: bytes, duration: float) -> float:
    client = RawClient(port, "/image", data)
    try:
        for _ in range(5):
            client.post()
        took: list[float] = []
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            took.append(client.post())
        return statistics.median(took) * 1000
    finally:
        client.close()


# ------------------------------------------------------------------------------------------ the runs


@dataclass(frozen=True, slots=True)
class Setup:
    """What was measured, and on what."""

    date: datetime
    machine: Machine
    model: Path  # as given (relative to the repository root unless absolute)
    photo: str
    image_bytes: Mapping[str, int]  # size name -> JPEG bytes
    workers: int  # the server's inference workers, and the in-process limit's threads
    max_inflight: int
    backend_threads: int  # per inference
    server_args: tuple[str, ...]
    concurrency: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ServerRuns:
    """Everything measured against the real server (and in this process while it sat idle)."""

    ready: Mapping[str, object]  # the server's GET /health/ready answer
    limits: Mapping[str, Limit]  # size -> in-process limit
    points: Mapping[str, Mapping[int, LoadResult]]  # size -> concurrency -> POST /image
    paired: Mapping[str, Paired]  # size -> added latency at concurrency 1
    overhead: Mapping[int, LoadResult]  # concurrency -> GET /; empty with --no-client-overhead


@dataclass(frozen=True, slots=True)
class Floor:
    """POST /image against the null-predictor server."""

    points: Mapping[str, Mapping[int, LoadResult]]  # size -> concurrency (1 and 4) -> result
    minimal_p50_ms: Mapping[str, float]  # size -> p50 at concurrency 1 with the minimal client


@dataclass(frozen=True, slots=True)
class HttpRun:
    setup: Setup
    server: ServerRuns
    floor: Floor | None  # None with --no-http-floor


async def bench_http(
    args: argparse.Namespace,
    images: Mapping[str, bytes],
    server: ServeProcess,
    ready: Mapping[str, object],
    predictor: Predictor,
    workers: int,
) -> ServerRuns:
    """Per image size: the in-process limit, the HTTP points, the in-process limit again (averaged)."""

    def limits(data: bytes) -> tuple[InProcess, InProcess]:
        one, many = (
            best_inprocess(predictor, data, n, args.duration / 2, args.warmup / 2, args.repeat)
            for n in (1, workers)
        )
        return one, many

    connector = aiohttp.TCPConnector(limit=max(args.concurrency), limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Open the keep-alive connections once before measuring.
        async def touch() -> None:
            async with session.get(server.base + "/") as resp:
                await resp.read()

        await asyncio.gather(*(touch() for _ in range(max(args.concurrency))))
        inproc: dict[str, Limit] = {}
        paired: dict[str, Paired] = {}
        points: dict[str, dict[int, LoadResult]] = {}
        for name, data in images.items():
            before = await asyncio.to_thread(limits, data)
            progress(inprocess_line(name, "before", before))
            points[name] = {}
            for c in args.concurrency:
                r = await least_disturbed_load(
                    session, server, "POST", "/image", data, c, args.duration, args.warmup, args.repeat
                )
                points[name][c] = r
                progress(point_line(name, c, r))
            paired[name] = await paired_latency(session, server, predictor, data, args.duration)
            progress(paired_line(name, paired[name]))
            after = await asyncio.to_thread(limits, data)
            progress(inprocess_line(name, "after", after))
            inproc[name] = Limit.of(before, after)
        overhead: dict[int, LoadResult] = {}
        if not args.no_client_overhead:
            for c in args.concurrency:
                duration, warmup = max(1.0, args.duration / 2), min(args.warmup, 0.5)
                r = await least_disturbed_load(
                    session, server, "GET", "/", None, c, duration, warmup, args.repeat
                )
                overhead[c] = r
                progress(overhead_line(c, r))
    return ServerRuns(ready, inproc, points, paired, overhead)


async def http_floor(args: argparse.Namespace, images: Mapping[str, bytes], server: ServeProcess) -> Floor:
    """POST /image against the null-predictor server at concurrency 1 and the target concurrency, and
    at concurrency 1 with the minimal client."""
    points: dict[str, dict[int, LoadResult]] = {}
    minimal: dict[str, float] = {}
    duration, warmup = max(1.0, args.duration / 2), min(args.warmup, 0.5)
    connector = aiohttp.TCPConnector(limit=TARGET_CONCURRENCY, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for name, data in images.items():
            points[name] = {}
            for c in (1, TARGET_CONCURRENCY):
                r = await least_disturbed_load(
                    session, server, "POST", "/image", data, c, duration, warmup, args.repeat
                )
                points[name][c] = r
                progress(floor_line(name, c, r))
            minimal[name] = await asyncio.to_thread(raw_p50_ms, server.port, data, duration)
            progress(floor_minimal_line(name, minimal[name]))
    return Floor(points, minimal)


def measure(args: argparse.Namespace, model: Path) -> HttpRun:
    machine = Machine.probe(package_versions("aiohttp", "onnxruntime", "pillow", "numpy"))
    photo = source_photo(model, args.image)
    images = {name: make_jpeg(photo, size) for name, size in SIZES.items()}
    # In-process limit: the server's own worker count and predictor options, measured in this process
    # before and after each size's HTTP runs (while the server process sits idle).
    settings = build_settings({"model": {"path": model, "device": "cpu"}})
    workers = settings.server.inference_workers or os.cpu_count() or 1  # as serve sizes its executor
    options = predictor_options(settings, workers)
    setup = Setup(
        date=datetime.now(UTC),
        machine=machine,
        model=args.model,
        photo=photo.name,
        image_bytes={name: len(data) for name, data in images.items()},
        workers=workers,
        max_inflight=settings.server.max_inflight or 4 * workers,  # serve's default: 4 per worker
        backend_threads=options.threads,
        server_args=tuple(args.server_arg),
        concurrency=tuple(args.concurrency),
    )
    for line in setup_lines(setup):
        progress(line)

    predictor = Predictor.load(model, options)
    try:
        with ServeProcess(lambda port: serve_command(model, port, args.server_arg)) as server:
            ready = server.wait_ready()
            runs = asyncio.run(bench_http(args, images, server, ready, predictor, workers))
    finally:
        predictor.close()
    floor = None
    if not args.no_http_floor:
        null_server = [
            sys.executable,
            "-m",
            "benchmarks.null_server",
            "--model",
            str(model),
            "--image",
            str(photo),
        ]
        with ServeProcess(lambda port: [*null_server, "--port", str(port)]) as server:
            server.wait_ready()
            if NULL_PREDICTOR_MARKER not in server.log():
                raise RuntimeError(
                    f"benchmarks/null_server.py did not replace the predictor:\n{server.log()}"
                )
            floor = asyncio.run(http_floor(args, images, server))
    return HttpRun(setup, runs, floor)


# -------------------------------------------------------------------------------------------- report


def fmt_errors(errors: Mapping[str, int]) -> str:
    if not errors:
        return "0"
    return f"{sum(errors.values())} (" + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + ")"


def fmt_stages(stages: Mapping[str, float]) -> str:
    if not stages:
        return "-"
    return " / ".join(f"{stages[st]:.2f}" for st in STAGES) + f" = {sum(stages.values()):.2f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def cpu_efficiency(limit: InProcess, r: LoadResult) -> float:
    if not r.requests_per_s or not r.server_cores or not limit.images_per_s:
        return NAN
    return (limit.cpu_cores / limit.images_per_s) / (r.server_cores / r.requests_per_s)


def setup_lines(s: Setup) -> list[str]:
    return [
        f"date: {s.date.strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {s.machine.describe()}",
        f"model: {s.model}",
        f"images: from {s.photo}, JPEG q90 + grain sigma {GRAIN_SIGMA}: "
        + ", ".join(f"{n} {size / 1024:.0f} KiB" for n, size in s.image_bytes.items()),
        f"server config: {s.workers} inference workers, max_inflight {s.max_inflight}, "
        f"{s.backend_threads} backend thread(s) per inference"
        + (f", extra serve args {list(s.server_args)}" if s.server_args else ""),
    ]


def inprocess_line(name: str, when: str, pair: tuple[InProcess, InProcess]) -> str:
    one, many = pair
    return (
        f"  in-process {name:>9} ({when:>6}): 1 worker {one.images_per_s:6.1f} img/s "
        f"(p50 {one.p50_ms:.2f} ms), "
        f"{many.workers} workers {many.images_per_s:6.1f} img/s ({many.cpu_cores:.2f} cores busy)"
    )


def point_line(name: str, c: int, r: LoadResult) -> str:
    return (
        f"  POST /image {name:>9} c={c:<3} {r.requests_per_s:7.1f} req/s  "
        f"p50 {r.p50_ms:6.2f} ms  errors {fmt_errors(r.errors)}"
    )


def paired_line(name: str, q: Paired) -> str:
    return (
        f"  paired c=1 {name:>9}: in-process p50 {q.inproc_p50_ms:.2f} ms, HTTP p50 "
        f"{q.raw_p50_ms:.2f} ms (minimal client) / {q.aiohttp_p50_ms:.2f} ms (aiohttp), {q.rounds} rounds"
    )


def overhead_line(c: int, r: LoadResult) -> str:
    return f"  GET  /             c={c:<3} {r.requests_per_s:7.1f} req/s"


def floor_line(name: str, c: int, r: LoadResult) -> str:
    return (
        f"  null predictor POST /image {name:>9} c={c:<3} {r.requests_per_s:7.1f} req/s  "
        f"p50 {r.p50_ms:6.2f} ms"
    )


def floor_minimal_line(name: str, p50_ms: float) -> str:
    return f"  null predictor POST /image {name:>9} c=1 minimal client p50 {p50_ms:.2f} ms"


def report(run: HttpRun) -> None:
    s, srv, floor = run.setup, run.server, run.floor
    floor_points = floor.points if floor else {}
    floor_minimal = floor.minimal_p50_ms if floor else {}
    sizes = list(s.image_bytes)

    # What was printed while measuring, in the same order.
    lines = setup_lines(s)
    for name in sizes:
        lim = srv.limits[name]
        lines.append(inprocess_line(name, "before", lim.before))
        lines += [point_line(name, c, r) for c, r in srv.points[name].items()]
        lines.append(paired_line(name, srv.paired[name]))
        lines.append(inprocess_line(name, "after", lim.after))
    lines += [overhead_line(c, r) for c, r in srv.overhead.items()]
    for name in floor_points:
        lines += [floor_line(name, c, r) for c, r in floor_points[name].items()]
        lines.append(floor_minimal_line(name, floor_minimal[name]))
    info = srv.ready.get("model")
    if isinstance(info, Mapping):
        lines.append(f"server ready: device {info.get('device')}, warm-up {info.get('warmup_ms')} ms")
    print("\n".join(lines))

    print()
    table = Table(
        Col("size", 9),
        Col("conc", 4),
        Col("req/s", 7, ".1f"),
        Col("p50 ms", 7, ".2f"),
        Col("p95 ms", 7, ".2f"),
        Col("p99 ms", 7, ".2f"),
        Col("errors", 6),
        Col("x inproc", 8, ".2f"),
        Col("cpu eff", 7, ".2f"),
        Col("x contnr", 8, ".2f"),
        Col("srv cores", 9, ".2f"),
        Col("cli cores", 9, ".2f"),
        Col("other", 5, ".2f"),
    )
    for name in sizes:
        many = srv.limits[name].many
        for c, r in srv.points[name].items():
            table.row(
                name,
                c,
                r.requests_per_s,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.error_count,
                ratio(r.requests_per_s, many.images_per_s),
                cpu_efficiency(many, r),
                r.requests_per_s / CONTAINER_RPS[name],
                r.server_cores,
                r.client_cores,
                r.other_cores,
            )
    table.print()
    print(
        "req/s and latencies: 200 answers only. x inproc: req/s / in-process images/s with the server's\n"
        "worker count. cpu eff: in-process CPU per image / server CPU per 200 answer (what x inproc would\n"
        "be with the client on other cores and the server using all of them). x contnr: req/s / the\n"
        "container's 89 (640x480) or 38 (1080p) req/s. srv/cli cores: CPU used by the server and by this\n"
        f"load generator (of {s.machine.nproc}); other: the rest of the machine (other processes, steal)."
    )

    print()
    table = Table(
        Col("size", 9),
        Col("1 worker img/s", 14, ".1f"),
        Col("p50 ms", 7, ".2f"),
        Col(f"{s.workers} workers img/s", 15, ".1f"),
        Col("cores", 5, ".2f"),
        Col("other", 5, ".2f"),
        Col("drift", 6, ".1%"),
    )
    for name in sizes:
        one, many = srv.limits[name].one, srv.limits[name].many
        table.row(
            name,
            one.images_per_s,
            one.p50_ms,
            many.images_per_s,
            many.cpu_cores,
            many.other_cores,
            many.drift,
        )
    table.print()
    print("in-process: Predictor.predict_bytes in threads, no HTTP; the mean of the runs before and after")
    print("the size's HTTP points (drift: how much those two differ).")

    print()
    print("added latency at concurrency 1, p50 (ms):")
    table = Table(
        Col("size", 9),
        Col("in-process", 10, ".2f"),
        Col("HTTP minimal", 12, ".2f"),
        Col("added", 6, ".2f"),
        Col("HTTP aiohttp", 12, ".2f"),
        Col("added", 6, ".2f"),
        Col("rounds", 6),
        Col("other", 5, ".2f"),
        Col("diff", 5, ".2f", sep=" | "),
        Col("naive", 6, ".2f"),
        Col("floor minimal", 13, ".2f", sep=" | "),
        Col("floor aiohttp", 13, ".2f"),
    )
    for name in sizes:
        http1 = srv.points[name].get(1)
        q = srv.paired[name]
        f_aio = floor_points[name][1].p50_ms if name in floor_points else NAN
        table.row(
            name,
            q.inproc_p50_ms,
            q.raw_p50_ms,
            q.added_ms,
            q.aiohttp_p50_ms,
            q.added_aiohttp_ms,
            q.rounds,
            q.other_cores,
            q.raw_diff_ms,
            http1.p50_ms - srv.limits[name].one.p50_ms if http1 else NAN,
            floor_minimal.get(name, NAN),
            f_aio,
        )
    table.print()
    print(
        "Rounds of one in-process prediction (worker thread), one request with a minimal blocking client\n"
        "and one with the aiohttp client, so all three see the same machine (its speed drifts by 10 % or\n"
        "more within seconds). added = HTTP p50 - in-process p50. diff: the median over rounds of\n"
        "(minimal-client request - in-process prediction), less sensitive to drift. naive: the c=1 table\n"
        "row minus the 1-worker in-process p50, measured seconds apart (drift included). floor: the same\n"
        "server with a predictor that answers at once: what HTTP alone costs."
    )

    print()
    print("mean ms per stage, decode / preprocess / inference / postprocess = total:")
    for name in sizes:
        one, many = srv.limits[name].one, srv.limits[name].many
        print(f"  {name:>9} in-process 1 worker   {fmt_stages(one.stages_ms)}")
        print(f"  {name:>9} in-process {many.workers} workers  {fmt_stages(many.stages_ms)}")
        for c, r in srv.points[name].items():
            print(
                f"  {name:>9} server c={c:<3}         {fmt_stages(r.server_stages_ms)}   "
                f"(server CPU {r.server_cpu_ms_per_req:.2f} ms per 200, of which event loop "
                f"{r.loop_cpu_ms_per_req:.2f})"
            )
        q = srv.paired[name]
        print(f"  {name:>9} paired in-process    {fmt_stages(q.inproc_stages_ms)}")
        print(f"  {name:>9} paired server c=1    {fmt_stages(q.server_stages_ms)}")
    print("  (server: its own edge_runtime_stage_seconds histograms, warm-up included)")

    if srv.overhead:
        print()
        print("client overhead: the same client against GET / (trivial handler), and its CPU per request")
        table = Table(
            Col("conc", 4),
            Col("GET / req/s", 11, ".1f"),
            Col("p50 ms", 7, ".2f"),
            Col("cli cores", 9, ".2f"),
            Col("cli us/req", 10, ".0f"),
            Col("errors", 6),
        )
        for c, r in srv.overhead.items():
            table.row(c, r.requests_per_s, r.p50_ms, r.client_cores, r.client_cpu_us_per_req, r.error_count)
        table.print()
        for name in sizes:
            print(
                f"  POST {name}: client CPU per 200 answer "
                + ", ".join(f"c={c} {r.client_cpu_us_per_req:.0f} us" for c, r in srv.points[name].items())
            )

    if floor_points:
        print()
        print(
            "HTTP floor: the same server app with a predictor that answers at once (no decode, no inference)"
        )
        table = Table(
            Col("size", 9),
            Col("conc", 4),
            Col("req/s", 8, ".1f"),
            Col("p50 ms", 7, ".2f"),
            Col("srv us/req", 10, ".0f"),
            Col("loop us/req", 11, ".0f"),
            Col("cli us/req", 10, ".0f"),
        )
        for name, by_conc in floor_points.items():
            for c, r in by_conc.items():
                table.row(
                    name,
                    c,
                    r.requests_per_s,
                    r.p50_ms,
                    r.server_cpu_ms_per_req * 1000,
                    r.loop_cpu_ms_per_req * 1000,
                    r.client_cpu_us_per_req,
                )
        table.print()
        print("  p50 at c=1: what HTTP alone adds with the aiohttp client (see the added-latency table).")

    print()
    print("targets:")
    for name in sizes:
        r4 = srv.points[name].get(TARGET_CONCURRENCY)
        many = srv.limits[name].many
        if r4 is not None:
            vs_in = ratio(r4.requests_per_s, many.images_per_s)
            vs_ct = r4.requests_per_s / CONTAINER_RPS[name]
            print(
                f"  {name} c={TARGET_CONCURRENCY}: {vs_in:.2f}x in-process (>= {TARGET_VS_INPROC}) "
                f"{verdict(vs_in >= TARGET_VS_INPROC)}; {vs_ct:.2f}x container (>= {TARGET_VS_CONTAINER}) "
                f"{verdict(vs_ct >= TARGET_VS_CONTAINER)}; server CPU efficiency "
                f"{cpu_efficiency(many, r4):.2f}"
            )
        q = srv.paired[name]
        print(
            f"  {name} added p50 latency (<= {TARGET_ADDED_P50_MS} ms): {q.added_ms:.2f} ms with the "
            f"minimal client {verdict(q.added_ms <= TARGET_ADDED_P50_MS)}; {q.added_aiohttp_ms:.2f} ms with "
            f"aiohttp's {verdict(q.added_aiohttp_ms <= TARGET_ADDED_P50_MS)}"
        )
    errors = Counter[str]()
    for by_conc in srv.points.values():
        for r in by_conc.values():
            errors.update(r.errors)
    if errors:
        print(f"  non-200 answers / client errors: {fmt_errors(errors)}")
    noisy = [r.other_cores for by_conc in srv.points.values() for r in by_conc.values()]
    noisy += [x.other_cores for lim in srv.limits.values() for x in (lim.one, lim.many)]
    noisy += [q.other_cores for q in srv.paired.values()]
    noisy += [r.other_cores for by_conc in floor_points.values() for r in by_conc.values()]
    if max(noisy) > QUIET_CORES:
        print(f"  WARNING: other processes used up to {max(noisy):.2f} cores during a measurement")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("http_bench", __doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="export folder (relative to repo)")
    parser.add_argument("--image", type=Path, help="source photo (default: a test-*.jpg next to the model)")
    parser.add_argument("--duration", type=float, help="seconds measured per point (default 5; --quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per point (default 1; --quick 0.25)")
    parser.add_argument(
        "--concurrency",
        type=lambda s: sorted({int(x) for x in s.split(",") if x.strip()}),
        default=[1, 4, 16],
        help="comma-separated client concurrencies (default 1,4,16)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for `edge_runtime serve` (repeatable, e.g. --server-arg=--max-inflight=32)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each point up to N times and keep the run least disturbed by other processes "
        f"(stops early once they used < {QUIET_CORES} core)",
    )
    parser.add_argument("--no-client-overhead", action="store_true", help="skip the GET / runs")
    parser.add_argument(
        "--no-http-floor",
        action="store_true",
        help="skip the runs against a server whose predictor is a no-op",
    )
    add_quick_and_json(
        parser, "every section with short points (--duration 1 --warmup 0.25): to check that it runs"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 0.25 if args.quick else 1.0
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    model = model_folder(args.model)
    return report_and_save(measure(args, model), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
