"""HTTP benchmark: `POST /image` through the real server against the in-process limit and the container.

    .venv/bin/python benchmarks/http_bench.py [--model PATH] [--duration S] [--concurrency 1,4,16]

1. Makes two JPEGs in memory (640x480 and 1920x1080, quality 90) from one of the model's test photos.
2. In-process limit: Predictor.predict_bytes (decode + preprocess + inference + postprocess) in as many
   threads as the server's inference executor, with the same predictor options, no HTTP; measured
   before and after each size's HTTP runs (this machine's speed drifts) and averaged.
3. Real server: `python -m edge_runtime serve` as a separate process on a free loopback port; an aiohttp
   keep-alive client (closed loop) at each concurrency, for a fixed duration after a warm-up.
4. Added latency at concurrency 1: rounds of one in-process prediction, one request with a minimal
   blocking client and one with aiohttp's, so that all see the same machine.
5. Client overhead: the same client against the trivial `GET /`, and its CPU time per request.
6. HTTP floor: the same server app with a predictor that answers at once (this script's own mode).

The client runs on the same cores as the server, so every HTTP number includes its cost; the tables show
how much CPU it took, and how much other processes took (a warning is printed above 0.1 core). Only
loopback traffic; server processes are always terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_runtime.app import capacity_for, predictor_options  # noqa: E402
from edge_runtime.domain import StageTimings  # noqa: E402
from edge_runtime.engine import Predictor, PredictorOptions  # noqa: E402
from edge_runtime.settings import Settings, build_settings  # noqa: E402

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


@dataclass
class InProcess:
    workers: int
    images_per_s: float
    p50_ms: float  # per-image wall time (what a request at concurrency 1 would see)
    cpu_cores: float  # this process's CPU seconds / wall seconds
    other_cores: float  # the rest of the machine (other processes) during the window
    stages_ms: dict[str, float]  # mean per stage, from the Predictor's own timings
    drift: float = 0.0  # |before - after| / mean images/s, when measured on both sides of the HTTP runs


def merge_inprocess(a: InProcess, b: InProcess) -> InProcess:
    """The mean of the measurements before and after the HTTP runs: the machine's speed drifts."""
    mean = (a.images_per_s + b.images_per_s) / 2
    return InProcess(
        a.workers,
        mean,
        (a.p50_ms + b.p50_ms) / 2,
        (a.cpu_cores + b.cpu_cores) / 2,
        max(a.other_cores, b.other_cores),
        {st: (a.stages_ms.get(st, 0.0) + b.stages_ms.get(st, 0.0)) / 2 for st in STAGES},
        abs(a.images_per_s - b.images_per_s) / mean if mean else 0.0,
    )


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
    t0, cpu0, busy0 = time.perf_counter(), time.process_time(), machine_busy_seconds()
    time.sleep(duration)
    t1, cpu1, busy1 = time.perf_counter(), time.process_time(), machine_busy_seconds()
    stop.set()
    for t in threads:
        t.join()
    finished = [x for d in done for x in d if t0 <= x[1] <= t1]
    whole = [x for x in finished if x[0] >= t0]
    wall = t1 - t0
    return InProcess(
        workers,
        len(finished) / wall,
        statistics.median(e - s for s, e, _ in whole) * 1000 if whole else float("nan"),
        (cpu1 - cpu0) / wall,
        (busy1 - busy0 - (cpu1 - cpu0)) / wall,
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


# ------------------------------------------------------------------------------------------ the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int, main_thread_only: bool = False) -> float:
    """utime + stime of a process (all threads, or only its main thread: the server's event loop) from
    /proc; NaN where /proc is not there."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread_only else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; /proc/stat), NaN where it is not there."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


_STAGE_LINE = re.compile(
    r'^edge_runtime_stage_seconds_(sum|count)\{source="http",stage="(\w+)"\} (\S+)$', re.M
)


async def server_stage_totals(session: aiohttp.ClientSession, base: str) -> dict[tuple[str, str], float]:
    """(stage, "sum" | "count") -> value of the server's own per-stage histograms (source http)."""
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    return {(m[2], m[1]): float(m[3]) for m in _STAGE_LINE.finditer(text)}


def stage_means_ms(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, float]:
    count = after.get(("total", "count"), 0.0) - before.get(("total", "count"), 0.0)
    if count <= 0:
        return {}
    return {st: (after.get((st, "sum"), 0.0) - before.get((st, "sum"), 0.0)) / count * 1000 for st in STAGES}


class Server:
    """`python -m edge_runtime serve` on a free loopback port, in its own process."""

    def __init__(self, model: Path, extra_args: list[str], null_predictor: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        if null_predictor:  # this script's own mode below: the same app, predict_bytes answers at once
            cmd = [sys.executable, str(Path(__file__).resolve()), "--null-predictor-server", str(self.port)]
            cmd += ["--model", str(model)]
        else:
            cmd = [sys.executable, "-m", "edge_runtime", "--log-level", "WARNING", "serve"]
            cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--model", str(model), "--device", "cpu"]
        self.cmd = [*cmd, *extra_args]
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    async def wait_ready(self, timeout: float = 90.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    async with session.get(f"{self.base}/health/ready") as resp:
                        if resp.status == 200:
                            return dict(await resp.json())
                        body = await resp.json()
                        if body.get("status") == "failed":
                            raise RuntimeError(f"model failed to load: {body.get('error')}")
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout:.0f} s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------ the client


@dataclass
class LoadResult:
    requests_per_s: float  # 200 answers completed in the window, per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok: int
    errors: Counter[str] = field(default_factory=Counter)  # status code or exception name -> count
    client_cores: float = 0.0  # this process's CPU seconds / wall seconds
    server_cores: float = 0.0
    loop_cores: float = 0.0  # the server's main thread (event loop, HTTP, JSON, metrics)
    other_cores: float = 0.0  # everything else on the machine
    server_stages_ms: dict[str, float] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def client_cpu_us_per_req(self) -> float:
        return self.client_cores / self.requests_per_s * 1e6 if self.requests_per_s else float("nan")

    @property
    def server_cpu_ms_per_req(self) -> float:
        return self.server_cores / self.requests_per_s * 1e3 if self.requests_per_s else float("nan")

    @property
    def loop_cpu_ms_per_req(self) -> float:
        return self.loop_cores / self.requests_per_s * 1e3 if self.requests_per_s else float("nan")


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

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        t0, cpu0, srv0, loop0, busy0 = (
            time.perf_counter(),
            time.process_time(),
            cpu_seconds(server_pid),
            cpu_seconds(server_pid, main_thread_only=True),
            machine_busy_seconds(),
        )
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        t1, cpu1, srv1, loop1, busy1 = (
            time.perf_counter(),
            time.process_time(),
            cpu_seconds(server_pid),
            cpu_seconds(server_pid, main_thread_only=True),
            machine_busy_seconds(),
        )
        await asyncio.gather(*tasks)
    finally:  # interrupted: stop the workers before the session closes under them
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    wall = t1 - t0
    in_window = [(s, e, st) for s, e, st in samples if t0 <= e <= t1]
    good = [(s, e) for s, e, st in in_window if st == "200"]
    latencies = [(e - s) * 1000 for s, e in good if s >= t0]
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]).tolist() if latencies else [float("nan")] * 3
    client, server = (cpu1 - cpu0) / wall, (srv1 - srv0) / wall
    return LoadResult(
        requests_per_s=len(good) / wall,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        ok=len(good),
        errors=Counter(st for *_, st in in_window if st != "200"),
        client_cores=client,
        server_cores=server,
        loop_cores=(loop1 - loop0) / wall,
        other_cores=(busy1 - busy0) / wall - client - server,
    )


# ----------------------------------------------------------------------------------------------- main


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc={os.cpu_count()}, CPU {model}, Python {platform.python_version()}, load avg {load}"


def fmt_errors(errors: Counter[str]) -> str:
    if not errors:
        return "0"
    return f"{sum(errors.values())} (" + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + ")"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


async def measure(
    session: aiohttp.ClientSession,
    server: Server,
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
            session, method, server.base + path, body, concurrency, duration, warmup, server.proc.pid
        )
        r.server_stages_ms = stage_means_ms(before, await server_stage_totals(session, server.base))
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


@dataclass
class Paired:
    rounds: int
    inproc_p50_ms: float
    raw_p50_ms: float  # RawClient
    aiohttp_p50_ms: float  # the load generator's client
    raw_diff_ms: float  # median over rounds of (minimal-client request - in-process prediction)
    other_cores: float
    inproc_stages_ms: dict[str, float]  # means
    server_stages_ms: dict[str, float]

    @property
    def added_ms(self) -> float:
        return self.raw_p50_ms - self.inproc_p50_ms

    @property
    def added_aiohttp_ms(self) -> float:
        return self.aiohttp_p50_ms - self.inproc_p50_ms


async def paired_latency(
    session: aiohttp.ClientSession, server: Server, predictor: Predictor, data: bytes, duration: float
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
    t0, cpu0, srv0 = time.perf_counter(), time.process_time(), cpu_seconds(server.proc.pid)
    busy0 = machine_busy_seconds()
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
    wall = time.perf_counter() - t0
    used = (time.process_time() - cpu0) + (cpu_seconds(server.proc.pid) - srv0)
    other = (machine_busy_seconds() - busy0 - used) / wall
    return Paired(
        len(http),
        statistics.median(t for t, _ in inproc) * 1000,
        statistics.median(raw) * 1000,
        statistics.median(http) * 1000,
        statistics.median(r - t for r, (t, _) in zip(raw, inproc, strict=True)) * 1000,
        other,
        {st: statistics.fmean(getattr(tm, st) for _, tm in inproc) * 1000 for st in STAGES},
        stage_means_ms(before, await server_stage_totals(session, server.base)),
    )


def serve_null_predictor(port: int, model: Path) -> None:
    """The server's own app (routes, middleware, executor, metrics, JSON) with a Predictor whose
    predict_bytes returns one canned result: what HTTP costs when inference costs nothing."""
    from aiohttp import web

    from edge_runtime.app import create_app

    def loader(path: Path, options: PredictorOptions) -> Predictor:
        predictor = Predictor.load(path, options)
        canned = predictor.predict_bytes(make_jpeg(source_photo(path, None), SIZES["640x480"]))
        predictor.predict_bytes = lambda data: canned  # type: ignore[method-assign]
        return predictor

    settings = build_settings({"model": {"path": model, "device": "cpu"}, "log_level": "WARNING"})
    app = create_app(settings, model, loader=loader)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, shutdown_timeout=2)


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


async def http_floor(
    args: argparse.Namespace, images: dict[str, bytes], model: Path
) -> tuple[dict[tuple[str, int], LoadResult], dict[str, float]]:
    """POST /image against the null-predictor server at concurrency 1 and the target concurrency, and
    at concurrency 1 with the minimal client."""
    server = Server(model, [], null_predictor=True)
    try:
        await server.wait_ready()
        results: dict[tuple[str, int], LoadResult] = {}
        raw: dict[str, float] = {}
        connector = aiohttp.TCPConnector(limit=TARGET_CONCURRENCY, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for name, data in images.items():
                for c in (1, TARGET_CONCURRENCY):
                    r = await measure(
                        session,
                        server,
                        "POST",
                        "/image",
                        data,
                        c,
                        max(1.0, args.duration / 2),
                        min(args.warmup, 0.5),
                        args.repeat,
                    )
                    results[name, c] = r
                    print(
                        f"  null predictor POST /image {name:>9} c={c:<3} {r.requests_per_s:7.1f} req/s  "
                        f"p50 {r.p50_ms:6.2f} ms",
                        flush=True,
                    )
                raw[name] = await asyncio.to_thread(
                    raw_p50_ms, server.port, data, max(1.0, args.duration / 2)
                )
                print(f"  null predictor POST /image {name:>9} c=1 minimal client p50 {raw[name]:.2f} ms")
        return results, raw
    finally:
        server.stop()


async def bench_http(
    args: argparse.Namespace, images: dict[str, bytes], model: Path, predictor: Predictor, workers: int
) -> tuple[
    dict[str, tuple[InProcess, InProcess]],
    dict[tuple[str, int], LoadResult],
    dict[int, LoadResult],
    dict[str, object],
]:
    """Per image size: the in-process limit, the HTTP points, the in-process limit again (averaged)."""

    def limits(data: bytes) -> tuple[InProcess, InProcess]:
        one, many = (
            best_inprocess(predictor, data, n, args.duration / 2, args.warmup / 2, args.repeat)
            for n in (1, workers)
        )
        return one, many

    server = Server(model, args.server_arg)
    try:
        ready = await server.wait_ready()
        connector = aiohttp.TCPConnector(limit=max(args.concurrency), limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            # Open the keep-alive connections once before measuring.
            async def touch() -> None:
                async with session.get(server.base + "/") as resp:
                    await resp.read()

            await asyncio.gather(*(touch() for _ in range(max(args.concurrency))))
            inproc: dict[str, tuple[InProcess, InProcess]] = {}
            paired: dict[str, Paired] = {}
            results: dict[tuple[str, int], LoadResult] = {}
            for name, data in images.items():
                before = await asyncio.to_thread(limits, data)
                print_inprocess(name, "before", before)
                for c in args.concurrency:
                    r = await measure(
                        session, server, "POST", "/image", data, c, args.duration, args.warmup, args.repeat
                    )
                    results[name, c] = r
                    print(
                        f"  POST /image {name:>9} c={c:<3} {r.requests_per_s:7.1f} req/s  "
                        f"p50 {r.p50_ms:6.2f} ms  errors {fmt_errors(r.errors)}",
                        flush=True,
                    )
                paired[name] = await paired_latency(session, server, predictor, data, args.duration)
                q = paired[name]
                print(
                    f"  paired c=1 {name:>9}: in-process p50 {q.inproc_p50_ms:.2f} ms, HTTP p50 "
                    f"{q.raw_p50_ms:.2f} ms (minimal client) / {q.aiohttp_p50_ms:.2f} ms (aiohttp), "
                    f"{q.rounds} rounds",
                    flush=True,
                )
                after = await asyncio.to_thread(limits, data)
                print_inprocess(name, "after", after)
                inproc[name] = (merge_inprocess(before[0], after[0]), merge_inprocess(before[1], after[1]))
            overhead: dict[int, LoadResult] = {}
            if not args.no_client_overhead:
                for c in args.concurrency:
                    r = await measure(
                        session,
                        server,
                        "GET",
                        "/",
                        None,
                        c,
                        max(1.0, args.duration / 2),
                        min(args.warmup, 0.5),
                        args.repeat,
                    )
                    overhead[c] = r
                    print(f"  GET  /             c={c:<3} {r.requests_per_s:7.1f} req/s", flush=True)
        return inproc, paired, results, overhead, ready
    finally:
        server.stop()


def print_inprocess(name: str, when: str, pair: tuple[InProcess, InProcess]) -> None:
    one, many = pair
    print(
        f"  in-process {name:>9} ({when:>6}): 1 worker {one.images_per_s:6.1f} img/s "
        f"(p50 {one.p50_ms:.2f} ms), "
        f"{many.workers} workers {many.images_per_s:6.1f} img/s ({many.cpu_cores:.2f} cores busy)",
        flush=True,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="export folder (relative to repo)")
    parser.add_argument("--image", type=Path, help="source photo (default: a test-*.jpg next to the model)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per point (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per point (default 1)")
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
    parser.add_argument("--null-predictor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    return args


def cpu_efficiency(limit: InProcess, r: LoadResult) -> float:
    if not r.requests_per_s or not r.server_cores or not limit.images_per_s:
        return float("nan")
    return (limit.cpu_cores / limit.images_per_s) / (r.server_cores / r.requests_per_s)


def fmt_stages(stages: dict[str, float]) -> str:
    if not stages:
        return "-"
    return " / ".join(f"{stages[st]:.2f}" for st in STAGES) + f" = {sum(stages.values()):.2f}"


def _exit_on_signal(signum: int, frame: object) -> None:
    # SIGTERM/SIGHUP would end the process without running `finally`: the server would outlive us.
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_args()
    if args.null_predictor_server is not None:
        serve_null_predictor(args.null_predictor_server, (REPO / args.model).resolve())
        return 0
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a script
        signal.signal(signal.SIGINT, signal.default_int_handler)
    model = (args.model if args.model.is_absolute() else REPO / args.model).resolve()
    if not model.exists():
        raise SystemExit(f"model not found: {model}")

    print(f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"machine: {machine()}")
    photo = source_photo(model, args.image)
    images = {name: make_jpeg(photo, size) for name, size in SIZES.items()}
    print(f"model: {args.model}")
    print(
        f"images: from {photo.name}, JPEG q90 + grain sigma {GRAIN_SIGMA}: "
        + ", ".join(f"{n} {len(d) / 1024:.0f} KiB" for n, d in images.items())
    )

    # In-process limit: the server's own worker count and predictor options, measured in this process
    # before and after each size's HTTP runs (while the server process sits idle).
    settings: Settings = build_settings({"model": {"path": model, "device": "cpu"}})
    capacity = capacity_for(settings)
    options = predictor_options(settings, capacity.workers)
    print(
        f"server config: {capacity.workers} inference workers, max_inflight {capacity.max_inflight}, "
        f"{options.threads} backend thread(s) per inference"
        + (f", extra serve args {args.server_arg}" if args.server_arg else "")
    )
    predictor = Predictor.load(model, options)
    try:
        inproc, paired, results, overhead, ready = asyncio.run(
            bench_http(args, images, model, predictor, capacity.workers)
        )
    finally:
        predictor.close()
    floor, floor_raw = ({}, {}) if args.no_http_floor else asyncio.run(http_floor(args, images, model))
    info = ready.get("model")
    if isinstance(info, dict):
        print(f"server ready: device {info.get('device')}, warm-up {info.get('warmup_ms')} ms")
    report(args, images, inproc, paired, results, overhead, floor, floor_raw)
    return 0


def report(
    args: argparse.Namespace,
    images: dict[str, bytes],
    inproc: dict[str, tuple[InProcess, InProcess]],
    paired: dict[str, Paired],
    results: dict[tuple[str, int], LoadResult],
    overhead: dict[int, LoadResult],
    floor: dict[tuple[str, int], LoadResult],
    floor_raw: dict[str, float],
) -> None:
    cores = os.cpu_count() or 1
    print()
    print(
        f"{'size':>9} {'conc':>4} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'x inproc':>8} {'cpu eff':>7} {'x contnr':>8} {'srv cores':>9} {'cli cores':>9} {'other':>5}"
    )
    for name in images:
        limit = inproc[name][1].images_per_s
        for c in args.concurrency:
            r = results[name, c]
            print(
                f"{name:>9} {c:>4} {r.requests_per_s:7.1f} {r.p50_ms:7.2f} {r.p95_ms:7.2f} {r.p99_ms:7.2f} "
                f"{r.error_count:>6} {r.requests_per_s / limit:8.2f} "
                f"{cpu_efficiency(inproc[name][1], r):7.2f} "
                f"{r.requests_per_s / CONTAINER_RPS[name]:8.2f} {r.server_cores:9.2f} {r.client_cores:9.2f} "
                f"{r.other_cores:5.2f}"
            )
    print(
        "req/s and latencies: 200 answers only. x inproc: req/s / in-process images/s with the server's\n"
        "worker count. cpu eff: in-process CPU per image / server CPU per 200 answer (what x inproc would\n"
        "be with the client on other cores and the server using all of them). x contnr: req/s / the\n"
        "container's 89 (640x480) or 38 (1080p) req/s. srv/cli cores: CPU used by the server and by this\n"
        f"load generator (of {cores}); other: the rest of the machine (other processes, steal)."
    )

    print()
    workers = f"{next(iter(inproc.values()))[1].workers} workers"
    print(
        f"{'size':>9} {'1 worker img/s':>14} {'p50 ms':>7} {workers + ' img/s':>15} {'cores':>5} "
        f"{'other':>5} {'drift':>6}"
    )
    for name in images:
        one, many = inproc[name]
        print(
            f"{name:>9} {one.images_per_s:14.1f} {one.p50_ms:7.2f} {many.images_per_s:15.1f} "
            f"{many.cpu_cores:5.2f} {many.other_cores:5.2f} {many.drift:6.1%}"
        )
    print("in-process: Predictor.predict_bytes in threads, no HTTP; the mean of the runs before and after")
    print("the size's HTTP points (drift: how much those two differ).")

    print()
    print("added latency at concurrency 1, p50 (ms):")
    print(
        f"{'size':>9} {'in-process':>10} {'HTTP minimal':>12} {'added':>6} {'HTTP aiohttp':>12} {'added':>6} "
        f"{'rounds':>6} {'other':>5} | {'diff':>5} {'naive':>6} | {'floor minimal':>13} {'floor aiohttp':>13}"
    )
    for name in images:
        one = inproc[name][0]
        http1 = results.get((name, 1))
        naive = http1.p50_ms - one.p50_ms if http1 else float("nan")
        q = paired[name]
        f_aio = floor[name, 1].p50_ms if (name, 1) in floor else float("nan")
        print(
            f"{name:>9} {q.inproc_p50_ms:10.2f} {q.raw_p50_ms:12.2f} {q.added_ms:6.2f} "
            f"{q.aiohttp_p50_ms:12.2f} {q.added_aiohttp_ms:6.2f} {q.rounds:6} {q.other_cores:5.2f} | "
            f"{q.raw_diff_ms:5.2f} {naive:6.2f} | "
            f"{floor_raw.get(name, float('nan')):13.2f} {f_aio:13.2f}"
        )
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
    for name in images:
        one, many = inproc[name]
        print(f"  {name:>9} in-process 1 worker   {fmt_stages(one.stages_ms)}")
        print(f"  {name:>9} in-process {many.workers} workers  {fmt_stages(many.stages_ms)}")
        for c in args.concurrency:
            r = results[name, c]
            print(
                f"  {name:>9} server c={c:<3}         {fmt_stages(r.server_stages_ms)}   "
                f"(server CPU {r.server_cpu_ms_per_req:.2f} ms per 200, of which event loop "
                f"{r.loop_cpu_ms_per_req:.2f})"
            )
        q = paired[name]
        print(f"  {name:>9} paired in-process    {fmt_stages(q.inproc_stages_ms)}")
        print(f"  {name:>9} paired server c=1    {fmt_stages(q.server_stages_ms)}")
    print("  (server: its own edge_runtime_stage_seconds histograms, warm-up included)")

    if overhead:
        print()
        print("client overhead: the same client against GET / (trivial handler), and its CPU per request")
        print(
            f"{'conc':>4} {'GET / req/s':>11} {'p50 ms':>7} {'cli cores':>9} {'cli us/req':>10} {'errors':>6}"
        )
        for c, r in overhead.items():
            print(
                f"{c:>4} {r.requests_per_s:11.1f} {r.p50_ms:7.2f} {r.client_cores:9.2f} "
                f"{r.client_cpu_us_per_req:10.0f} {r.error_count:>6}"
            )
        for name in images:
            print(
                f"  POST {name}: client CPU per 200 answer "
                + ", ".join(
                    f"c={c} {results[name, c].client_cpu_us_per_req:.0f} us" for c in args.concurrency
                )
            )

    if floor:
        print()
        print(
            "HTTP floor: the same server app with a predictor that answers at once (no decode, no inference)"
        )
        print(
            f"{'size':>9} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'srv us/req':>10} {'loop us/req':>11} "
            f"{'cli us/req':>10}"
        )
        for (name, c), r in floor.items():
            print(
                f"{name:>9} {c:>4} {r.requests_per_s:8.1f} {r.p50_ms:7.2f} "
                f"{r.server_cpu_ms_per_req * 1000:10.0f} {r.loop_cpu_ms_per_req * 1000:11.0f} "
                f"{r.client_cpu_us_per_req:10.0f}"
            )
        print("  p50 at c=1: what HTTP alone adds with the aiohttp client (see the added-latency table).")

    print()
    print("targets:")
    for name in images:
        r4 = results.get((name, TARGET_CONCURRENCY))
        if r4 is not None:
            vs_in = r4.requests_per_s / inproc[name][1].images_per_s
            vs_ct = r4.requests_per_s / CONTAINER_RPS[name]
            print(
                f"  {name} c={TARGET_CONCURRENCY}: {vs_in:.2f}x in-process (>= {TARGET_VS_INPROC}) "
                f"{verdict(vs_in >= TARGET_VS_INPROC)}; {vs_ct:.2f}x container (>= {TARGET_VS_CONTAINER}) "
                f"{verdict(vs_ct >= TARGET_VS_CONTAINER)}; server CPU efficiency "
                f"{cpu_efficiency(inproc[name][1], r4):.2f}"
            )
        q = paired[name]
        print(
            f"  {name} added p50 latency (<= {TARGET_ADDED_P50_MS} ms): {q.added_ms:.2f} ms with the "
            f"minimal client {verdict(q.added_ms <= TARGET_ADDED_P50_MS)}; {q.added_aiohttp_ms:.2f} ms with "
            f"aiohttp's {verdict(q.added_aiohttp_ms <= TARGET_ADDED_P50_MS)}"
        )
    errors = Counter[str]()
    for r in results.values():
        errors.update(r.errors)
    if errors:
        print(f"  non-200 answers / client errors: {fmt_errors(errors)}")
    noisy = [r.other_cores for r in results.values()] + [x.other_cores for p in inproc.values() for x in p]
    noisy += [q.other_cores for q in paired.values()] + [r.other_cores for r in floor.values()]
    if max(noisy) > QUIET_CORES:
        print(f"  WARNING: other processes used up to {max(noisy):.2f} cores during a measurement")


if __name__ == "__main__":
    sys.exit(main())
