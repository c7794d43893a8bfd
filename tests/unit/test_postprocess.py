"""Postprocessing on hand-made arrays: classification, YOLO decode, the export's NMS, [S1] outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic import sigmoid, softmax

from edge_runtime.errors import InferenceError
from edge_runtime.model.postprocess import (
    classify,
    classify_zipmap,
    decode_yolo_grid,
    detect_ssd,
    detect_ssd_raw,
    detect_yolo,
    greedy_nms,
)
from edge_runtime.model.spec import DEFAULT_YOLO_ANCHORS, DetectionParams

LABELS = ("a", "b", "c")

# ------------------------------------------------------------------------------------------ classification


def test_probabilities_pass_through_in_label_order() -> None:
    preds = classify(np.array([[0.2, 0.7, 0.1]]), LABELS, multilabel=False)
    assert [p.tag_name for p in preds] == list(LABELS)
    assert [p.probability for p in preds] == pytest.approx([0.2, 0.7, 0.1])
    assert all(p.tag_id is None and p.bounding_box is None for p in preds)


def test_multiclass_logits_get_softmax() -> None:
    preds = classify(np.array([[2.0, -1.0, 0.5]]), LABELS, multilabel=False)
    assert [p.probability for p in preds] == pytest.approx(softmax([2.0, -1.0, 0.5]))
    assert sum(p.probability for p in preds) == pytest.approx(1.0)


def test_multilabel_logits_get_sigmoid() -> None:
    preds = classify(np.array([[2.0, -1.0, 0.5]]), LABELS, multilabel=True)
    assert [p.probability for p in preds] == pytest.approx([sigmoid(2.0), sigmoid(-1.0), sigmoid(0.5)])


def test_multilabel_probabilities_pass_through() -> None:
    preds = classify(np.array([[0.9, 0.8, 0.05]]), LABELS, multilabel=True)
    assert [p.probability for p in preds] == pytest.approx([0.9, 0.8, 0.05])


def test_score_count_must_match_labels() -> None:
    with pytest.raises(InferenceError, match="2 scores for 3 labels"):
        classify(np.array([[0.5, 0.5]]), LABELS, multilabel=False)


def test_zipmap_sequence_and_map() -> None:
    seq = [{"b": 0.7, "a": 0.2, "c": 0.1}]
    out = {"classLabel": np.array([["b"]]), "loss": seq}
    preds = classify_zipmap(out, LABELS)
    assert [(p.tag_name, p.probability) for p in preds] == [("a", 0.2), ("b", 0.7), ("c", 0.1)]
    preds = classify_zipmap({"loss": {"a": 0.1, "b": 0.2, "c": 0.7}}, LABELS)
    assert [p.probability for p in preds] == pytest.approx([0.1, 0.2, 0.7])


def test_zipmap_missing_label() -> None:
    with pytest.raises(InferenceError, match="lacks"):
        classify_zipmap({"loss": [{"a": 1.0}]}, LABELS)
    with pytest.raises(InferenceError, match="no label map"):
        classify_zipmap({"x": np.zeros(3)}, LABELS)


# ------------------------------------------------------------------------------------------ YOLO decode

A = len(DEFAULT_YOLO_ANCHORS)


def grid(height: int, width: int, classes: int, objectness: float = 0.0) -> np.ndarray:
    g = np.zeros((1, A * (5 + classes), height, width), np.float64)
    g[0, 4 :: 5 + classes] = objectness
    return g


def put(g: np.ndarray, row: int, col: int, anchor: int, values: list[float]) -> None:
    per = g.shape[1] // A
    for k, v in enumerate(values):
        g[0, anchor * per + k, row, col] = v


def flat_index(row: int, col: int, anchor: int, width: int) -> int:
    return (row * width + col) * A + anchor


def test_decode_one_cell_by_hand() -> None:
    g = grid(2, 3, 2)
    put(g, 1, 2, 3, [0.7, -1.2, 0.4, -0.3, 1.5, 0.2, 1.1])
    boxes, scores = decode_yolo_grid(g, DEFAULT_YOLO_ANCHORS, activated=False)
    assert boxes.shape == (2 * 3 * A, 4) and scores.shape == (2 * 3 * A, 2)
    i = flat_index(1, 2, 3, 3)
    x = (sigmoid(0.7) + 2) / 3
    y = (sigmoid(-1.2) + 1) / 2
    w = math.exp(0.4) * 7.88 / 3
    h = math.exp(-0.3) * 3.53 / 2
    assert boxes[i] == pytest.approx([x - w / 2, y - h / 2, w, h])
    objectness = sigmoid(1.5)
    assert scores[i] == pytest.approx([p * objectness for p in softmax([0.2, 1.1])])
    # An untouched cell: centred, anchor-sized, objectness 0.5 split evenly.
    j = flat_index(0, 0, 0, 3)
    assert boxes[j] == pytest.approx([0.5 / 3 - 0.573 / 6, 0.5 / 2 - 0.677 / 4, 0.573 / 3, 0.677 / 2])
    assert scores[j] == pytest.approx([0.25, 0.25])


def test_decode_uses_the_given_anchors() -> None:
    g = grid(1, 1, 1)
    anchors = ((2.0, 4.0),) * A
    boxes, _ = decode_yolo_grid(g, anchors, activated=False)
    assert boxes[0] == pytest.approx([0.5 - 1.0, 0.5 - 2.0, 2.0, 4.0])


def test_decode_activated_grid_skips_sigmoid_and_softmax() -> None:
    g = grid(2, 2, 2)
    put(g, 0, 1, 0, [0.25, 0.75, 0.0, 0.0, 0.8, 0.3, 0.6])
    boxes, scores = decode_yolo_grid(g, DEFAULT_YOLO_ANCHORS, activated=True)
    i = flat_index(0, 1, 0, 2)
    assert boxes[i][:2] == pytest.approx([(0.25 + 1) / 2 - 0.573 / 4, 0.75 / 2 - 0.677 / 4])
    assert scores[i] == pytest.approx([0.3 * 0.8, 0.6 * 0.8])


def test_decode_rejects_bad_shapes() -> None:
    with pytest.raises(InferenceError):
        decode_yolo_grid(np.zeros((1, 34, 2, 2)), DEFAULT_YOLO_ANCHORS, activated=False)
    with pytest.raises(InferenceError):
        decode_yolo_grid(np.zeros((34, 2, 2)), DEFAULT_YOLO_ANCHORS, activated=False)
    with pytest.raises(InferenceError):
        decode_yolo_grid(np.zeros((1, 25, 2, 2)), DEFAULT_YOLO_ANCHORS, activated=False)  # 5 x (5 + 0)


def test_detect_yolo_checks_the_label_count() -> None:
    with pytest.raises(InferenceError, match="2 classes for 3 labels"):
        detect_yolo(grid(1, 1, 2), LABELS, DetectionParams(), activated=False)


# ------------------------------------------------------------------------------------------ NMS

PARAMS = DetectionParams()  # 0.10 / 0.45 / 20, the export's values


def nms(boxes: list[list[float]], scores: list[list[float]], params: DetectionParams = PARAMS) -> list[tuple]:
    picks = greedy_nms(np.array(boxes, np.float64), np.array(scores, np.float64), params)
    return [(i, c, round(p, 6)) for i, c, p in picks]


def test_nms_same_class_overlap_keeps_the_best() -> None:
    boxes = [[0.0, 0.0, 0.4, 0.4], [0.05, 0.0, 0.4, 0.4]]  # IoU 0.35/0.45 = 0.78
    assert nms(boxes, [[0.8, 0.0], [0.9, 0.0]]) == [(1, 0, 0.9)]


def test_nms_different_best_classes_both_survive() -> None:
    boxes = [[0.0, 0.0, 0.4, 0.4], [0.05, 0.0, 0.4, 0.4]]
    assert nms(boxes, [[0.9, 0.05], [0.05, 0.8]]) == [(0, 0, 0.9), (1, 1, 0.8)]


def test_nms_suppressed_box_reenters_with_next_best_class() -> None:
    # Box 1 loses class 0 to box 0, then comes back as class 1 (the export zeroes only the winning class).
    boxes = [[0.0, 0.0, 0.4, 0.4], [0.05, 0.0, 0.4, 0.4]]
    assert nms(boxes, [[0.9, 0.0], [0.6, 0.3]]) == [(0, 0, 0.9), (1, 1, 0.3)]


def test_nms_selected_box_can_be_listed_again_with_another_class() -> None:
    # The export loops at most min(20, candidates) times: two candidates -> two picks, and box 0 takes both
    # (first as class 0, then as class 1), so the disjoint box 1 (0.2) is never listed.
    boxes = [[0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]]
    assert nms(boxes, [[0.7, 0.25], [0.0, 0.2]]) == [(0, 0, 0.7), (0, 1, 0.25)]
    assert nms([[0.1, 0.1, 0.2, 0.2]], [[0.7, 0.25]]) == [(0, 0, 0.7)]


def test_nms_iou_exactly_at_threshold_is_not_suppressed() -> None:
    # overlap 18, union 40: IoU == 0.45 exactly (the division is correctly rounded) -> kept (strict >).
    boxes = [[0.0, 0.0, 29.0, 1.0], [11.0, 0.0, 29.0, 1.0]]
    assert (18.0 / 40.0) == 0.45
    assert nms(boxes, [[0.9], [0.8]]) == [(0, 0, 0.9), (1, 0, 0.8)]
    # A hair more overlap -> suppressed.
    closer = [[0.0, 0.0, 29.0, 1.0], [10.99, 0.0, 29.0, 1.0]]
    assert nms(closer, [[0.9], [0.8]]) == [(0, 0, 0.9)]
    # And with the threshold at 0.5 the same boxes survive.
    assert len(nms(closer, [[0.9], [0.8]], DetectionParams(iou_threshold=0.5))) == 2


def test_nms_threshold_is_strict() -> None:
    boxes = [[0.0, 0.0, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.2, 0.7, 0.1, 0.1]]
    assert nms(boxes, [[0.1], [0.1000001], [0.05]]) == [(1, 0, 0.1)]


def test_nms_keeps_at_most_max_detections_in_descending_order() -> None:
    boxes = [[0.03 * i, 0.0, 0.01, 0.01] for i in range(30)]  # disjoint
    probs = [0.2 + 0.01 * ((7 * i) % 30) for i in range(30)]  # a permutation of 0.20 .. 0.49
    picks = nms(boxes, [[p] for p in probs])
    assert len(picks) == 20
    assert [p for _, _, p in picks] == sorted([round(p, 6) for p in probs], reverse=True)[:20]
    assert nms(boxes, [[p] for p in probs], DetectionParams(max_detections=3))[-1][2] == round(0.47, 6)


def test_nms_with_nothing_above_threshold() -> None:
    assert nms([[0.0, 0.0, 0.1, 0.1]], [[0.05, 0.02]]) == []
    assert greedy_nms(np.zeros((0, 4)), np.zeros((0, 2)), PARAMS) == []


def test_detect_yolo_clips_boxes_to_the_image() -> None:
    g = grid(2, 2, 1, objectness=-20.0)  # nothing fires ...
    put(g, 1, 1, 4, [0.0, 0.0, 0.0, 0.0, 3.0, 0.0])  # anchor (9.77, 9.17) cells: far bigger than the image
    preds = detect_yolo(g, ("only",), PARAMS, activated=False)
    assert len(preds) == 1
    box = preds[0].bounding_box
    assert box is not None
    # centre (0.75, 0.75), half size (2.44, 2.29) -> clipped to the whole image
    assert (box.left, box.top, box.width, box.height) == pytest.approx((0.0, 0.0, 1.0, 1.0))
    assert preds[0].probability == pytest.approx(sigmoid(3.0))
    assert preds[0].tag_id == 0 and preds[0].tag_name == "only"


# ------------------------------------------------------------------------------------------ [S1] SSD

SSD_PARAMS = DetectionParams(prob_threshold=0.01, iou_threshold=0.45, max_detections=64, anchors=())


def test_ssd_converts_corners_sorts_and_clips() -> None:
    outputs = {
        "detected_boxes:0": np.array(
            [[[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 1.2, 0.9], [-0.1, -0.05, 0.3, 0.25]]]
        ),
        "detected_scores:0": np.array([[0.3, 0.9, 0.5]]),
        "detected_classes:0": np.array([[1, 0, 2]], np.int64),
    }
    preds = detect_ssd(outputs, LABELS, SSD_PARAMS)
    assert [(p.tag_name, p.tag_id, p.probability) for p in preds] == [
        ("a", 0, 0.9),
        ("c", 2, 0.5),
        ("b", 1, 0.3),
    ]
    boxes = [(b.left, b.top, b.width, b.height) for b in (p.bounding_box for p in preds) if b]
    assert boxes[0] == pytest.approx((0.5, 0.5, 0.5, 0.4))  # right edge 1.2 clipped to 1
    assert boxes[1] == pytest.approx((0.0, 0.0, 0.3, 0.25))  # left/top clipped to 0
    assert boxes[2] == pytest.approx((0.1, 0.2, 0.3, 0.4))


def test_ssd_threshold_is_strict_and_max_detections_applies() -> None:
    outputs = {
        "detected_boxes": np.tile([0.1, 0.1, 0.2, 0.2], (1, 4, 1)),
        "detected_scores": np.array([[0.01, 0.02, 0.005, 0.5]]),
        "detected_classes": np.zeros((1, 4), np.int64),
    }
    assert [p.probability for p in detect_ssd(outputs, LABELS, SSD_PARAMS)] == [0.5, 0.02]
    one = DetectionParams(prob_threshold=0.01, max_detections=1, anchors=())
    assert [p.probability for p in detect_ssd(outputs, LABELS, one)] == [0.5]


def test_ssd_class_outside_labels_is_an_error() -> None:
    outputs = {
        "detected_boxes": np.array([[[0.1, 0.1, 0.2, 0.2]]]),
        "detected_scores": np.array([[0.9]]),
        "detected_classes": np.array([[3]], np.int64),
    }
    with pytest.raises(InferenceError, match="class 3"):
        detect_ssd(outputs, LABELS, SSD_PARAMS)
    with pytest.raises(InferenceError, match="detected_scores"):
        detect_ssd({"detected_boxes": outputs["detected_boxes"]}, LABELS, SSD_PARAMS)


def test_ssd_raw_drops_background_and_converts_centres() -> None:
    outputs = {
        "raw_boxes": np.array([[[0.5, 0.5, 0.2, 0.4], [0.52, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]]),
        # column 0 is background
        "raw_probs": np.array([[[0.1, 0.8, 0.1, 0.0], [0.2, 0.7, 0.1, 0.0], [0.99, 0.005, 0.0, 0.005]]]),
    }
    params = DetectionParams(prob_threshold=0.01, iou_threshold=0.5, max_detections=64, anchors=())
    preds = detect_ssd_raw(outputs, LABELS, params)
    # Box 1 overlaps box 0 (IoU 0.82) and loses class "a"; box 0 itself comes back as "b" (0.1), which also
    # removes box 1's "b"; box 2 is background and never a candidate.
    assert [(p.tag_name, round(p.probability, 6)) for p in preds] == [("a", 0.8), ("b", 0.1)]
    box = preds[0].bounding_box
    assert box is not None
    assert (box.left, box.top, box.width, box.height) == pytest.approx((0.4, 0.3, 0.2, 0.4))
