"""Model formats (issue 15): the same network as TFLite, ONNX and OpenVINO, in process.

Single-image latency of `Predictor.predict_bytes` (decode + preprocess + inference + postprocess), loaded
with `Predictor.load(path, predictor_options(settings, workers=1))` as the server does, per model format
and runtime, with threads 1 and 0 (the backend's default), on the JPEG bytes of the ONNX folder's test
images. The meter network (Custom Vision General (compact), 224x224, 3 labels) as its TFLite export
(LiteRT, device cpu) and as its lossless ONNX conversion (onnxruntime, device cpu; OpenVINO, device
openvino:CPU); ratios against the onnxruntime row with the same threads. Also, threads 1: the built-in
Custom Vision demo detector (a small real network) against an AutoML YOLOv5-layout graph with constant
outputs (25200 rows, what a 640x640 YOLOv5 emits), whose inference is trivial: what the layout's
letterbox and decode cost.

All predictors are loaded first; then rounds, each running every predictor over every image once (the
order rotating), so that each ratio compares the same machine state.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.harness.cli import add_quick_and_json, bench_parser, model_folder, report_and_save
from benchmarks.harness.machine import CpuMeter, Machine, package_versions
from benchmarks.harness.processes import REPO, exit_on_signals
from benchmarks.harness.stats import NAN, percentiles, ratio
from benchmarks.harness.table import Col, Table, progress
from edge_runtime.app import predictor_options
from edge_runtime.demo.model import build_demo_export
from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Predictor
from edge_runtime.settings import Settings

TFLITE = Path("../shared/customvision-models/docker22-tflite-classification-meter")
ONNX = Path("../shared/customvision-models/onnx-converted-meter-compact")
STAGES = ("decode", "pre", "infer", "post")  # PredictionResult.timings' decode, preprocess, inference, ...


@dataclass(frozen=True, slots=True)
class Variant:
    group: str  # rows compared with each other: "meter" or "detector"
    name: str
    model: Path
    device: str  # as in the model settings: "cpu", "openvino:CPU"
    threads: int  # model.threads; 0: the backend's default
    reference: bool = False  # the ratios' denominator within its group and threads


@dataclass(frozen=True, slots=True)
class Row:
    variant: Variant
    backend: str  # the plan's runtime
    device: str  # what the predictor reports
    warmup_ms: float
    n: int
    p50_ms: float  # wall time around predict_bytes
    p95_ms: float
    stages_ms: tuple[float, float, float, float]  # means, as STAGES
    top1_agree: int  # images whose top label is the reference's (classifiers; -1 for detectors)
    max_prob_diff: float  # the largest |probability difference| from the reference, any image and label


@dataclass(frozen=True, slots=True)
class Run:
    started: datetime
    machine: Machine
    images: tuple[str, ...]  # name WxH
    rounds: int
    other_cores: float  # CPU of other processes during the rounds
    rows: tuple[Row, ...]


def probabilities(result: PredictionResult) -> dict[str, float]:
    return {p.tag_name: p.probability for p in result.predictions}


def yolov5_folder(root: Path) -> Path:
    """An AutoML YOLOv5-layout export (tests/layout_graphs.py): 25200 rows, 30 of them above the threshold."""
    sys.path.insert(0, str(REPO / "tests"))
    from layout_graphs import automl_yolo, write_folder

    rng = np.random.default_rng(15)
    rows = np.zeros((25200, 7), np.float32)
    rows[:, :2] = rng.uniform(0, 640, (25200, 2))
    rows[:, 2:4] = rng.uniform(8, 200, (25200, 2))
    rows[:, 4] = rng.uniform(0, 0.05, 25200)
    rows[:, 5:] = rng.uniform(0, 1, (25200, 2))
    rows[rng.choice(25200, 30, replace=False), 4] = rng.uniform(0.5, 0.95, 30)
    return Path(write_folder(root / "yolov5", automl_yolo(rows), ("can", "bottle")))


def variants(tmp: Path) -> list[Variant]:
    tflite, onnx = model_folder(TFLITE), model_folder(ONNX)
    out = []
    for threads in (1, 0):
        out += [
            Variant("meter", "TFLite / LiteRT", tflite, "cpu", threads),
            Variant("meter", "ONNX / onnxruntime", onnx, "cpu", threads, reference=True),
            Variant("meter", "ONNX / OpenVINO", onnx, "openvino:CPU", threads),
        ]
    demo = build_demo_export(tmp / "demo")
    out += [
        Variant("detector", "CV demo (YOLOv2) / ort", demo, "cpu", 1, reference=True),
        Variant("detector", "AutoML YOLOv5 const / ort", yolov5_folder(tmp), "cpu", 1),
    ]
    return out


def load(v: Variant) -> Predictor:
    settings = Settings.model_validate({"model": {"device": v.device, "threads": v.threads}})
    return Predictor.load(v.model, predictor_options(settings, workers=1))


def measure(rounds: int) -> Run:
    started = datetime.now(UTC)
    versions = package_versions("ai-edge-litert", "onnxruntime", "openvino", "pillow", "numpy")
    machine = Machine.probe(versions)
    images = sorted(model_folder(ONNX).glob("test-*.jpg"))
    data = [p.read_bytes() for p in images]
    with tempfile.TemporaryDirectory(prefix="model-bench-") as tmp:
        vs = variants(Path(tmp))
        predictors = []
        for v in vs:
            predictors.append(load(v))
            progress(f"loaded {v.name} threads {v.threads}: {predictors[-1].device}")
        first = [[probabilities(p.predict_bytes(b)) for b in data] for p in predictors]  # and warm-up
        walls: list[list[float]] = [[] for _ in vs]
        stages: list[list[tuple[float, ...]]] = [[] for _ in vs]
        meter = CpuMeter().start()
        for r in range(rounds):
            for i in [(r + k) % len(vs) for k in range(len(vs))]:
                for b in data:
                    t0 = time.perf_counter()
                    result = predictors[i].predict_bytes(b)
                    walls[i].append(time.perf_counter() - t0)
                    t = result.timings
                    stages[i].append((t.decode, t.preprocess, t.inference, t.postprocess))
            if r % 10 == 9:
                progress(f"round {r + 1}/{rounds}")
        use = meter.stop()
        rows = [summarise(i, vs, predictors[i], walls[i], stages[i], first) for i in range(len(vs))]
        for p in predictors:
            p.close()
    names = tuple(f"{p.name} {Image.open(io.BytesIO(b)).size}" for p, b in zip(images, data, strict=True))
    return Run(started, machine, names, rounds, use.other(), tuple(rows))


def reference_of(i: int, vs: list[Variant]) -> int:
    v = vs[i]
    return next(j for j, w in enumerate(vs) if w.reference and (w.group, w.threads) == (v.group, v.threads))


def summarise(
    i: int,
    vs: list[Variant],
    predictor: Predictor,
    walls: list[float],
    stages: list[tuple[float, ...]],
    first: list[list[dict[str, float]]],
) -> Row:
    v, ref = vs[i], reference_of(i, vs)
    agree, diff = -1, NAN
    if v.group == "meter":
        pairs = list(zip(first[i], first[ref], strict=True))
        agree = sum(max(a, key=a.__getitem__) == max(b, key=b.__getitem__) for a, b in pairs)
        diff = max(abs(a[k] - b[k]) for a, b in pairs for k in a)
    p50, p95 = percentiles(walls, 50, 95)
    mean = [float(x) * 1000 for x in np.mean(np.array(stages), axis=0)]
    return Row(
        v,
        str(predictor.plan.backend),
        predictor.device,
        predictor.warmup_seconds * 1000,
        len(walls),
        p50 * 1000,
        p95 * 1000,
        (mean[0], mean[1], mean[2], mean[3]),
        agree,
        diff,
    )


def report(run: Run) -> None:
    print(f"date: {run.started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {run.machine.describe()}")
    print(f"images ({len(run.images)}, JPEG bytes): {', '.join(run.images)}")
    print(f"rounds: {run.rounds} (each predictor over every image once per round, order rotating)")
    print(f"other processes during the rounds: {run.other_cores:.2f} cores")
    refs = {(r.variant.group, r.variant.threads): r for r in run.rows if r.variant.reference}
    latency = Table(
        Col("model / runtime", 26), Col("thr", 3), Col("backend", 11), Col("device", 12),
        Col("warm ms", 7, ".1f"), Col("n", 5), Col("p50 ms", 7, ".2f"), Col("p95 ms", 7, ".2f"),
        Col("x p50", 6, ".2f"), Col("x p95", 6, ".2f"), Col("top1", 4), Col("max|dp|", 8, ".1e"),
    )  # fmt: skip
    split = Table(
        Col("model / runtime", 26), Col("thr", 3), *(Col(s, 6, ".2f") for s in STAGES),
        Col("total", 6, ".2f"),
        *(Col("x " + s, 8, ".2f", sep=" | " if s == "decode" else " ") for s in STAGES),
    )  # fmt: skip
    for r in run.rows:
        ref, v = refs[(r.variant.group, r.variant.threads)], r.variant
        top1 = f"{r.top1_agree}/{len(run.images)}" if r.top1_agree >= 0 else "-"
        latency.row(
            v.name, v.threads, r.backend, r.device, r.warmup_ms, r.n, r.p50_ms, r.p95_ms,
            ratio(r.p50_ms, ref.p50_ms), ratio(r.p95_ms, ref.p95_ms), top1, r.max_prob_diff,
        )  # fmt: skip
        ratios = (ratio(a, b) for a, b in zip(r.stages_ms, ref.stages_ms, strict=True))
        split.row(v.name, v.threads, *r.stages_ms, sum(r.stages_ms), *ratios)
    print()
    latency.print()
    print("p50/p95: wall time of one predict_bytes, all images mixed. x: / the reference row of the same")
    print("group and threads (meter: ONNX / onnxruntime; detector: the CV demo). top1: images whose top")
    print("label is the reference's; max|dp|: the largest probability difference from it (first pass).")
    print()
    split.print()
    print("mean ms per stage (PredictionResult.timings) and its ratio to the reference row's.")
    print("YOLOv5 const: a graph with constant outputs; its inference is no network, only the layout's")
    print("input and output sizes: the rows show what its letterbox and decode cost.")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("model_bench", __doc__)
    parser.add_argument("--rounds", type=int, default=150, help="rounds over all images (default 150)")
    add_quick_and_json(parser, "5 rounds")
    args = parser.parse_args(argv)
    exit_on_signals()
    return report_and_save(measure(5 if args.quick else args.rounds), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
