"""Decoders for detector layouts recognised by their tensors' shapes (model/layouts.py), written from each
layout's description:

objectness  [B, N, 5+C]  cx, cy, w, h (input pixels), objectness, C class probabilities; score = objectness
                         x class probability of the best class (AutoML for Images' YOLOv5 contract)
anchor-free [B, 4+C, N]  cx, cy, w, h (input pixels), C class scores, no objectness
end-to-end  [B, K, 6]    x1, y1, x2, y2 (input pixels), score, class: already suppressed in the graph
detr        [B, Q, 4] + [B, Q, C] or [B, Q, 1+C]: cx, cy, w, h as fractions of the input, class logits
                         (sigmoid; with 1+C the first column is background); one class per query
box lists   boxes_i [n, 4] x1, y1, x2, y2 (input pixels), labels_i [n], scores_i [n]: AutoML for Images'
                         Faster R-CNN / RetinaNet / Mask R-CNN, NMS inside the graph

The first two are suppressed here, class by class (`classwise_nms`, the AutoML contract's batched NMS:
the best box first, a box of the same class overlapping a kept one by IoU > threshold dropped). Every
decoder takes the first image of the batch, keeps scores above the threshold, orders by score and keeps
at most `max_detections`; boxes go back to the original picture through the `InputGeometry` the
preprocessing made (letterbox padding and scale undone) and end as clipped fractions like Custom Vision's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.domain import BoundingBox, Prediction
from edge_runtime.errors import InferenceError
from edge_runtime.model.letterbox import InputGeometry
from edge_runtime.model.spec import DetectionParams, Postprocess

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def named(outputs: Mapping[str, Any], name: str) -> NDArray[Any]:
    for key, value in outputs.items():
        if key.split(":")[0] == name:
            return np.asarray(value)
    raise InferenceError(f"the model returned no output {name!r} (outputs: {list(outputs)})")


def first_image(tensor: NDArray[Any], rank: int, name: str) -> FloatArray:
    """The batch's first image of a [B, ...] output of `rank` dimensions, as float64."""
    if tensor.ndim != rank or tensor.shape[0] < 1:
        raise InferenceError(f"output {name!r} has shape {tensor.shape}, expected {rank} dimensions")
    out: FloatArray = tensor[0].astype(np.float64)
    return out


def centre_to_corners(boxes: FloatArray) -> FloatArray:
    """[N, 4] cx, cy, w, h -> x1, y1, x2, y2."""
    half = boxes[:, 2:4] / 2
    return np.concatenate((boxes[:, 0:2] - half, boxes[:, 0:2] + half), axis=1)


def iou_with(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one x1, y1, x2, y2 box with each of [N, 4]."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    overlap = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou: FloatArray = np.where(overlap > 0, overlap / (area + areas - overlap), 0.0)
    return iou


def classwise_nms(
    boxes: FloatArray, scores: FloatArray, classes: IntArray, iou_threshold: float, limit: int
) -> list[int]:
    """Indices kept, best score first: a box is dropped when a kept box of its class overlaps it by
    IoU > iou_threshold."""
    order = np.argsort(-scores, kind="stable")
    dropped = np.zeros(len(scores), dtype=bool)
    kept: list[int] = []
    for index in order:
        if dropped[index]:
            continue
        kept.append(int(index))
        if len(kept) >= limit:
            break
        same_class = classes == classes[index]
        dropped |= same_class & (iou_with(boxes[index], boxes) > iou_threshold)
    return kept


def _best_first(scores: FloatArray, params: DetectionParams) -> list[int]:
    keep = np.where(scores > params.prob_threshold)[0]
    return [int(i) for i in keep[np.argsort(-scores[keep], kind="stable")][: params.max_detections]]


def _predictions(
    corners: FloatArray,
    scores: FloatArray,
    classes: IntArray,
    picks: Sequence[int],
    labels: Sequence[str],
    geometry: InputGeometry,
) -> tuple[Prediction, ...]:
    if not picks:
        return ()
    fractions = geometry.to_fractions(corners[list(picks)])
    result = []
    for (x1, y1, x2, y2), index in zip(fractions, picks, strict=True):
        cls = int(classes[index])
        if not 0 <= cls < len(labels):
            raise InferenceError(f"the model predicted class {cls} but there are {len(labels)} labels")
        box = BoundingBox(float(x1), float(y1), float(x2 - x1), float(y2 - y1))
        result.append(Prediction(labels[cls], float(scores[index]), cls, box))
    return tuple(result)


def _suppressed(
    corners: FloatArray,
    scores: FloatArray,
    classes: IntArray,
    labels: Sequence[str],
    params: DetectionParams,
    geometry: InputGeometry,
) -> tuple[Prediction, ...]:
    candidates = np.where(scores > params.prob_threshold)[0]
    boxes, kept_scores, kept_classes = corners[candidates], scores[candidates], classes[candidates]
    kept = classwise_nms(boxes, kept_scores, kept_classes, params.iou_threshold, params.max_detections)
    return _predictions(corners, scores, classes, [int(candidates[k]) for k in kept], labels, geometry)


def _class_count(found: int, labels: Sequence[str], name: str) -> None:
    if found != len(labels):
        raise InferenceError(f"output {name!r} holds {found} classes for {len(labels)} labels")


def decode_objectness(
    rows: FloatArray, labels: Sequence[str], params: DetectionParams, geometry: InputGeometry, name: str
) -> tuple[Prediction, ...]:
    """[N, 5+C] rows. Like the contract's NMS, a row needs objectness over the threshold first, then
    objectness x its best class probability over it too."""
    _class_count(rows.shape[1] - 5, labels, name)
    objectness = rows[:, 4]
    probabilities = rows[:, 5:] * objectness[:, None]
    classes = probabilities.argmax(axis=1)
    scores = np.where(objectness > params.prob_threshold, probabilities.max(axis=1), 0.0)
    return _suppressed(centre_to_corners(rows[:, :4]), scores, classes, labels, params, geometry)


def decode_anchor_free(
    columns: FloatArray, labels: Sequence[str], params: DetectionParams, geometry: InputGeometry, name: str
) -> tuple[Prediction, ...]:
    """[4+C, N] columns: transposed to rows of cx, cy, w, h and C class scores."""
    rows = columns.T
    _class_count(rows.shape[1] - 4, labels, name)
    classes = rows[:, 4:].argmax(axis=1)
    scores = rows[:, 4:].max(axis=1)
    return _suppressed(centre_to_corners(rows[:, :4]), scores, classes, labels, params, geometry)


def decode_end_to_end(
    rows: FloatArray, labels: Sequence[str], params: DetectionParams, geometry: InputGeometry, name: str
) -> tuple[Prediction, ...]:
    if rows.shape[1] != 6:
        raise InferenceError(f"output {name!r} rows hold {rows.shape[1]} values, expected 6")
    scores, classes = rows[:, 4], np.rint(rows[:, 5]).astype(np.int64)
    return _predictions(rows[:, :4], scores, classes, _best_first(scores, params), labels, geometry)


def sigmoid(x: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def decode_detr(
    boxes: FloatArray,
    logits: FloatArray,
    labels: Sequence[str],
    params: DetectionParams,
    geometry: InputGeometry,
) -> tuple[Prediction, ...]:
    """boxes [Q, 4] cx, cy, w, h as fractions of the input; logits [Q, C] or [Q, 1+C] (background first)."""
    if logits.shape[1] == len(labels) + 1:
        logits = logits[:, 1:]
    _class_count(logits.shape[1], labels, "logits")
    if boxes.shape[0] != logits.shape[0]:
        raise InferenceError(f"{boxes.shape[0]} boxes for {logits.shape[0]} rows of class logits")
    probabilities = sigmoid(logits)
    classes, scores = probabilities.argmax(axis=1), probabilities.max(axis=1)
    width, height = geometry.input_size
    corners = centre_to_corners(boxes) * np.array([width, height, width, height], dtype=np.float64)
    return _predictions(corners, scores, classes, _best_first(scores, params), labels, geometry)


def decode_box_lists(
    outputs: Mapping[str, Any],
    names: Sequence[str],
    labels: Sequence[str],
    params: DetectionParams,
    geometry: InputGeometry,
) -> tuple[Prediction, ...]:
    """`names`: the first image's boxes, labels and scores outputs (boxes_0, labels_0, scores_0)."""
    boxes = named(outputs, names[0]).astype(np.float64).reshape(-1, 4)
    classes = np.rint(named(outputs, names[1]).astype(np.float64).reshape(-1)).astype(np.int64)
    scores = named(outputs, names[2]).astype(np.float64).reshape(-1)
    if not len(boxes) == len(classes) == len(scores):
        raise InferenceError(
            f"{len(boxes)} boxes, {len(classes)} labels and {len(scores)} scores from {list(names)}"
        )
    return _predictions(boxes, scores, classes, _best_first(scores, params), labels, geometry)


def decode(
    kind: Postprocess,
    outputs: Mapping[str, Any],
    names: Sequence[str],
    labels: Sequence[str],
    params: DetectionParams,
    geometry: InputGeometry,
) -> tuple[Prediction, ...]:
    """The decoder of `kind`, reading the outputs `names` (in the layout's order)."""
    if kind is Postprocess.BOX_LISTS:
        return decode_box_lists(outputs, names, labels, params, geometry)
    if kind is Postprocess.DETR:
        boxes = first_image(named(outputs, names[0]), 3, names[0])
        logits = first_image(named(outputs, names[1]), 3, names[1])
        return decode_detr(boxes, logits, labels, params, geometry)
    tensor = first_image(named(outputs, names[0]), 3, names[0])
    if kind is Postprocess.OBJECTNESS:
        return decode_objectness(tensor, labels, params, geometry, names[0])
    if kind is Postprocess.ANCHOR_FREE:
        return decode_anchor_free(tensor, labels, params, geometry, names[0])
    if kind is Postprocess.END_TO_END:
        return decode_end_to_end(tensor, labels, params, geometry, names[0])
    raise InferenceError(f"no decoder for {kind.value}")
