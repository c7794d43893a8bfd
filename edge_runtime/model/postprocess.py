"""Raw model outputs -> predictions, as Custom Vision's own code computes them.

Classification lists every label in labels.txt order (the 2.2 container). Detection follows the
export's own `object_detection.py` (YOLO grid) and the [S1] outputs; boxes are fractions of the
original image, clipped to [0, 1] after NMS (the reference leaves them unclipped). Layouts recognised
by signature (AutoML for Images, generic detector heads) are decoded by model/detectors.py, with the
`InputGeometry` preprocessing made for the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.domain import BoundingBox, Prediction
from edge_runtime.errors import InferenceError
from edge_runtime.model import detectors
from edge_runtime.model.letterbox import InputGeometry
from edge_runtime.model.spec import DetectionParams, ModelSpec, Postprocess

FloatArray = NDArray[np.float64]


def postprocess(
    outputs: Mapping[str, Any], spec: ModelSpec, geometry: InputGeometry | None = None
) -> tuple[Prediction, ...]:
    """`geometry`: where the picture lies in the input (preprocess.prepare), for the layouts whose boxes
    are in input pixels."""
    kind = spec.postprocess
    if kind in (Postprocess.LOGITS_MULTICLASS, Postprocess.LOGITS_MULTILABEL):
        logits = detectors.first_image(detectors.named(outputs, spec.decoder_outputs[0]), 2, "logits")
        return classify_logits(logits, spec.labels, kind, spec.detection.prob_threshold)
    if spec.decoder_outputs:
        if geometry is None:
            raise InferenceError(f"{kind.value} boxes need the picture's place in the input")
        return detectors.decode(kind, outputs, spec.decoder_outputs, spec.labels, spec.detection, geometry)
    if kind in (Postprocess.MULTICLASS, Postprocess.MULTILABEL):
        return classify(_first_tensor(outputs), spec.labels, multilabel=kind is Postprocess.MULTILABEL)
    if kind is Postprocess.ZIPMAP:
        return classify_zipmap(outputs, spec.labels)
    if kind is Postprocess.YOLO:
        return detect_yolo(_first_tensor(outputs), spec.labels, spec.detection, activated=False)
    if kind is Postprocess.YOLO_ACTIVATED:
        grid = _first_tensor(outputs)
        size = spec.preprocess.input_size
        if grid.ndim == 2 and size is not None:  # RegionYolo flattens [1, A*(5+C)*H*W]
            channels = len(spec.detection.anchors) * (5 + len(spec.labels))
            grid = grid.reshape(1, channels, size[1] // 32, size[0] // 32)
        return detect_yolo(grid, spec.labels, spec.detection, activated=True)
    if kind is Postprocess.SSD:
        return detect_ssd(outputs, spec.labels, spec.detection)
    return detect_ssd_raw(outputs, spec.labels, spec.detection)


def _first_tensor(outputs: Mapping[str, Any]) -> FloatArray:
    for value in outputs.values():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            tensor: FloatArray = value.astype(np.float64)
            return tensor
    raise InferenceError(f"the model returned no float tensor (outputs: {list(outputs)})")


def _named(outputs: Mapping[str, Any], name: str) -> NDArray[Any]:
    for key, value in outputs.items():
        if key.split(":")[0] == name:
            return np.asarray(value)
    raise InferenceError(f"the model returned no output {name!r} (outputs: {list(outputs)})")


def _softmax(x: FloatArray) -> FloatArray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


def classify(scores: FloatArray, labels: Sequence[str], multilabel: bool) -> tuple[Prediction, ...]:
    vector = scores.reshape(-1)
    if vector.size != len(labels):
        raise InferenceError(f"the model returned {vector.size} scores for {len(labels)} labels")
    # Exports end in Softmax/Sigmoid already; logits (values outside [0, 1]) get the missing activation.
    if vector.min() < 0.0 or vector.max() > 1.0:
        vector = _sigmoid(vector) if multilabel else _softmax(vector)
    return tuple(Prediction(label, float(p)) for label, p in zip(labels, vector, strict=True))


def classify_logits(
    logits: FloatArray, labels: Sequence[str], kind: Postprocess, threshold: float
) -> tuple[Prediction, ...]:
    """AutoML for Images' classifiers return logits: softmax lists every label (labels.json order);
    sigmoid lists the labels whose probability is over `threshold`, in the same order."""
    if logits.size != len(labels):
        raise InferenceError(f"the model returned {logits.size} scores for {len(labels)} labels")
    if kind is Postprocess.LOGITS_MULTICLASS:
        probabilities = _softmax(logits.reshape(-1))
        return tuple(Prediction(label, float(p)) for label, p in zip(labels, probabilities, strict=True))
    probabilities = detectors.sigmoid(logits.reshape(-1))
    return tuple(
        Prediction(label, float(p)) for label, p in zip(labels, probabilities, strict=True) if p > threshold
    )


def classify_zipmap(outputs: Mapping[str, Any], labels: Sequence[str]) -> tuple[Prediction, ...]:
    for value in outputs.values():
        mapping = value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else value
        if isinstance(mapping, dict):
            missing = [label for label in labels if label not in mapping]
            if missing:
                raise InferenceError(f"the model's label map lacks {missing}")
            return tuple(Prediction(label, float(mapping[label])) for label in labels)
    raise InferenceError(f"the model returned no label map (outputs: {list(outputs)})")


def _clipped(x: float, y: float, w: float, h: float) -> BoundingBox:
    left, top = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    right, bottom = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    return BoundingBox(left, top, right - left, bottom - top)


def decode_yolo_grid(
    grid: FloatArray, anchors: Sequence[tuple[float, float]], activated: bool
) -> tuple[FloatArray, FloatArray]:
    """[1, A*(5+C), H, W] -> boxes [N, 4] (x, y, w, h, top-left, fractions) and class scores [N, C]."""
    if grid.ndim != 4 or grid.shape[0] != 1:
        raise InferenceError(f"expected a YOLO grid [1, A*(5+C), H, W], got {grid.shape}")
    anchor = np.asarray(anchors, dtype=np.float64)
    num_anchors = anchor.shape[0]
    _, channels, height, width = grid.shape
    if channels % num_anchors or channels // num_anchors < 6:
        raise InferenceError(
            f"YOLO grid has {channels} channels, not a multiple of {num_anchors} x (5 + classes)"
        )
    out = grid[0].transpose(1, 2, 0).reshape(height, width, num_anchors, -1)
    squash = (lambda v: v) if activated else _sigmoid
    cols = np.arange(width)[np.newaxis, :, np.newaxis]
    rows = np.arange(height)[:, np.newaxis, np.newaxis]
    x = (squash(out[..., 0]) + cols) / width
    y = (squash(out[..., 1]) + rows) / height
    w = np.exp(out[..., 2]) * anchor[:, 0][np.newaxis, np.newaxis, :] / width
    h = np.exp(out[..., 3]) * anchor[:, 1][np.newaxis, np.newaxis, :] / height
    boxes = np.stack((x - w / 2, y - h / 2, w, h), axis=-1).reshape(-1, 4)
    objectness = squash(out[..., 4])
    classes = out[..., 5:] if activated else _softmax(out[..., 5:])
    scores = (classes * objectness[..., np.newaxis]).reshape(-1, classes.shape[-1])
    return boxes, scores


def greedy_nms(
    boxes: FloatArray, scores: FloatArray, params: DetectionParams
) -> list[tuple[int, int, float]]:
    """The export's NMS: returns (box index, class, probability) in selection order.

    Each round takes the best remaining (box, class) score and zeroes only that class on the chosen box
    and on boxes overlapping it with IoU > threshold, so a suppressed box can come back with its
    next-best class.
    """
    max_probs = scores.max(axis=1)
    candidates = np.where(max_probs > params.prob_threshold)[0]
    order = candidates[np.argsort(-max_probs[candidates], kind="stable")]
    boxes, scores = boxes[order], scores[order].copy()
    max_probs, max_classes = scores.max(axis=1), scores.argmax(axis=1)
    areas = boxes[:, 2] * boxes[:, 3]
    selected: list[tuple[int, int, float]] = []
    for _ in range(min(params.max_detections, len(boxes))):
        i = int(np.argmax(max_probs))
        if max_probs[i] < params.prob_threshold:
            break
        cls = int(max_classes[i])
        selected.append((int(order[i]), cls, float(max_probs[i])))
        box = boxes[i]
        x1 = np.maximum(box[0], boxes[:, 0])
        y1 = np.maximum(box[1], boxes[:, 1])
        x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
        y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
        overlap = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = overlap / (areas[i] + areas - overlap)
        hit = np.where(iou > params.iou_threshold)[0]
        hit = np.union1d(hit, [i])
        scores[hit, cls] = 0.0
        max_probs[hit] = scores[hit].max(axis=1)
        max_classes[hit] = scores[hit].argmax(axis=1)
    return selected


def _boxes_to_predictions(
    boxes: FloatArray, picks: Sequence[tuple[int, int, float]], labels: Sequence[str]
) -> tuple[Prediction, ...]:
    result = []
    for index, cls, prob in picks:
        if cls >= len(labels):
            raise InferenceError(f"the model predicted class {cls} but there are {len(labels)} labels")
        x, y, w, h = (float(v) for v in boxes[index])
        result.append(Prediction(labels[cls], prob, cls, _clipped(x, y, w, h)))
    return tuple(result)


def detect_yolo(
    grid: FloatArray, labels: Sequence[str], params: DetectionParams, activated: bool
) -> tuple[Prediction, ...]:
    boxes, scores = decode_yolo_grid(grid, params.anchors, activated)
    if scores.shape[1] != len(labels):
        raise InferenceError(f"the YOLO grid has {scores.shape[1]} classes for {len(labels)} labels")
    return _boxes_to_predictions(boxes, greedy_nms(boxes, scores, params), labels)


def detect_ssd(
    outputs: Mapping[str, Any], labels: Sequence[str], params: DetectionParams
) -> tuple[Prediction, ...]:
    """[S1]: boxes [1, N, 4] as x1, y1, x2, y2 (fractions), scores [1, N], classes [1, N]; sorted by score."""
    boxes = _named(outputs, "detected_boxes").reshape(-1, 4).astype(np.float64)
    scores = _named(outputs, "detected_scores").reshape(-1).astype(np.float64)
    classes = _named(outputs, "detected_classes").reshape(-1).astype(np.int64)
    keep = np.where(scores > params.prob_threshold)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")][: params.max_detections]
    xywh = np.stack((boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), axis=-1)
    picks = [(int(i), int(classes[i]), float(scores[i])) for i in keep]
    return _boxes_to_predictions(xywh, picks, labels)


def detect_ssd_raw(
    outputs: Mapping[str, Any], labels: Sequence[str], params: DetectionParams
) -> tuple[Prediction, ...]:
    """OpenVINO [S1] NoPostProcess: raw_boxes (cx, cy, w, h), raw_probs with background in column 0."""
    raw = _named(outputs, "raw_boxes").reshape(-1, 4).astype(np.float64)
    probs = _named(outputs, "raw_probs").astype(np.float64)
    probs = probs.reshape(raw.shape[0], -1)[:, 1:]
    boxes = np.stack((raw[:, 0] - raw[:, 2] / 2, raw[:, 1] - raw[:, 3] / 2, raw[:, 2], raw[:, 3]), axis=-1)
    return _boxes_to_predictions(boxes, greedy_nms(boxes, probs, params), labels)
