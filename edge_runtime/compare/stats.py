"""The pure comparison: top-1, label scores and |dp|, the confusion table, greedy box matching by IoU."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_runtime.compare.report import (
    NONE,
    BoxMatches,
    ComparisonReport,
    Confusion,
    ImageComparison,
    ImageFailure,
    LabelStats,
    ModelSide,
)
from edge_runtime.domain import BoundingBox, Prediction, PredictionResult, Task


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
