"""Migration parity: how far a NEW model's predictions are from an OLD one's on the same images.

`edge-runtime compare --model OLD --model NEW PATHS...` predicts every image with both models and hands
the two lists of `PredictionResult`s to `compare()`, which is pure: it returns a frozen
`ComparisonReport` (top-1 agreement, per-label |dp|, a confusion table, box matches for detectors, the
labels only one model has), rendered as text by `render_text()` or as JSON by `to_dict()`.

Labels are matched by name, never by index: a NEW export whose labels.txt lists the same names in
another order is compared correctly (and one that maps the same outputs to other names disagrees).

Definitions (the same for classifiers and detectors):
  label score     a label's probability in one image: the highest probability of any prediction with
                  that name, 0.0 when there is none (a classifier lists every label; a detector's boxes
                  above its own threshold are what it has).
  |dp|            |NEW score - OLD score| for a label both models have.
  top-1           the name of the image's most probable prediction; for a detector, of its most probable
                  box at or above `threshold`; None ("(none)") when it has no such prediction.
  box matches     per image and per label name, boxes at or above `threshold` are paired greedily, the
                  highest IoU first, while IoU >= `iou`; what is left over is only-in-old / only-in-new.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.domain import BoundingBox, Prediction, PredictionResult, Task

NONE = "(none)"  # how a missing top-1 is shown
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SHOWN_IMAGES = 20  # the text report lists at most this many disagreeing images (JSON has all)


# --------------------------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class ModelSide:
    """One of the two models: what the report says about it."""

    path: str  # as given on the command line
    task: Task
    labels: tuple[str, ...]
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "task": self.task.value,
            "labels": list(self.labels),
            "device": self.device,
        }


@dataclass(frozen=True, slots=True)
class ImageFailure:
    """An image that was not compared: unreadable, not an image, or a model failed on it."""

    image: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "error": self.error}


@dataclass(frozen=True, slots=True)
class ImageComparison:
    image: str
    old_top: str | None
    old_top_probability: float | None
    new_top: str | None
    new_top_probability: float | None
    max_abs_dp: float  # over the labels both models have (0.0 when they share none)
    worst_label: str | None  # the label with that |dp| (None when no label differs)
    # Detection (both models): boxes matched / left over in this image; all 0 otherwise.
    boxes_matched: int = 0
    boxes_only_old: int = 0
    boxes_only_new: int = 0

    @property
    def agree(self) -> bool:
        return self.old_top == self.new_top

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "agree": self.agree,
            "old_top": self.old_top,
            "old_top_probability": self.old_top_probability,
            "new_top": self.new_top,
            "new_top_probability": self.new_top_probability,
            "max_abs_dp": self.max_abs_dp,
            "worst_label": self.worst_label,
            "boxes_matched": self.boxes_matched,
            "boxes_only_old": self.boxes_only_old,
            "boxes_only_new": self.boxes_only_new,
        }


@dataclass(frozen=True, slots=True)
class LabelStats:
    """|dp| of one label both models have, over the compared images."""

    label: str
    images: int
    max_abs_dp: float
    mean_abs_dp: float
    mean_old: float  # mean label score
    mean_new: float
    worst_image: str | None  # where |dp| is largest (None when it is 0 everywhere)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "images": self.images,
            "max_abs_dp": self.max_abs_dp,
            "mean_abs_dp": self.mean_abs_dp,
            "mean_old": self.mean_old,
            "mean_new": self.mean_new,
            "worst_image": self.worst_image,
        }


@dataclass(frozen=True, slots=True)
class Confusion:
    """Top-1 OLD label (rows) x top-1 NEW label (columns), image counts.

    Both axes are `labels`: every name that is some image's top-1 for either model, in OLD's label order,
    then NEW's, then NONE; the diagonal is agreement."""

    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]  # counts[row][column]

    def count(self, old: str | None, new: str | None) -> int:
        names = self.labels
        old_name, new_name = old or NONE, new or NONE
        if old_name not in names or new_name not in names:
            return 0
        return self.counts[names.index(old_name)][names.index(new_name)]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "counts": [list(row) for row in self.counts]}


@dataclass(frozen=True, slots=True)
class BoxMatches:
    """Detection: one label's boxes over all images (label "*" in `ComparisonReport.box_total`)."""

    label: str
    matched: int
    only_old: int
    only_new: int
    mean_iou: float | None  # of the matched pairs
    max_abs_dp: float | None  # |probability difference| of the matched pairs
    mean_abs_dp: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "matched": self.matched,
            "only_old": self.only_old,
            "only_new": self.only_new,
            "mean_iou": self.mean_iou,
            "max_abs_dp": self.max_abs_dp,
            "mean_abs_dp": self.mean_abs_dp,
        }


@dataclass(frozen=True, slots=True)
class ComparisonReport:
    old: ModelSide
    new: ModelSide
    iou: float
    threshold: float
    images: tuple[ImageComparison, ...]
    failures: tuple[ImageFailure, ...]
    labels: tuple[LabelStats, ...]  # the labels both models have, in OLD's order
    confusion: Confusion
    boxes: tuple[BoxMatches, ...] | None  # None unless both models are detectors
    old_only_labels: tuple[str, ...]
    new_only_labels: tuple[str, ...]

    @property
    def agreed(self) -> int:
        return sum(1 for image in self.images if image.agree)

    @property
    def agreement(self) -> float | None:
        """Fraction of the compared images whose top-1 is the same (None without images)."""
        return self.agreed / len(self.images) if self.images else None

    @property
    def box_total(self) -> BoxMatches | None:
        return None if self.boxes is None else _sum_boxes(self.boxes)

    def to_dict(self) -> dict[str, Any]:
        total = self.box_total
        return {
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "iou": self.iou,
            "threshold": self.threshold,
            "images_compared": len(self.images),
            "images_failed": len(self.failures),
            "top1": {"agreed": self.agreed, "compared": len(self.images), "agreement": self.agreement},
            "labels": [stats.to_dict() for stats in self.labels],
            "unmatched_labels": {
                "old_only": list(self.old_only_labels),
                "new_only": list(self.new_only_labels),
            },
            "confusion": self.confusion.to_dict(),
            "boxes": None
            if self.boxes is None or total is None
            else {"by_label": [b.to_dict() for b in self.boxes], "total": total.to_dict()},
            "images": [image.to_dict() for image in self.images],
            "failures": [failure.to_dict() for failure in self.failures],
        }


# ------------------------------------------------------------------------------------------- comparison


def iou(a: BoundingBox, b: BoundingBox) -> float:
    """Intersection over union of two normalised boxes (0.0 when either has no area)."""
    width = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    height = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BoxPairing:
    """One image's boxes of one label, paired."""

    pairs: tuple[tuple[Prediction, Prediction, float], ...]  # (old, new, IoU)
    only_old: int
    only_new: int


def match_boxes(old: Sequence[Prediction], new: Sequence[Prediction], min_iou: float) -> BoxPairing:
    """Greedy: every (old, new) pair with IoU >= min_iou, the highest IoU first (ties: input order); a box
    is used once. The caller passes boxes of one label."""
    candidates: list[tuple[float, int, int]] = []
    for i, a in enumerate(old):
        for j, b in enumerate(new):
            if a.bounding_box is None or b.bounding_box is None:
                continue
            overlap = iou(a.bounding_box, b.bounding_box)
            if overlap >= min_iou and overlap > 0.0:
                candidates.append((overlap, i, j))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    used_old: set[int] = set()
    used_new: set[int] = set()
    pairs: list[tuple[Prediction, Prediction, float]] = []
    for overlap, i, j in candidates:
        if i in used_old or j in used_new:
            continue
        used_old.add(i)
        used_new.add(j)
        pairs.append((old[i], new[j], overlap))
    return BoxPairing(tuple(pairs), len(old) - len(pairs), len(new) - len(pairs))


def label_scores(result: PredictionResult) -> dict[str, float]:
    """Each label's score in one image: its highest probability (labels without a prediction are absent)."""
    scores: dict[str, float] = {}
    for p in result.predictions:
        if p.probability > scores.get(p.tag_name, -1.0):
            scores[p.tag_name] = p.probability
    return scores


def top1(result: PredictionResult, threshold: float = 0.0) -> Prediction | None:
    """The most probable prediction (a detector's: at or above threshold); the first one on ties."""
    candidates = [
        p for p in result.predictions if result.task is Task.CLASSIFICATION or p.probability >= threshold
    ]
    best: Prediction | None = None
    for p in candidates:
        if best is None or p.probability > best.probability:
            best = p
    return best


def _boxes(result: PredictionResult, threshold: float) -> dict[str, list[Prediction]]:
    by_label: dict[str, list[Prediction]] = {}
    for p in result.predictions:
        if p.bounding_box is not None and p.probability >= threshold:
            by_label.setdefault(p.tag_name, []).append(p)
    return by_label


def _box_stats(label: str, pairs: Sequence[tuple[float, float]], only_old: int, only_new: int) -> BoxMatches:
    """pairs: (IoU, |dp|) of each matched pair."""
    if not pairs:
        return BoxMatches(label, 0, only_old, only_new, None, None, None)
    ious = [p[0] for p in pairs]
    dps = [p[1] for p in pairs]
    return BoxMatches(
        label, len(pairs), only_old, only_new, sum(ious) / len(ious), max(dps), sum(dps) / len(dps)
    )


def _sum_boxes(rows: Sequence[BoxMatches]) -> BoxMatches:
    matched = sum(r.matched for r in rows)
    with_pairs = [r for r in rows if r.matched]
    mean_iou = sum((r.mean_iou or 0.0) * r.matched for r in with_pairs) / matched if matched else None
    mean_dp = sum((r.mean_abs_dp or 0.0) * r.matched for r in with_pairs) / matched if matched else None
    max_dp = max((r.max_abs_dp or 0.0 for r in with_pairs), default=None)
    only_old = sum(r.only_old for r in rows)
    only_new = sum(r.only_new for r in rows)
    return BoxMatches("*", matched, only_old, only_new, mean_iou, max_dp, mean_dp)


def _ordered_union(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))


def compare(
    old: ModelSide,
    new: ModelSide,
    images: Sequence[str],
    old_results: Sequence[PredictionResult],
    new_results: Sequence[PredictionResult],
    *,
    iou_threshold: float = 0.5,
    threshold: float = 0.0,
    failures: Sequence[ImageFailure] = (),
) -> ComparisonReport:
    """Compare OLD's and NEW's predictions of the same images (the three sequences are parallel)."""
    if not len(images) == len(old_results) == len(new_results):
        raise ValueError(
            f"{len(images)} images, {len(old_results)} old and {len(new_results)} new results: not parallel"
        )
    common = tuple(label for label in old.labels if label in set(new.labels))
    detection = old.task is Task.DETECTION and new.task is Task.DETECTION
    dps: dict[str, list[tuple[float, str, float, float]]] = {label: [] for label in common}
    box_pairs: dict[str, list[tuple[float, float]]] = {}
    box_left: dict[str, list[int]] = {}  # label -> [only_old, only_new]
    rows: list[ImageComparison] = []
    for image, a, b in zip(images, old_results, new_results, strict=True):
        old_scores, new_scores = label_scores(a), label_scores(b)
        worst: tuple[float, str | None] = (0.0, None)
        for label in common:
            pa, pb = old_scores.get(label, 0.0), new_scores.get(label, 0.0)
            dp = abs(pb - pa)
            dps[label].append((dp, image, pa, pb))
            if dp > worst[0]:  # the first label on ties; None when no label differs
                worst = (dp, label)
        matched = only_old = only_new = 0
        if detection:
            old_boxes, new_boxes = _boxes(a, threshold), _boxes(b, threshold)
            for label in _ordered_union(old_boxes, new_boxes):
                pairing = match_boxes(old_boxes.get(label, []), new_boxes.get(label, []), iou_threshold)
                box_pairs.setdefault(label, []).extend(
                    (overlap, abs(pn.probability - po.probability)) for po, pn, overlap in pairing.pairs
                )
                left = box_left.setdefault(label, [0, 0])
                left[0] += pairing.only_old
                left[1] += pairing.only_new
                matched += len(pairing.pairs)
                only_old += pairing.only_old
                only_new += pairing.only_new
        top_a, top_b = top1(a, threshold), top1(b, threshold)
        rows.append(
            ImageComparison(
                image=image,
                old_top=None if top_a is None else top_a.tag_name,
                old_top_probability=None if top_a is None else top_a.probability,
                new_top=None if top_b is None else top_b.tag_name,
                new_top_probability=None if top_b is None else top_b.probability,
                max_abs_dp=worst[0],
                worst_label=worst[1],
                boxes_matched=matched,
                boxes_only_old=only_old,
                boxes_only_new=only_new,
            )
        )
    label_stats = tuple(_label_stats(label, dps[label]) for label in common)
    boxes: tuple[BoxMatches, ...] | None = None
    if detection:
        order = _ordered_union(old.labels, new.labels, box_left)  # names a result has beyond labels.txt last
        boxes = tuple(
            _box_stats(label, box_pairs.get(label, []), *box_left[label])
            for label in order
            if label in box_left
        )
    return ComparisonReport(
        old=old,
        new=new,
        iou=iou_threshold,
        threshold=threshold,
        images=tuple(rows),
        failures=tuple(failures),
        labels=label_stats,
        confusion=_confusion(old, new, rows),
        boxes=boxes,
        old_only_labels=tuple(label for label in old.labels if label not in set(new.labels)),
        new_only_labels=tuple(label for label in new.labels if label not in set(old.labels)),
    )


def _label_stats(label: str, values: Sequence[tuple[float, str, float, float]]) -> LabelStats:
    if not values:
        return LabelStats(label, 0, 0.0, 0.0, 0.0, 0.0, None)
    n = len(values)
    worst = max(values, key=lambda v: v[0])  # the first image on ties
    return LabelStats(
        label=label,
        images=n,
        max_abs_dp=worst[0],
        mean_abs_dp=sum(v[0] for v in values) / n,
        mean_old=sum(v[2] for v in values) / n,
        mean_new=sum(v[3] for v in values) / n,
        worst_image=worst[1] if worst[0] > 0.0 else None,
    )


def _confusion(old: ModelSide, new: ModelSide, rows: Sequence[ImageComparison]) -> Confusion:
    seen = {r.old_top or NONE for r in rows} | {r.new_top or NONE for r in rows}
    extra = sorted(seen - set(old.labels) - set(new.labels) - {NONE})  # names outside both labels.txt
    names = tuple(name for name in _ordered_union(old.labels, new.labels, extra, [NONE]) if name in seen)
    index = {name: i for i, name in enumerate(names)}
    counts = [[0] * len(names) for _ in names]
    for r in rows:
        counts[index[r.old_top or NONE]][index[r.new_top or NONE]] += 1
    return Confusion(names, tuple(tuple(row) for row in counts))


# ------------------------------------------------------------------------------------------ the images


def discover_images(paths: Sequence[Path]) -> tuple[list[Path], list[ImageFailure]]:
    """The images to compare: each file named (whatever its suffix), and every file with an image suffix
    under each folder named (recursive, sorted, hidden files and folders skipped). A path that does not
    exist is a failure, not an error; a file found twice is compared once."""
    found: dict[Path, None] = {}
    failures: list[ImageFailure] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found.update(dict.fromkeys(inside))
        elif path.is_file():
            found[path] = None
        else:
            failures.append(ImageFailure(str(path), "no such file or folder"))
    return list(found), failures


# ------------------------------------------------------------------------------------------------- text


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _dp(value: float | None) -> str:
    """A probability difference: small ones in scientific notation (1.5e-07 must not read 0.0000)."""
    if value is None:
        return "-"
    if value == 0.0:
        return "0"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.4f}"


def _common_folder(names: Sequence[str]) -> str:
    """The folder every image name is under ('' when none, or for a single image's own folder)."""
    folders = [os.path.dirname(name) for name in names]
    if not folders or any(not folder for folder in folders):
        return ""
    try:
        common = os.path.commonpath(folders)
    except ValueError:  # absolute and relative names mixed
        return ""
    return common if common not in ("", os.sep) else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Plain aligned columns: text left, numbers right, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(row, widths, right, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _top(label: str | None, probability: float | None) -> str:
    return NONE if label is None else f"{label} {probability:.4f}"


def render_text(report: ComparisonReport) -> str:
    """The report for a terminal: plain aligned columns, one section per question. Image names are shown
    under the folder they all share (named once); --json keeps them whole."""
    folder = _common_folder([i.image for i in report.images] + [f.image for f in report.failures])

    def shown(name: str | None) -> str:
        if name is None:
            return "-"
        return os.path.relpath(name, folder) if folder else name

    out: list[str] = []
    for role, side in (("old", report.old), ("new", report.new)):
        device = f", {side.device}" if side.device else ""
        out.append(f"{role}: {side.path} ({side.task.value}, {len(side.labels)} labels{device})")
    failed = f", {len(report.failures)} not compared" if report.failures else ""
    under = f" (under {folder}{os.sep})" if folder else ""
    out.append(f"images: {len(report.images)} compared{failed}{under}")
    out.append("")
    if report.agreement is None:
        out.append("top-1 agreement: - (no image compared)")
    else:
        out.append(f"top-1 agreement: {report.agreed}/{len(report.images)} ({100 * report.agreement:.1f} %)")
    if report.old_only_labels or report.new_only_labels:
        out.append(f"labels only in old: {', '.join(report.old_only_labels) or '-'}")
        out.append(f"labels only in new: {', '.join(report.new_only_labels) or '-'}")
    out.append("")

    if report.labels:
        out.append("probability by label (|dp| = |new - old|, per image)")
        rows = [
            [
                s.label,
                _dp(s.max_abs_dp),
                _dp(s.mean_abs_dp),
                _f(s.mean_old),
                _f(s.mean_new),
                shown(s.worst_image),
            ]
            for s in report.labels
        ]
        header = ["label", "max |dp|", "mean |dp|", "mean old", "mean new", "max at"]
        out += _table(header, rows, [False, True, True, True, True, False])
    else:
        out.append("probability by label: no label in both models")
    out.append("")

    if report.confusion.labels:
        out.append("top-1 confusion (rows: old, columns: new)")
        names = report.confusion.labels
        rows = [
            [name, *(str(n) for n in counts)]
            for name, counts in zip(names, report.confusion.counts, strict=True)
        ]
        out += _table(["old \\ new", *names], rows, [False, *(True for _ in names)])
        out.append("")

    total = report.box_total
    if report.boxes is not None and total is not None:
        out.append(f"boxes (matched by label, IoU >= {report.iou:g}, probability >= {report.threshold:g})")
        rows = [
            [
                label,
                str(b.matched),
                _f(b.mean_iou),
                str(b.only_old),
                str(b.only_new),
                _dp(b.max_abs_dp),
                _dp(b.mean_abs_dp),
            ]
            for label, b in [*((b.label, b) for b in report.boxes), ("all", total)]
        ]
        header = ["label", "matched", "mean IoU", "only old", "only new", "max |dp|", "mean |dp|"]
        out += _table(header, rows, [False, True, True, True, True, True, True])
        out.append("")

    differing = [image for image in report.images if not image.agree]
    if differing:
        out.append(f"top-1 differs on {len(differing)} of {len(report.images)} images")
        rows = [
            [
                shown(d.image),
                _top(d.old_top, d.old_top_probability),
                _top(d.new_top, d.new_top_probability),
                _dp(d.max_abs_dp),
            ]
            for d in differing[:SHOWN_IMAGES]
        ]
        out += _table(["image", "old top-1", "new top-1", "max |dp|"], rows, [False, False, False, True])
        if len(differing) > SHOWN_IMAGES:
            out.append(f"... and {len(differing) - SHOWN_IMAGES} more (--json lists every image)")
        out.append("")

    if report.failures:
        out.append(f"not compared ({len(report.failures)})")
        out += [f"  {shown(failure.image)}: {failure.error}" for failure in report.failures]
        out.append("")
    return "\n".join(out).rstrip() + "\n"
