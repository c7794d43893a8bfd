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

Modules: report.py (the frozen report value objects), stats.py (the pure comparison), images.py (which
files are compared), run.py (both models over the images), text.py (the terminal rendering); this
package re-exports what callers use (the other value objects are in report.py).
"""

from edge_runtime.compare.images import IMAGE_SUFFIXES, discover_images
from edge_runtime.compare.report import NONE, ComparisonReport, ImageFailure, ModelSide
from edge_runtime.compare.stats import compare, iou, label_scores, match_boxes, top1
from edge_runtime.compare.text import SHOWN_IMAGES, render_text

__all__ = [
    "IMAGE_SUFFIXES",
    "NONE",
    "SHOWN_IMAGES",
    "ComparisonReport",
    "ImageFailure",
    "ModelSide",
    "compare",
    "discover_images",
    "iou",
    "label_scores",
    "match_boxes",
    "render_text",
    "top1",
]
