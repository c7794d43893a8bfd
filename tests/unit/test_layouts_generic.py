"""Detector heads recognised by shape, not by brand: anchor-free [B, 4+C, N], objectness [B, N, 5+C],
end-to-end [B, K, 6] and DETR-style normalised boxes + logits, each with its recipe and thresholds from
configuration; an unknown or ambiguous layout is refused naming what was found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from layout_graphs import head_model, write_folder
from PIL import Image
from rounded_predictions import Row, rounded
from synthetic import cpu_options

from edge_runtime.engine import Predictor
from edge_runtime.errors import ModelLoadError, UnsupportedModelError
from edge_runtime.model.detectors import classwise_nms
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.spec import Postprocess, Resize
from edge_runtime.model_card import ModelCard

LABELS = ("stain", "glare")
# A 1280 x 960 picture letterboxed into 640 x 640 lies at (0, 80, 640, 480): a box centred at
# (320, 320), 64 x 48 input pixels, is (0.45, 0.45, 0.1, 0.1) of the picture.
PICTURE = (1280, 960)
CENTRE_BOX = (0.45, 0.45, 0.1, 0.1)


def predict(root: Path, size: tuple[int, int] = PICTURE, **load: Any) -> list[Row]:
    return rounded(
        Predictor.load(root, cpu_options(**load)).predict_image(Image.new("RGB", size)).predictions
    )


def anchor_free_head() -> np.ndarray:
    columns = [
        [320, 320, 64, 48, 0.3, 0.8],  # glare 0.8
        [324, 320, 64, 48, 0.1, 0.7],  # glare 0.7, IoU 0.88 with the first: suppressed
        [320, 320, 64, 48, 0.6, 0.1],  # stain 0.6 on the same place: another class, kept
        [10, 10, 5, 5, 0.1, 0.2],  # 0.2 < 0.25
    ]
    return np.asarray(columns, np.float32).T[None]  # [1, 4 + 2, 4]


def test_anchor_free_by_hand(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "af", head_model("images", [("output0", anchor_free_head())]), LABELS, "labels.txt"
    )
    spec = load_spec(root)
    assert (spec.postprocess, spec.domain) == (Postprocess.ANCHOR_FREE, "generic ONNX: anchor-free detector")
    assert (spec.preprocess.resize, spec.preprocess.mean) == (Resize.LETTERBOX, (0.0, 0.0, 0.0))
    assert (spec.detection.prob_threshold, spec.detection.iou_threshold, spec.detection.max_detections) == (
        0.25,
        0.45,
        300,
    )
    assert predict(root) == [("glare", 1, 0.8, CENTRE_BOX), ("stain", 0, 0.6, CENTRE_BOX)]
    # the generic letterbox scales up: 320 x 240 fills the same 640 x 480
    assert predict(root, (320, 240)) == [("glare", 1, 0.8, CENTRE_BOX), ("stain", 0, 0.6, CENTRE_BOX)]


def test_thresholds_and_recipe_from_configuration(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "af", head_model("images", [("output0", anchor_free_head())]), LABELS, "labels.txt"
    )
    assert predict(root, score_threshold=0.65) == [("glare", 1, 0.8, CENTRE_BOX)]
    assert [p[2] for p in predict(root, iou_threshold=0.9)] == [0.8, 0.7, 0.6]
    assert len(predict(root, max_detections=1)) == 1
    # stretched, the input is the picture: (320, 320, 64, 48) is (0.45, 0.4625, 0.1, 0.075) of it
    assert predict(root, resize=Resize.STRETCH)[0] == ("glare", 1, 0.8, (0.45, 0.4625, 0.1, 0.075))
    with pytest.raises(
        ModelLoadError, match=r"model\.resize container cannot be used with the anchor-free layout"
    ):
        load_spec(root, LoadOptions(resize=Resize.SHORTER_SIDE_TO_INPUT))


def test_objectness_head_with_another_input_name_is_generic(tmp_path: Path) -> None:
    rows = np.array([[[320, 320, 64, 48, 0.9, 0.2, 0.8]]], np.float32)
    root = write_folder(tmp_path / "ob", head_model("images", [("output0", rows)]), LABELS, "labels.txt")
    spec = load_spec(root)
    assert (spec.postprocess, spec.preprocess.resize) == (Postprocess.OBJECTNESS, Resize.LETTERBOX)
    assert predict(root) == [("glare", 1, 0.72, CENTRE_BOX)]


def test_end_to_end_by_hand(tmp_path: Path) -> None:
    rows = np.array(
        [[[288, 296, 352, 344, 0.9, 1], [290, 296, 354, 344, 0.8, 1], [0, 0, 10, 10, 0.1, 0]]], np.float32
    )
    labels = ("stain", "glare", "scratch")  # three labels: only end-to-end fits [1, 3, 6]
    root = write_folder(tmp_path / "e2e", head_model("images", [("output0", rows)]), labels, "labels.txt")
    assert load_spec(root).postprocess is Postprocess.END_TO_END
    got = predict(root)
    assert got[0] == ("glare", 1, 0.9, CENTRE_BOX)
    assert [p[2] for p in got] == [0.9, 0.8]  # no NMS: the graph did it; 0.1 is under the threshold


def test_one_class_end_to_end_and_objectness_are_told_apart_by_configuration(tmp_path: Path) -> None:
    rows = np.array([[[288, 296, 352, 344, 0.9, 0]]], np.float32)
    root = write_folder(tmp_path / "one", head_model("images", [("output0", rows)]), ("stain",), "labels.txt")
    with pytest.raises(
        UnsupportedModelError, match=r"fit more than one layout \(objectness \| end-to-end\).*model.layout"
    ):
        load_spec(root)
    assert predict(root, layout=Postprocess.END_TO_END) == [("stain", 0, 0.9, CENTRE_BOX)]
    with pytest.raises(
        UnsupportedModelError,
        match=r"model\.layout detr does not fit .*layouts that fit: objectness, end-to-end",
    ):
        load_spec(root, LoadOptions(layout=Postprocess.DETR))


def sigmoid(x: float) -> float:
    return round(float(1 / (1 + np.exp(-x))), 6)


def detr_heads(background: bool) -> list[tuple[str, np.ndarray]]:
    boxes = np.array([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]], np.float32)
    logits = np.array([[[2.0, -3.0], [-4.0, -4.0], [-1.0, 1.0]]], np.float32)
    if background:
        logits = np.concatenate([np.full((1, 3, 1), 5.0, np.float32), logits], axis=2)
    return [("dets", boxes), ("labels", logits)]


@pytest.mark.parametrize("background", [False, True])
def test_detr_by_hand(tmp_path: Path, background: bool) -> None:
    root = write_folder(
        tmp_path / "detr", head_model("input", detr_heads(background), (560, 560)), LABELS, "labels.txt"
    )
    spec = load_spec(root)
    assert (spec.postprocess, spec.decoder_outputs) == (Postprocess.DETR, ("dets", "labels"))
    assert (spec.preprocess.resize, spec.preprocess.mean) == (Resize.STRETCH, (0.485, 0.456, 0.406))
    assert predict(root) == [
        ("stain", 0, sigmoid(2.0), (0.4, 0.4, 0.2, 0.2)),  # stretched: input fractions are picture fractions
        ("glare", 1, sigmoid(1.0), (0.15, 0.15, 0.1, 0.1)),
    ]  # the second query's best, sigmoid(-4) = 0.018, is under 0.25


def test_detr_letterboxed_boxes_come_back_to_the_picture(tmp_path: Path) -> None:
    heads = [
        ("dets", np.array([[[0.5, 0.5, 0.1, 0.075]]], np.float32)),
        ("labels", np.array([[[3.0, -3.0]]], np.float32)),
    ]
    root = write_folder(tmp_path / "detr", head_model("input", heads), LABELS, "labels.txt")
    assert predict(root, resize=Resize.LETTERBOX)[0][3] == CENTRE_BOX


def test_nhwc_input(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "af",
        head_model("images", [("output0", anchor_free_head())], nhwc=True),
        LABELS,
        "labels.txt",
    )
    assert load_spec(root).preprocess.nchw is False
    assert predict(root)[0] == ("glare", 1, 0.8, CENTRE_BOX)


def test_unknown_layout_is_refused_naming_what_was_found(tmp_path: Path) -> None:
    heads = [("a", np.zeros((1, 10), np.float32)), ("b", np.zeros((1, 5), np.float32))]
    root = write_folder(tmp_path / "x", head_model("images", heads), LABELS, "labels.txt")
    with pytest.raises(UnsupportedModelError) as info:
        load_spec(root)
    assert info.value.path == str(root / "model.onnx")
    assert info.value.problem == (
        "unknown output layout (inputs 'images' [1, 3, 640, 640] float32; outputs 'a' [1, 10] float32, "
        "'b' [1, 5] float32; files labels.txt, model.onnx); known layouts: objectness, anchor-free, "
        "end-to-end, detr"
    )


def test_label_count_no_shape_allows_names_the_labels_file(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "af",
        head_model("images", [("output0", np.zeros((1, 7, 50), np.float32))]),
        LABELS,
        "labels.txt",
    )
    with pytest.raises(
        ModelLoadError,
        match="2 labels, but the model's outputs fit objectness with 45 classes; anchor-free with 3 classes",
    ) as info:
        load_spec(root)
    assert info.value.path == str(root / "labels.txt")


def test_letterbox_is_refused_for_custom_vision_exports(classifier_export: Path) -> None:
    with pytest.raises(ModelLoadError, match="letterbox is for the detectors that undo it"):
        load_spec(classifier_export, LoadOptions(resize=Resize.LETTERBOX))


def test_classwise_nms_by_hand() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    # box 1 overlaps box 0 (IoU 90/110 = 0.82) in its class; box 2 is of another class
    assert classwise_nms(boxes, scores, classes, 0.5, 10) == [0, 2, 3]
    assert classwise_nms(boxes, scores, classes, 0.85, 10) == [0, 1, 2, 3]
    assert classwise_nms(boxes, scores, classes, 0.5, 2) == [0, 2]


def test_the_model_card(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "af", head_model("images", [("output0", anchor_free_head())]), LABELS, "labels.txt"
    )
    card = ModelCard.of(Predictor.load(root, cpu_options())).to_dict()
    assert (card["domain"], card["postprocess"]) == ("generic ONNX: anchor-free detector", "anchor-free")
    assert card["decoder"] == (
        "[B, 4+C, N] cx,cy,w,h in input pixels, best class score, class-wise NMS; reads output0"
    )
    assert str(card["preprocessing"]).startswith(
        "letterbox (target 640x640, input 640x640, cv2-linear), RGB 0..1"
    )


def test_model_layout_is_noted_unused_for_custom_vision_exports(classifier_export: Path) -> None:
    spec = load_spec(classifier_export, LoadOptions(layout=Postprocess.ANCHOR_FREE))
    assert spec.postprocess is Postprocess.MULTICLASS
    assert "model.layout anchor-free is not used: a Custom Vision export says its own" in spec.notes
