"""Fast fidelity's shift (issue 17): `model.fidelity: fast` against `exact`, per model, on the fidelity
corpus (benchmarks/fidelity_corpus.py: the fixtures plus 210 seeded camera-like images, named by seed
and digest in the report).

Each model is loaded twice, `Predictor.load(path, predictor_options(build_settings({"model": {"device":
"cpu", "threads": 1, "fidelity": ...}}), workers=1))` as the server does, and both predictors run every
image of the corpus (`predict_bytes`). Reported per model:

- |dp|: every label's score (a classifier's probability; a detector's highest box probability of the
  label, 0 when it has none) in fast minus exact, over all labels and images: max, p99, mean; with
  top-1 agreement for classifiers and the worst images;
- detectors, boxes at or above --threshold: matched greedily by IoU per label (edge_runtime.compare's
  match_boxes, pairs with IoU >= --match-iou), the IoU of matched pairs (min, p1, mean) and the boxes
  left unmatched on either side;
- the same split by encoding (fixtures, each synthetic encoding), so that what moves most shows;
- the model's sensitivity on the same images, for scale: the |dp| that changing 0.1 % of the exact
  input tensor's values by +-1 makes (what the issue measured of pillow-simd: 1.4e-4 on photos);
- which images the fast predictor decoded at reduced scale (PIL's JPEG draft, recorded as it happens:
  the factor 1/2, 1/4 or 1/8), per size;
- per-image time of predict_bytes (ms; each image --repeat times in each mode, exact and fast
  alternating, the median kept): mean over the corpus and per size, and the ratio exact / fast.

Default models: the meter classifier (../shared/customvision-models/onnx-converted-meter-compact), the
built-in demo detector (edge_runtime.demo.model.build_demo_export), onnx12-cat-or-dog and
onnx-converted-applebanana-compact (fixtures found missing are skipped); --model (repeatable) replaces them.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import JpegImagePlugin

from benchmarks.fidelity_corpus import DEFAULT_SEED, CorpusImage, corpus, corpus_digest, fixtures_found
from benchmarks.harness.cli import add_quick_and_json, bench_parser, model_folder, report_and_save
from benchmarks.harness.machine import Machine, package_versions
from benchmarks.harness.processes import exit_on_signals
from benchmarks.harness.stats import NAN, percentiles, ratio
from benchmarks.harness.table import Col, Table, progress
from edge_runtime.app import predictor_options
from edge_runtime.compare.stats import label_scores, match_boxes
from edge_runtime.demo.model import build_demo_export
from edge_runtime.domain import Prediction, PredictionResult, StageTimings, Task
from edge_runtime.engine import Predictor
from edge_runtime.model.imaging import decode_image
from edge_runtime.model.postprocess import postprocess
from edge_runtime.model.preprocess import prepare
from edge_runtime.settings import build_settings

FIXTURE_MODELS = ("onnx-converted-meter-compact", "onnx12-cat-or-dog", "onnx-converted-applebanana-compact")
DEMO = "demo"  # --model demo: the built-in demo detector
QUICK_IMAGES = 40  # synthetic images with --quick (spread over sizes and encodings)


@dataclass(frozen=True, slots=True)
class ImageRow:
    name: str
    kind: str
    size: tuple[int, int]  # stored w x h
    encoding: str
    reduced: int  # the fast decode's reduction (1: full size, 2, 4, 8)
    exact_ms: float
    fast_ms: float
    max_dp: float  # over the labels
    dps: tuple[float, ...]  # |dp| of each label
    lsb_dp: float  # max |dp| of the exact input with 0.1 % of its values moved by +-1
    top1_same: bool
    boxes_exact: int  # at or above the threshold (detectors)
    boxes_fast: int


@dataclass(frozen=True, slots=True)
class SizeRow:
    size: str  # "WxH"
    n: int
    reduced: int  # images decoded at reduced scale
    exact_ms: float  # means
    fast_ms: float
    max_dp: float


@dataclass(frozen=True, slots=True)
class GroupRow:
    group: str  # "fixtures" or a synthetic encoding
    n: int
    reduced: int
    max_dp: float
    p99_dp: float
    mean_dp: float
    lsb_max_dp: float  # the sensitivity: see ImageRow.lsb_dp


@dataclass(frozen=True, slots=True)
class ModelResult:
    name: str
    path: str
    task: str
    recipe: str  # PreprocessSpec.describe() of the exact predictor
    fidelity_exact: str  # spec.preprocess.fidelity as loaded
    fidelity_fast: str
    n: int
    reduced: int  # images the fast predictor decoded at reduced scale
    max_dp: float
    p99_dp: float
    mean_dp: float
    n_dp: int  # label scores compared
    top1_agree: int  # images whose top label agrees (classifiers; boxes' top for detectors)
    fixtures_max_dp: float
    synthetic_max_dp: float
    synthetic_p99_dp: float
    lsb_max_dp: float  # the model's sensitivity on the corpus: see ImageRow.lsb_dp
    lsb_p99_dp: float
    exact_ms: float  # mean per image
    fast_ms: float
    box_threshold: float
    box_pairs: int
    box_unmatched_exact: int
    box_unmatched_fast: int
    iou_min: float
    iou_p1: float
    iou_mean: float
    sizes: tuple[SizeRow, ...]
    groups: tuple[GroupRow, ...]
    worst: tuple[tuple[str, float], ...]  # the images with the largest |dp|
    images: tuple[ImageRow, ...]


@dataclass(frozen=True, slots=True)
class Run:
    started: datetime
    machine: Machine
    corpus_seed: int
    corpus_digest: str
    corpus_size: int
    fixtures: int
    quick: bool
    repeat: int
    models: tuple[ModelResult, ...]


@contextmanager
def recording_drafts(log: list[tuple[tuple[int, int], tuple[int, int]]]) -> Iterator[None]:
    """Record every JPEG draft (the size before and after) made while inside: what a reduced-scale decode
    really did, whichever code asked for it."""
    original = JpegImagePlugin.JpegImageFile.draft

    def draft(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        before = self.size
        result = original(self, mode, size)
        log.append((before, self.size))
        return result

    setattr(JpegImagePlugin.JpegImageFile, "draft", draft)  # noqa: B010
    try:
        yield
    finally:
        setattr(JpegImagePlugin.JpegImageFile, "draft", original)  # noqa: B010


def load(path: Path, fidelity: str) -> Predictor:
    settings = build_settings({"model": {"device": "cpu", "threads": 1, "fidelity": fidelity}})
    return Predictor.load(path, predictor_options(settings, workers=1))


def timed(predict: Callable[[bytes], PredictionResult], data: bytes) -> tuple[PredictionResult, float]:
    t0 = time.perf_counter()
    result = predict(data)
    return result, (time.perf_counter() - t0) * 1000


def boxes(result: PredictionResult, threshold: float) -> dict[str, list[Prediction]]:
    out: dict[str, list[Prediction]] = {}
    for p in result.predictions:
        if p.bounding_box is not None and p.probability >= threshold:
            out.setdefault(p.tag_name, []).append(p)
    return out


def sensitivity(
    predictor: Predictor, data: bytes, exact: dict[str, float], rng: np.random.Generator
) -> float:
    """max |dp| when 0.1 % of the exact input tensor's values move by +-1 (0..255 units)."""
    spec = predictor.spec
    tensor, geometry = prepare(decode_image(data, predictor.limits), spec.preprocess)
    moved = rng.random(tensor.shape) < 0.001
    nudged = tensor.copy()
    nudged[moved] += (rng.integers(0, 2, int(moved.sum())) * 2 - 1) * spec.preprocess.scale
    predictions = postprocess(predictor.backend.run(nudged), spec, geometry)
    scores = label_scores(PredictionResult(spec.task, predictions, (0, 0), StageTimings()))
    return max((abs(scores.get(label, 0.0) - exact.get(label, 0.0)) for label in spec.labels), default=0.0)


def top_label(result: PredictionResult) -> str | None:
    best = max(result.predictions, key=lambda p: p.probability, default=None)
    return best.tag_name if best else None


def measure_model(
    name: str,
    path: Path,
    images: Sequence[CorpusImage],
    repeat: int,
    threshold: float,
    match_iou: float,
) -> ModelResult:
    exact, fast = load(path, "exact"), load(path, "fast")
    labels = exact.spec.labels
    progress(
        f"{name}: exact fidelity {exact.spec.preprocess.fidelity}, fast {fast.spec.preprocess.fidelity}; "
        f"{exact.spec.preprocess.describe()}"
    )
    dps: list[float] = []
    ious: list[float] = []
    unmatched = [0, 0]
    rows: list[ImageRow] = []
    rng = np.random.default_rng(0)
    try:
        for k, image in enumerate(images):
            drafts: list[tuple[tuple[int, int], tuple[int, int]]] = []
            exact_ms: list[float] = []
            fast_ms: list[float] = []
            for r in range(repeat):  # alternate which mode goes first
                order = (False, True) if r % 2 == 0 else (True, False)
                for is_fast in order:
                    if is_fast:
                        log: list[tuple[tuple[int, int], tuple[int, int]]] = []
                        with recording_drafts(log):
                            b, ms = timed(fast.predict_bytes, image.data)
                        drafts = log
                        fast_ms.append(ms)
                    else:
                        a, ms = timed(exact.predict_bytes, image.data)
                        exact_ms.append(ms)
            sa, sb = label_scores(a), label_scores(b)
            image_dps = [abs(sb.get(label, 0.0) - sa.get(label, 0.0)) for label in labels]
            dps += image_dps
            ba, bb = boxes(a, threshold), boxes(b, threshold)
            for label in dict.fromkeys([*ba, *bb]):
                pairing = match_boxes(ba.get(label, []), bb.get(label, []), match_iou)
                ious += [overlap for _, _, overlap in pairing.pairs]
                unmatched[0] += pairing.only_old
                unmatched[1] += pairing.only_new
            reduced = max((before[0] // max(1, after[0]) for before, after in drafts), default=1)
            rows.append(
                ImageRow(
                    image.name,
                    image.kind,
                    image.size,
                    image.encoding,
                    reduced,
                    statistics.median(exact_ms),
                    statistics.median(fast_ms),
                    max(image_dps, default=0.0),
                    tuple(image_dps),
                    sensitivity(exact, image.data, sa, rng),
                    top_label(a) == top_label(b),
                    sum(len(v) for v in ba.values()),
                    sum(len(v) for v in bb.values()),
                )
            )
            if k % 25 == 24:
                progress(f"{name}: {k + 1}/{len(images)} images")
    finally:
        exact.close()
        fast.close()
    max_dp, p99_dp, mean_dp = (max(dps), *percentiles(dps, 99), float(np.mean(dps))) if dps else (NAN,) * 3
    iou_min, iou_p1, iou_mean = (
        (min(ious), *percentiles(ious, 1), float(np.mean(ious))) if ious else (NAN, NAN, NAN)
    )
    by_size: dict[tuple[int, int], list[ImageRow]] = {}
    for row in rows:
        by_size.setdefault(row.size, []).append(row)
    sizes = tuple(
        SizeRow(
            f"{w}x{h}",
            len(group),
            sum(r.reduced > 1 for r in group),
            float(np.mean([r.exact_ms for r in group])),
            float(np.mean([r.fast_ms for r in group])),
            max(r.max_dp for r in group),
        )
        for (w, h), group in sorted(by_size.items(), key=lambda item: item[0][0] * item[0][1])
    )
    by_group: dict[str, list[ImageRow]] = {}
    for row in rows:
        by_group.setdefault("fixtures" if row.kind == "fixture" else row.encoding, []).append(row)
    groups = tuple(group_row(name, group) for name, group in by_group.items())
    worst = tuple((r.name, r.max_dp) for r in sorted(rows, key=lambda r: -r.max_dp)[:5])
    fixtures = [r.max_dp for r in rows if r.kind == "fixture"]
    synthetic = [dp for r in rows if r.kind == "synthetic" for dp in r.dps]
    lsb = [r.lsb_dp for r in rows]
    return ModelResult(
        name=name,
        path=str(path),
        task=str(exact.spec.task),
        recipe=exact.spec.preprocess.describe(),
        fidelity_exact=str(exact.spec.preprocess.fidelity),
        fidelity_fast=str(fast.spec.preprocess.fidelity),
        n=len(rows),
        reduced=sum(r.reduced > 1 for r in rows),
        max_dp=max_dp,
        p99_dp=p99_dp,
        mean_dp=mean_dp,
        n_dp=len(dps),
        top1_agree=sum(r.top1_same for r in rows),
        fixtures_max_dp=max(fixtures, default=NAN),
        synthetic_max_dp=max(synthetic, default=NAN),
        synthetic_p99_dp=percentiles(synthetic, 99)[0],
        lsb_max_dp=max(lsb, default=NAN),
        lsb_p99_dp=percentiles(lsb, 99)[0],
        exact_ms=float(np.mean([r.exact_ms for r in rows])),
        fast_ms=float(np.mean([r.fast_ms for r in rows])),
        box_threshold=threshold if exact.spec.task is Task.DETECTION else NAN,
        box_pairs=len(ious),
        box_unmatched_exact=unmatched[0],
        box_unmatched_fast=unmatched[1],
        iou_min=iou_min,
        iou_p1=iou_p1,
        iou_mean=iou_mean,
        sizes=sizes,
        groups=groups,
        worst=worst,
        images=tuple(rows),
    )


def group_row(name: str, rows: Sequence[ImageRow]) -> GroupRow:
    dps = [dp for r in rows for dp in r.dps]
    return GroupRow(
        name,
        len(rows),
        sum(r.reduced > 1 for r in rows),
        max(dps, default=NAN),
        percentiles(dps, 99)[0],
        float(np.mean(dps)) if dps else NAN,
        max((r.lsb_dp for r in rows), default=NAN),
    )


def default_models(tmp: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    shared = fixtures_found()
    if shared is not None:
        out += [(folder, shared / folder) for folder in FIXTURE_MODELS if (shared / folder).is_dir()]
    out.insert(min(1, len(out)), ("demo detector", build_demo_export(tmp / "demo")))
    return out


def measure(
    models: Sequence[str] | None, seed: int, quick: bool, repeat: int, threshold: float, match_iou: float
) -> Run:
    started = datetime.now(UTC)
    machine = Machine.probe(package_versions("onnxruntime", "pillow", "opencv-python-headless", "numpy"))
    progress(f"building the fidelity corpus, seed {seed}{' (quick)' if quick else ''} ...")
    images = corpus(seed, limit=QUICK_IMAGES if quick else None)
    digest = corpus_digest(images)
    progress(f"corpus: {len(images)} images, sha256 {digest}")
    results = []
    with tempfile.TemporaryDirectory(prefix="fidelity-bench-") as tmp:
        chosen = default_models(Path(tmp))
        if models:
            chosen = [
                ("demo detector", build_demo_export(Path(tmp) / "demo"))
                if m == DEMO
                else (Path(m).name, model_folder(Path(m)))
                for m in models
            ]
        for name, path in chosen:
            results.append(measure_model(name, path, images, repeat, threshold, match_iou))
    return Run(
        started,
        machine,
        seed,
        digest,
        len(images),
        sum(i.kind == "fixture" for i in images),
        quick,
        repeat,
        tuple(results),
    )


def report(run: Run) -> None:
    print(f"date: {run.started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {run.machine.describe()}")
    print(
        f"corpus: benchmarks.fidelity_corpus seed {run.corpus_seed}{' --quick subset' if run.quick else ''}: "
        f"{run.corpus_size} images ({run.fixtures} fixtures, {run.corpus_size - run.fixtures} synthetic), "
        f"sha256 {run.corpus_digest}"
    )
    print(f"timing: predict_bytes, one thread, each image {run.repeat}x per mode (alternating), median")
    summary = Table(
        Col("model", 34), Col("task", 14), Col("fidelity", 11), Col("n", 4), Col("reduced", 7),
        Col("max|dp|", 8, ".1e"), Col("p99|dp|", 8, ".1e"), Col("mean|dp|", 8, ".1e"), Col("top1", 7),
        Col("exact ms", 8, ".2f"), Col("fast ms", 7, ".2f"), Col("x", 5, ".2f"),
    )  # fmt: skip
    for m in run.models:
        summary.row(
            m.name, m.task, f"{m.fidelity_exact}/{m.fidelity_fast}", m.n, m.reduced, m.max_dp, m.p99_dp,
            m.mean_dp, f"{m.top1_agree}/{m.n}", m.exact_ms, m.fast_ms, ratio(m.exact_ms, m.fast_ms),
        )  # fmt: skip
    print()
    summary.print()
    print("fidelity: spec.preprocess.fidelity of the exact / the fast predictor. reduced: images the fast")
    print("predictor decoded at reduced scale (JPEG draft). |dp|: |fast - exact| of every label's score")
    print("(detectors: the label's best box) over all images; top1: images with the same top label.")
    print("x: mean exact ms / mean fast ms.")
    print()
    split = Table(
        Col("model", 34), Col("fixtures max", 12, ".1e"), Col("synth max", 9, ".1e"),
        Col("synth p99", 9, ".1e"), Col("sens. max", 9, ".1e"), Col("sens. p99", 9, ".1e"),
    )  # fmt: skip
    for m in run.models:
        split.row(
            m.name, m.fixtures_max_dp, m.synthetic_max_dp, m.synthetic_p99_dp, m.lsb_max_dp, m.lsb_p99_dp
        )
    split.print()
    print("|dp| on the fixtures (photos) and on the synthetic images; sens.: the |dp| that moving 0.1 % of")
    print("the exact input's values by +-1 makes on the same images (the model's sensitivity there).")
    for m in run.models:
        print()
        print(f"{m.name}: {m.recipe}")
        if m.task == str(Task.DETECTION):
            print(
                f"  boxes >= {m.box_threshold:g}: {m.box_pairs} matched (IoU min {m.iou_min:.3f}, p1 "
                f"{m.iou_p1:.3f}, mean {m.iou_mean:.4f}); unmatched: {m.box_unmatched_exact} exact-only, "
                f"{m.box_unmatched_fast} fast-only"
            )
        print("  worst: " + ", ".join(f"{name} {dp:.1e}" for name, dp in m.worst))
        sizes = Table(
            Col("size", 11), Col("n", 3), Col("reduced", 7), Col("exact ms", 8, ".2f"),
            Col("fast ms", 7, ".2f"), Col("x", 5, ".2f"), Col("max|dp|", 8, ".1e"),
        )  # fmt: skip
        for s in m.sizes:
            sizes.row(s.size, s.n, s.reduced, s.exact_ms, s.fast_ms, ratio(s.exact_ms, s.fast_ms), s.max_dp)
        sizes.print()
        encodings = Table(
            Col("images", 26), Col("n", 3), Col("reduced", 7), Col("max|dp|", 8, ".1e"),
            Col("p99|dp|", 8, ".1e"), Col("mean|dp|", 8, ".1e"), Col("sens. max", 9, ".1e"),
        )  # fmt: skip
        for g in m.groups:
            encodings.row(g.group, g.n, g.reduced, g.max_dp, g.p99_dp, g.mean_dp, g.lsb_max_dp)
        encodings.print()
        factors: dict[int, list[str]] = {}
        for row in m.images:
            if row.reduced > 1:
                factors.setdefault(row.reduced, []).append(row.name)
        for factor, names in sorted(factors.items()):
            shown = ", ".join(names[:6]) + (f", ... ({len(names)})" if len(names) > 6 else "")
            print(f"  decoded at 1/{factor}: {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("fidelity_bench", __doc__)
    parser.add_argument(
        "--model", action="append", help=f"an export folder ({DEMO!r}: the demo detector); repeatable"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"corpus seed (default {DEFAULT_SEED})"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image and mode (default 3)")
    parser.add_argument("--threshold", type=float, default=0.5, help="boxes compared: probability >= (0.5)")
    parser.add_argument("--match-iou", type=float, default=0.1, help="least IoU of a matched pair (0.1)")
    add_quick_and_json(parser, f"the fixtures and {QUICK_IMAGES} synthetic images, one timed run")
    args = parser.parse_args(argv)
    exit_on_signals()
    run = measure(
        args.model, args.seed, args.quick, 1 if args.quick else args.repeat, args.threshold, args.match_iou
    )
    return report_and_save(run, report, args.json)


if __name__ == "__main__":
    sys.exit(main())
