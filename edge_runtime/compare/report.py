"""The comparison report: frozen value objects, each with its `to_dict()` for --json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_runtime.domain import Task

NONE = "(none)"  # how a missing top-1 is shown


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


def _sum_boxes(rows: Sequence[BoxMatches]) -> BoxMatches:
    matched = sum(r.matched for r in rows)
    with_pairs = [r for r in rows if r.matched]
    mean_iou = sum((r.mean_iou or 0.0) * r.matched for r in with_pairs) / matched if matched else None
    mean_dp = sum((r.mean_abs_dp or 0.0) * r.matched for r in with_pairs) / matched if matched else None
    max_dp = max((r.max_abs_dp or 0.0 for r in with_pairs), default=None)
    only_old = sum(r.only_old for r in rows)
    only_new = sum(r.only_new for r in rows)
    return BoxMatches("*", matched, only_old, only_new, mean_iou, max_dp, mean_dp)
