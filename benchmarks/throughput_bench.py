"""Throughput per core against the exported container (issue 17), every ratio measured in the same run.

    .venv/bin/python -m benchmarks.throughput_bench [--duration S] [--concurrency 1,4,16,64]
        [--batch-window-ms X] [--quick] [--json PATH]

The reference is benchmarks/container_replica.py: the container's pipeline (Pillow decode, its EXIF /
shorter-side BILINEAR / centre-crop / BGR recipe, its TFLite model from the DockerFile 2.2 export) in this
process, and the same pipeline behind a stdlib threaded HTTP server (one lock around its one interpreter:
the container's best case; the real one failed 43-66 % of requests at concurrency 4).

1. In-process, one worker thread, 640x480 and 1920x1080 JPEGs (made as http_bench makes them: a fixture
   photo, quality 90, mild grain): the replica, edge_runtime exact mode on the ONNX conversion of the same
   network and on the docker export's TFLite through the LiteRT backend, and fast mode (ONNX). Variants
   run in interleaved blocks (this machine's speed drifts by 10 % within seconds); per image wall time
   p50 / mean, CPU per image, stage means (edge_runtime's PredictionResult.timings; the replica times the
   same four stages), ratios against the replica.
2. Over HTTP: `edge_runtime serve` (exact, fast; with --batch-window-ms also both with
   EDGE_RUNTIME_SERVER__BATCH_WINDOW_MS at concurrency 4, 16, 64) and the replica server, each at each
   concurrency with a closed-loop aiohttp client (http_bench's), points interleaved across servers. ok
   req/s, errors (any non-200 answer or connection error), p50 / p95, ratios against the replica's best
   req/s of that size.
3. Added latency at concurrency 1 (http_bench's paired rounds: in-process prediction with the server's
   own predictor options, then one request) against the null-predictor floor (benchmarks/null_server.py).
4. The targets of issue 17, and whether each is met.

The client shares the cores with the servers; `other` is the CPU the rest of the machine used during a
measurement (other processes, e.g. tests run by someone else): a warning is printed above 0.1 core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from benchmarks.container_replica import (
    CONTAINER_FIXTURES,
    DOCKER_MODEL,
    ReplicaPredictor,
    container_max_dp,
    replica_command,
)
from benchmarks.harness.cli import add_quick_and_json, bench_parser, model_folder, report_and_save
from benchmarks.harness.machine import CpuMeter, Machine, package_versions
from benchmarks.harness.processes import REPO, ServeProcess, exit_on_signals, serve_command
from benchmarks.harness.stats import NAN, ratio
from benchmarks.harness.table import Col, Table, progress
from benchmarks.http_bench import (
    GRAIN_SIGMA,
    NULL_PREDICTOR_MARKER,
    QUIET_CORES,
    SIZES,
    STAGES,
    LoadResult,
    Paired,
    fmt_errors,
    generate_load,
    make_jpeg,
    paired_latency,
    raw_p50_ms,
    server_stage_totals,
    source_photo,
    stage_means_ms,
)
from edge_runtime.app import predictor_options
from edge_runtime.engine import Predictor
from edge_runtime.settings import build_settings

ONNX_MODEL = CONTAINER_FIXTURES  # the ONNX conversion of the docker export's network
# The container on the 2-core VM (issue 17's table): in-process ms per image, for comparison only.
ISSUE_REPLICA_MS = {"640x480": 8.7, "1920x1080": 22.8}
TARGET_INPROC = 1.3  # exact, in-process, one worker, x the replica per image (both sizes)
STRETCH_INPROC = 1.5
TARGET_HTTP_C4 = {"640x480": 2.6, "1920x1080": 2.2}  # exact at concurrency 4, x the replica's best req/s
TARGET_FAST_C4 = {"1920x1080": 4.0}  # fast at concurrency 4
TARGET_ADDED_SLACK_MS = 0.3  # added p50 at concurrency 1 <= the null-predictor floor + this
TARGET_CONCURRENCY = 4
BATCH_CONCURRENCY = (4, 16, 64)
REPLICA = "replica"


# ------------------------------------------------------------------------------------------ in-process


@dataclass(frozen=True, slots=True)
class Variant:
    """One in-process pipeline: what it is, and one prediction returning its four stage times."""

    name: str
    backend: str
    fidelity: str  # the spec's fidelity (edge_runtime) or "container"
    threads: str  # backend threads per inference
    predict: Callable[[bytes], tuple[float, float, float, float]]


@dataclass(frozen=True, slots=True)
class InProcess:
    variant: str
    backend: str
    fidelity: str
    threads: str
    images: int
    p50_ms: float  # per-image wall time
    mean_ms: float
    cpu_ms: float  # this process's CPU per image (backend threads included)
    other_cores: float  # the rest of the machine during the blocks, the most of any block
    stages_ms: Mapping[str, float]  # means


def run_block(variant: Variant, data: bytes, seconds: float) -> tuple[list[tuple[float, ...]], float, float]:
    """Predictions in one worker thread for `seconds`: (wall, 4 stages) per image, the process's CPU
    seconds and the rest of the machine's cores during the block."""
    samples: list[tuple[float, ...]] = []

    def loop() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            stages = variant.predict(data)
            samples.append((time.perf_counter() - start, *stages))

    meter = CpuMeter().start()
    worker = threading.Thread(target=loop, name=f"bench-{variant.name}")
    worker.start()
    worker.join()
    cpu = meter.stop()
    return samples, cpu.own * cpu.wall_s, cpu.other()


def measure_inprocess(
    variants: Sequence[Variant], data: bytes, rounds: int, block_s: float, warmup_s: float
) -> dict[str, InProcess]:
    """Interleaved: every round runs each variant for one block, so drift hits them all alike."""
    for v in variants:
        run_block(v, data, warmup_s)
    samples: dict[str, list[tuple[float, ...]]] = {v.name: [] for v in variants}
    cpu_s = dict.fromkeys(samples, 0.0)
    other = dict.fromkeys(samples, 0.0)
    for _ in range(rounds):
        for v in variants:
            got, cpu, rest = run_block(v, data, block_s)
            samples[v.name] += got
            cpu_s[v.name] += cpu
            other[v.name] = max(other[v.name], rest)
    out: dict[str, InProcess] = {}
    for v in variants:
        s = samples[v.name]
        out[v.name] = InProcess(
            v.name,
            v.backend,
            v.fidelity,
            v.threads,
            len(s),
            statistics.median(x[0] for x in s) * 1000,
            statistics.fmean(x[0] for x in s) * 1000,
            cpu_s[v.name] / len(s) * 1000,
            other[v.name],
            {st: statistics.fmean(x[1 + i] for x in s) * 1000 for i, st in enumerate(STAGES)},
        )
    return out


def replica_variant(replica: ReplicaPredictor) -> Variant:
    def predict(data: bytes) -> tuple[float, float, float, float]:
        t = replica.predict(data).timings
        return t.decode, t.preprocess, t.inference, t.postprocess

    return Variant(REPLICA, "TFLite (LiteRT)", "container", "default", predict)


def runtime_variant(name: str, predictor: Predictor, threads: int) -> Variant:
    def predict(data: bytes) -> tuple[float, float, float, float]:
        t = predictor.predict_bytes(data).timings
        return t.decode, t.preprocess, t.inference, t.postprocess

    fidelity = str(getattr(predictor.spec.preprocess, "fidelity", "exact (no fidelity field)"))
    backend = str(predictor.plan.backend)
    return Variant(name, backend, fidelity, str(threads or "default"), predict)


def max_shift(exact: Predictor, fast: Predictor, images: Sequence[bytes]) -> float:
    """The largest |p_fast - p_exact| over the images and labels (not issue 17's corpus: a sanity check)."""
    worst = 0.0
    for data in images:
        a = [p.probability for p in exact.predict_bytes(data).predictions]
        b = [p.probability for p in fast.predict_bytes(data).predictions]
        worst = max(worst, *(abs(x - y) for x, y in zip(a, b, strict=True)))
    return worst


# ---------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class Served:
    """One server under load: a name, its command's environment, the concurrencies it is measured at."""

    name: str
    env: Mapping[str, str]
    concurrency: tuple[int, ...]
    runtime: bool  # edge_runtime (has /metrics), not the replica


def served_command(model: Path, env: Mapping[str, str]) -> Callable[[int], list[str]]:
    """`env K=V ... python -m edge_runtime serve`: env execs, so the process id stays the server's."""

    def command(port: int) -> list[str]:
        prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
        return [*prefix, *serve_command(model, port)]

    return command


async def open_connections(session: aiohttp.ClientSession, base: str, n: int) -> None:
    async def touch() -> None:
        async with session.get(base + "/") as resp:
            await resp.read()

    await asyncio.gather(*(touch() for _ in range(n)))


_BATCH_LINE = re.compile(r"^edge_runtime_inference_batch_size_(sum|count)(?:\{[^}]*\})? (\S+)$", re.M)


async def batch_totals(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """(inputs, batches) so far from the server's micro-batch histogram; (0, 0) without one."""
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    totals = {"sum": 0.0, "count": 0.0}
    for m in _BATCH_LINE.finditer(text):
        totals[m[1]] += float(m[2])
    return totals["sum"], totals["count"]


async def measure_http(
    args: argparse.Namespace,
    images: Mapping[str, bytes],
    servers: Mapping[str, tuple[Served, ServeProcess]],
    batches: dict[str, dict[str, dict[int, float]]],
) -> dict[str, dict[str, dict[int, LoadResult]]]:
    """server -> size -> concurrency -> result; for each size and concurrency the servers in turn.
    `batches` gets server -> size -> concurrency -> mean inputs per micro-batch where the server batched."""
    sessions: dict[str, aiohttp.ClientSession] = {}
    out: dict[str, dict[str, dict[int, LoadResult]]] = {name: {} for name in servers}
    try:
        for name, (spec, proc) in servers.items():
            top = max(spec.concurrency)
            connector = aiohttp.TCPConnector(limit=top, limit_per_host=0)
            session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))
            sessions[name] = session
            await open_connections(session, proc.base, top)
        for size, data in images.items():
            for c in args.concurrency:
                for name, (spec, proc) in servers.items():
                    if c not in spec.concurrency:
                        continue
                    session = sessions[name]
                    warmup = args.warmup * (2 if c >= 16 else 1)
                    before = await server_stage_totals(session, proc.base) if spec.runtime else {}
                    batched0 = await batch_totals(session, proc.base) if spec.runtime else (0.0, 0.0)
                    r = await generate_load(
                        session, "POST", proc.base + "/image", data, c, args.duration, warmup, proc.pid
                    )
                    if spec.runtime:
                        after = await server_stage_totals(session, proc.base)
                        r = replace(r, server_stages_ms=stage_means_ms(before, after))
                        inputs1, count1 = await batch_totals(session, proc.base)
                        inputs, count = inputs1 - batched0[0], count1 - batched0[1]
                        if count > 0:
                            batches.setdefault(name, {}).setdefault(size, {})[c] = inputs / count
                    out[name].setdefault(size, {})[c] = r
                    progress(point_line(name, size, c, r))
    finally:
        for session in sessions.values():
            await session.close()
    return out


@dataclass(frozen=True, slots=True)
class Floor:
    aiohttp_p50_ms: float  # the null-predictor server at concurrency 1, the load generator's client
    minimal_p50_ms: float  # the same with http_bench's minimal blocking client
    other_cores: float


async def measure_latency(
    args: argparse.Namespace,
    images: Mapping[str, bytes],
    exact: ServeProcess,
    null: ServeProcess,
    predictor: Predictor,
) -> tuple[dict[str, Paired], dict[str, Floor]]:
    paired: dict[str, Paired] = {}
    floors: dict[str, Floor] = {}
    async with aiohttp.ClientSession() as session:
        await open_connections(session, exact.base, 1)
        await open_connections(session, null.base, 1)
        for size, data in images.items():
            paired[size] = await paired_latency(session, exact, predictor, data, args.duration)
            progress(
                f"  paired c=1 {size:>9}: in-process p50 {paired[size].inproc_p50_ms:.2f} ms, HTTP p50 "
                f"{paired[size].raw_p50_ms:.2f} (minimal) / {paired[size].aiohttp_p50_ms:.2f} ms (aiohttp)"
            )
            r = await generate_load(
                session, "POST", null.base + "/image", data, 1, args.duration, args.warmup, null.pid
            )
            minimal = await asyncio.to_thread(raw_p50_ms, null.port, data, args.duration)
            floors[size] = Floor(r.p50_ms, minimal, r.other_cores)
            progress(
                f"  null predictor c=1 {size:>9}: p50 {r.p50_ms:.2f} ms (aiohttp) / {minimal:.2f} (minimal)"
            )
    return paired, floors


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True, slots=True)
class Setup:
    date: datetime
    machine: Machine
    replica_model: Path
    onnx_model: Path
    photo: str
    image_bytes: Mapping[str, int]
    replica_max_dp: float  # against the real container's answers (container_outputs.json)
    replica_images: int
    fast_shift: float  # max |p_fast - p_exact| on the fixtures and the benchmark images (not the corpus)
    server_workers: int
    concurrency: tuple[int, ...]
    batch_window_ms: float | None
    duration_s: float
    quick: bool
    code: str  # the commit measured, and whether edge_runtime/ had uncommitted changes


@dataclass(frozen=True, slots=True)
class ThroughputRun:
    setup: Setup
    inprocess: Mapping[str, Mapping[str, InProcess]]  # size -> variant -> result
    http: Mapping[str, Mapping[str, Mapping[int, LoadResult]]]  # server -> size -> concurrency -> result
    paired: Mapping[str, Paired]  # size -> added latency (exact server)
    floor: Mapping[str, Floor]  # size -> null-predictor floor
    batches: Mapping[str, Mapping[str, Mapping[int, float]]]  # server -> size -> conc -> mean batch size


def point_line(server: str, size: str, c: int, r: LoadResult) -> str:
    return (
        f"  {server:>12} {size:>9} c={c:<3} {r.requests_per_s:7.1f} ok req/s  p50 {r.p50_ms:7.2f} ms  "
        f"p95 {r.p95_ms:7.2f} ms  errors {fmt_errors(r.errors)}  other {r.other_cores:.2f}"
    )


def load_runtime(model: Path, fidelity: str, workers: int) -> tuple[Predictor, int]:
    options = predictor_options(build_settings({"model": {"device": "cpu", "fidelity": fidelity}}), workers)
    return Predictor.load(model, options), options.threads


def servers_to_run(args: argparse.Namespace) -> list[Served]:
    conc = tuple(args.concurrency)
    out = [
        Served(REPLICA, {}, conc, runtime=False),
        Served("exact", {}, conc, runtime=True),
        Served("fast", {"EDGE_RUNTIME_MODEL__FIDELITY": "fast"}, conc, runtime=True),
    ]
    if args.batch_window_ms is not None:
        batched = tuple(c for c in conc if c in BATCH_CONCURRENCY)
        window = {"EDGE_RUNTIME_SERVER__BATCH_WINDOW_MS": f"{args.batch_window_ms:g}"}
        out.append(Served("exact batch", window, batched, runtime=True))
        out.append(Served("fast batch", {"EDGE_RUNTIME_MODEL__FIDELITY": "fast", **window}, batched, True))
    return out


def code_version() -> str:
    """HEAD's short hash, and "+ uncommitted changes" when edge_runtime/ differs from it (read-only git:
    no optional locks, the index is shared with other writers)."""
    git = ["git", "--no-optional-locks", "-C", str(REPO)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "edge_runtime"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return head.stdout.strip() + (" + uncommitted changes in edge_runtime/" if dirty.stdout.strip() else "")


def measure(args: argparse.Namespace) -> ThroughputRun:
    docker, onnx = model_folder(args.replica_model), model_folder(args.model)
    machine = Machine.probe(package_versions("ai-edge-litert", "onnxruntime", "pillow", "numpy", "aiohttp"))
    photo = source_photo(onnx, None)
    images = {name: make_jpeg(photo, size) for name, size in SIZES.items()}
    settings = build_settings({"model": {"device": "cpu"}})
    workers = settings.server.inference_workers or os.cpu_count() or 1  # as serve sizes its executor

    replica = ReplicaPredictor(docker)
    worst, _, count = container_max_dp(replica, CONTAINER_FIXTURES if not args.fixtures else args.fixtures)
    exact_onnx, threads_onnx = load_runtime(onnx, "exact", 1)
    exact_tflite, threads_tflite = load_runtime(docker, "exact", 1)
    fast_onnx, threads_fast = load_runtime(onnx, "fast", 1)
    # The server's own options (one backend thread per worker on this machine): the paired latency, and
    # the per-core cost of exact mode without onnxruntime's spinning intra-op threads.
    server_exact, threads_server = load_runtime(onnx, "exact", workers)
    server_fast, _ = load_runtime(onnx, "fast", workers)
    predictors = (exact_onnx, exact_tflite, fast_onnx, server_exact, server_fast)
    try:
        fixtures = [p.read_bytes() for p in sorted(CONTAINER_FIXTURES.glob("test-*.jpg"))]
        setup = Setup(
            date=datetime.now(UTC),
            machine=machine,
            replica_model=args.replica_model,
            onnx_model=args.model,
            photo=photo.name,
            image_bytes={name: len(data) for name, data in images.items()},
            replica_max_dp=worst,
            replica_images=count,
            fast_shift=max_shift(exact_onnx, fast_onnx, [*fixtures, *images.values()]),
            server_workers=workers,
            concurrency=tuple(args.concurrency),
            batch_window_ms=args.batch_window_ms,
            duration_s=args.duration,
            quick=args.quick,
            code=code_version(),
        )
        for line in setup_lines(setup):
            progress(line)

        variants = [
            replica_variant(replica),
            runtime_variant("exact onnx", exact_onnx, threads_onnx),
            runtime_variant("exact onnx/w", server_exact, threads_server),
            runtime_variant("exact tflite", exact_tflite, threads_tflite),
            runtime_variant("fast onnx", fast_onnx, threads_fast),
            runtime_variant("fast onnx/w", server_fast, threads_server),
        ]
        inprocess: dict[str, dict[str, InProcess]] = {}
        for size, data in images.items():
            inprocess[size] = measure_inprocess(variants, data, args.rounds, args.block, args.warmup)
            for r in inprocess[size].values():
                progress(inprocess_line(size, r, inprocess[size][REPLICA]))

        served = servers_to_run(args)
        with ExitStack() as stack:
            procs: dict[str, tuple[Served, ServeProcess]] = {}
            for s in served:
                command = (
                    (lambda port: replica_command(port, docker))
                    if not s.runtime
                    else served_command(onnx, s.env)
                )
                procs[s.name] = (s, stack.enter_context(ServeProcess(command)))
            null_command = [sys.executable, "-m", "benchmarks.null_server", "--model", str(onnx)]
            null = stack.enter_context(ServeProcess(lambda port: [*null_command, "--port", str(port)]))
            for _, proc in procs.values():
                proc.wait_ready()
            null.wait_ready()
            if NULL_PREDICTOR_MARKER not in null.log():
                raise RuntimeError(f"benchmarks/null_server.py did not replace the predictor:\n{null.log()}")
            batches: dict[str, dict[str, dict[int, float]]] = {}
            http = asyncio.run(measure_http(args, images, procs, batches))
            paired, floor = asyncio.run(measure_latency(args, images, procs["exact"][1], null, server_exact))
    finally:
        for predictor in predictors:
            predictor.close()
    return ThroughputRun(setup, inprocess, http, paired, floor, batches)


# -------------------------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def setup_lines(s: Setup) -> list[str]:
    return [
        f"date: {s.date.strftime('%Y-%m-%d %H:%M UTC')}"
        + (" (--quick: not a measurement)" if s.quick else ""),
        f"machine: {s.machine.describe()}",
        f"code: {s.code}",
        f"replica: {s.replica_model} (TFLite, Pillow recipe); max |dp| against the real container's answers "
        f"{s.replica_max_dp:.2g} over {s.replica_images} fixture images (must be <= 1e-5)",
        f"edge_runtime: {s.onnx_model} (ONNX) and the replica's model.tflite (LiteRT backend)",
        f"images: from {s.photo}, JPEG q90 + grain sigma {GRAIN_SIGMA}: "
        + ", ".join(f"{n} {size / 1024:.0f} KiB" for n, size in s.image_bytes.items()),
        f"fast vs exact (ONNX): max |dp| {s.fast_shift:.3g} on the 6 fixtures and the 2 benchmark images "
        "(a sanity check, not issue 17's corpus)"
        + ("; fast answers exactly as exact: fast mode not in effect?" if s.fast_shift == 0 else ""),
        f"servers: {s.server_workers} inference workers (one per core); replica: one lock, one interpreter; "
        f"concurrency {', '.join(map(str, s.concurrency))}; {s.duration_s:g} s per point"
        + (f"; batch window {s.batch_window_ms:g} ms" if s.batch_window_ms is not None else ""),
    ]


def inprocess_line(size: str, r: InProcess, ref: InProcess) -> str:
    return (
        f"  in-process {size:>9} {r.variant:>12}: p50 {r.p50_ms:6.2f} ms, mean {r.mean_ms:6.2f} ms, "
        f"CPU {r.cpu_ms:6.2f} ms/img, x replica {ratio(ref.mean_ms, r.mean_ms):.2f} ({r.images} images)"
    )


def replica_best(run: ThroughputRun, size: str) -> tuple[float, int]:
    points = run.http[REPLICA].get(size, {})
    if not points:
        return NAN, 0
    c = max(points, key=lambda k: points[k].requests_per_s)
    return points[c].requests_per_s, c


def fmt_stages(stages: Mapping[str, float]) -> str:
    if not stages:
        return "-"
    return " / ".join(f"{stages[st]:.2f}" for st in STAGES) + f" = {sum(stages.values()):.2f}"


def report(run: ThroughputRun) -> None:
    s = run.setup
    print("\n".join(setup_lines(s)))
    sizes = list(s.image_bytes)

    print()
    print("1. in-process, one worker thread, per image (interleaved blocks):")
    table = Table(
        Col("size", 9),
        Col("variant", 12),
        Col("backend", 15),
        Col("fidelity", 9),
        Col("thr", 7),
        Col("p50 ms", 7, ".2f"),
        Col("mean ms", 7, ".2f"),
        Col("CPU ms", 7, ".2f"),
        Col("x mean", 6, ".2f"),
        Col("x p50", 6, ".2f"),
        Col("x CPU", 6, ".2f"),
        Col("images", 6),
        Col("other", 5, ".2f"),
    )
    for size in sizes:
        ref = run.inprocess[size][REPLICA]
        for r in run.inprocess[size].values():
            table.row(
                size,
                r.variant,
                r.backend,
                r.fidelity,
                r.threads,
                r.p50_ms,
                r.mean_ms,
                r.cpu_ms,
                ratio(ref.mean_ms, r.mean_ms),
                ratio(ref.p50_ms, r.p50_ms),
                ratio(ref.cpu_ms, r.cpu_ms),
                r.images,
                r.other_cores,
            )
    table.print()
    print(
        "x mean / x p50 / x CPU: the replica's ms per image / this variant's (> 1: faster than the\n"
        "container). CPU ms: this process's CPU per image, backend threads included (thr: backend threads\n"
        "per inference; default = the backend's own, onnxruntime one per core). exact onnx/w: the server's\n"
        "predictor options (backend threads as each of its workers has them); fast onnx/w likewise.\n"
        "The replica's issue-17 reference on the 2-core VM: "
        + ", ".join(f"{k} {v} ms" for k, v in ISSUE_REPLICA_MS.items())
        + "."
    )
    print()
    print("   mean ms per stage, decode / preprocess / inference / postprocess = total:")
    for size in sizes:
        for r in run.inprocess[size].values():
            print(f"   {size:>9} {r.variant:>12}  {fmt_stages(r.stages_ms)}")

    print()
    print(
        "2. over HTTP, POST /image, closed loop (ok req/s: 200 answers only; errors: non-200 or no answer):"
    )
    table = Table(
        Col("size", 9),
        Col("server", 11),
        Col("conc", 4),
        Col("ok req/s", 8, ".1f"),
        Col("errors", 6),
        Col("p50 ms", 8, ".2f"),
        Col("p95 ms", 8, ".2f"),
        Col("x best", 6, ".2f"),
        Col("x same c", 8, ".2f"),
        Col("srv CPU/req", 11, ".2f"),
        Col("srv cores", 9, ".2f"),
        Col("cli cores", 9, ".2f"),
        Col("other", 5, ".2f"),
    )
    for size in sizes:
        best, _ = replica_best(run, size)
        for c in s.concurrency:
            for server, by_size in run.http.items():
                p = by_size.get(size, {}).get(c)
                if p is None:
                    continue
                same = run.http[REPLICA].get(size, {}).get(c)
                table.row(
                    size,
                    server,
                    c,
                    p.requests_per_s,
                    p.error_count,
                    p.p50_ms,
                    p.p95_ms,
                    ratio(p.requests_per_s, best),
                    ratio(p.requests_per_s, same.requests_per_s) if same else NAN,
                    p.server_cpu_ms_per_req,
                    p.server_cores,
                    p.client_cores,
                    p.other_cores,
                )
    table.print()
    print(
        "x best: ok req/s / the replica's best ok req/s of that size, at any concurrency ("
        + ", ".join(
            f"{size} {replica_best(run, size)[0]:.1f} at c={replica_best(run, size)[1]}" for size in sizes
        )
        + ").\nx same c: against the replica at the same concurrency. srv CPU/req: the server's CPU ms per\n"
        "200 answer. The replica is the container's best case (it serialises on one lock and never fails;\n"
        "the real container failed 43-66 % of requests at concurrency 4)."
    )
    errors = {
        f"{server} {size} c={c}": fmt_errors(r.errors)
        for server, by_size in run.http.items()
        for size, by_c in by_size.items()
        for c, r in by_c.items()
        if r.errors
    }
    for where, what in errors.items():
        print(f"   errors: {where}: {what}")
    print()
    print("   edge_runtime servers' own mean ms per stage (decode / preprocess / inference / postprocess):")
    for server, by_size in run.http.items():
        for size, by_c in by_size.items():
            for c, point in by_c.items():
                if point.server_stages_ms:
                    mean_batch = run.batches.get(server, {}).get(size, {}).get(c)
                    batched = f"   (mean batch {mean_batch:.2f})" if mean_batch is not None else ""
                    print(f"   {server:>11} {size:>9} c={c:<3} {fmt_stages(point.server_stages_ms)}{batched}")

    print()
    print("3. added latency at concurrency 1 (exact server; p50 ms):")
    table = Table(
        Col("size", 9),
        Col("in-process", 10, ".2f"),
        Col("HTTP minimal", 12, ".2f"),
        Col("added", 6, ".2f"),
        Col("floor minimal", 13, ".2f"),
        Col("HTTP aiohttp", 12, ".2f"),
        Col("added", 6, ".2f"),
        Col("floor aiohttp", 13, ".2f"),
        Col("rounds", 6),
        Col("other", 5, ".2f"),
    )
    for size in sizes:
        q, f = run.paired[size], run.floor[size]
        table.row(
            size,
            q.inproc_p50_ms,
            q.raw_p50_ms,
            q.added_ms,
            f.minimal_p50_ms,
            q.aiohttp_p50_ms,
            q.added_aiohttp_ms,
            f.aiohttp_p50_ms,
            q.rounds,
            max(q.other_cores, f.other_cores),
        )
    table.print()
    print(
        "Rounds of one in-process prediction (the server's predictor options) then one request\n"
        "(http_bench's paired rounds). added = HTTP p50 - in-process p50. floor: the null-predictor\n"
        "server's p50 with the same client (benchmarks/null_server.py): what HTTP alone costs."
    )

    print()
    print("4. targets (issue 17):")
    for line in target_lines(run):
        print("  " + line)
    noisy = [r.other_cores for by_size in run.inprocess.values() for r in by_size.values()]
    noisy += [
        r.other_cores for by_size in run.http.values() for by_c in by_size.values() for r in by_c.values()
    ]
    noisy += [q.other_cores for q in run.paired.values()] + [f.other_cores for f in run.floor.values()]
    print(f"  other processes used up to {max(noisy):.2f} cores during a measurement (CpuMeter)")
    if max(noisy) > QUIET_CORES:
        print(f"  WARNING: above {QUIET_CORES} core: the machine was shared while measuring")


def blocking_stage(r: InProcess) -> str:
    stage = max(STAGES, key=lambda st: r.stages_ms.get(st, 0.0))
    total = sum(r.stages_ms.values())
    return f"largest stage: {stage} {r.stages_ms.get(stage, NAN):.2f} ms of {total:.2f} ms"


def target_lines(run: ThroughputRun) -> Iterator[str]:
    sizes = list(run.setup.image_bytes)
    for size in sizes:
        ref, exact = run.inprocess[size][REPLICA], run.inprocess[size]["exact onnx"]
        x = ratio(ref.mean_ms, exact.mean_ms)
        per_worker = run.inprocess[size].get("exact onnx/w")
        stretch = "; stretch 1.5x " + verdict(x >= STRETCH_INPROC)
        yield (
            f"exact in-process {size}: {x:.2f}x the replica per image (>= {TARGET_INPROC}x) "
            f"{verdict(x >= TARGET_INPROC)}{stretch}; CPU {ratio(ref.cpu_ms, exact.cpu_ms):.2f}x"
            + (
                f" (server options: {ratio(ref.mean_ms, per_worker.mean_ms):.2f}x, CPU "
                f"{ratio(ref.cpu_ms, per_worker.cpu_ms):.2f}x)"
                if per_worker
                else ""
            )
            + ("" if x >= TARGET_INPROC else f"; {blocking_stage(exact)}")
        )
    for size in sizes:
        best, _ = replica_best(run, size)
        for server, targets in (("exact", TARGET_HTTP_C4), ("fast", TARGET_FAST_C4)):
            if size not in targets:
                continue
            r = run.http.get(server, {}).get(size, {}).get(TARGET_CONCURRENCY)
            if r is None:
                yield f"{server} HTTP c={TARGET_CONCURRENCY} {size}: not measured"
                continue
            x = ratio(r.requests_per_s, best)
            hint = "" if x >= targets[size] else f"; server stages {fmt_stages(r.server_stages_ms)}"
            yield (
                f"{server} HTTP c={TARGET_CONCURRENCY} {size}: {x:.2f}x the replica's best "
                f"(>= {targets[size]}x) {verdict(x >= targets[size])}; server CPU "
                f"{r.server_cpu_ms_per_req:.2f} ms per answer{hint}"
            )
    slack = TARGET_ADDED_SLACK_MS
    for size in sizes:
        q, f = run.paired[size], run.floor[size]
        yield (
            f"added p50 at c=1 {size}: {q.added_ms:.2f} ms (minimal client) vs floor "
            f"{f.minimal_p50_ms:.2f} + {slack} {verdict(q.added_ms <= f.minimal_p50_ms + slack)}; "
            f"{q.added_aiohttp_ms:.2f} ms (aiohttp) vs floor {f.aiohttp_p50_ms:.2f} + {slack} "
            f"{verdict(q.added_aiohttp_ms <= f.aiohttp_p50_ms + slack)}"
        )
    runtime_errors = {
        f"{server} {size} c={c}": r.error_count
        for server, by_size in run.http.items()
        if server != REPLICA
        for size, by_c in by_size.items()
        for c, r in by_c.items()
    }
    failed = {k: v for k, v in runtime_errors.items() if v}
    yield (
        f"0 errors from edge_runtime at every concurrency {verdict(not failed)}"
        + (f": {failed}" if failed else "")
    )


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("throughput_bench", __doc__)
    parser.add_argument("--model", type=Path, default=ONNX_MODEL, help="edge_runtime's ONNX export folder")
    parser.add_argument("--replica-model", type=Path, default=DOCKER_MODEL, help="the DockerFile 2.2 export")
    parser.add_argument("--fixtures", type=Path, help="container_outputs.json's folder (default: --model's)")
    parser.add_argument("--duration", type=float, help="seconds per HTTP point (default 5; --quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per point (default 1; --quick 0.25)")
    parser.add_argument("--rounds", type=int, help="in-process interleaved rounds (default 4; --quick 2)")
    parser.add_argument("--block", type=float, help="in-process seconds per block (default 1.5; --quick 0.3)")
    parser.add_argument(
        "--concurrency",
        type=lambda s: sorted({int(x) for x in s.split(",") if x.strip()}),
        default=[1, 4, 16, 64],
        help="comma-separated client concurrencies (default 1,4,16,64)",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        help="also serve exact and fast with EDGE_RUNTIME_SERVER__BATCH_WINDOW_MS=X (micro-batching), "
        f"measured at concurrency {', '.join(map(str, BATCH_CONCURRENCY))}",
    )
    add_quick_and_json(parser, "short points (1 s, 2 in-process rounds of 0.3 s): to check that it runs")
    args = parser.parse_args(argv)
    defaults = (1.0, 0.25, 2, 0.3) if args.quick else (5.0, 1.0, 4, 1.5)
    for name, value in zip(("duration", "warmup", "rounds", "block"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers")
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or args.block <= 0:
        parser.error("--duration and --block must be > 0, --warmup >= 0, --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    return report_and_save(measure(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
